"""Atomic files and folders, and the checkpoints of a run folder, read as data: what every trainer shares.

Used by :class:`agents.core.run.Run` (every agent), by the reward-model trainer (:mod:`textenv.rm.train`) and by
the world cache (:mod:`textenv.world.cache`), so it lives in ``textenv``, which all of them may import.

* :func:`atomic_write` writes a file into ``<name>.tmp`` and renames it over ``<name>``: a reader sees the old
  file or the new one, never half of one. :func:`replace_folder` does the same for a folder, in two renames
  (the old folder aside, then the new one into place).
* :class:`Checkpoints`: a checkpoint ``out/checkpoint/`` is written into ``out/checkpoint.tmp/``; :func:`commit`
  writes ``complete.json`` into it last (the size of every file) and swaps it in with :func:`replace_folder`
  (the old one is ``checkpoint.old/`` between the two renames). :func:`recover` makes the newest *whole*
  folder of the three the checkpoint, so a kill at any moment loses at most the checkpoint being written.
  :func:`load_state` reads ``trainer_state.pt`` with ``torch.load(weights_only=True)``: a checkpoint is data,
  never code, and one that needs pickle (an earlier textenv's, or a crafted file) is refused, not run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

CHECKPOINT = "checkpoint"
STATE = "trainer_state.pt"
MARKER = "complete.json"
"""Written last into a checkpoint folder: ``{"format", "progress", "files": {relative path: size in bytes}, ...}``."""
WAY_OUT = "start over with resume=False (--no-resume), or delete the folder"
"""What a refused checkpoint's message tells the user to do."""
_NDARRAY = "__ndarray__"


# ---------------------------------------------------------------- atomic files and folders
@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open ``<path>.tmp`` for writing and rename it over ``path`` when the block ends without error (the
    temporary file is deleted otherwise): ``path`` is always the old file or the whole new one.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "metrics.json"
    >>> with atomic_write(path) as f:
    ...     _ = f.write("{}")
    >>> path.read_text(), sorted(p.name for p in path.parent.iterdir())
    ('{}', ['metrics.json'])
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_folder(new: Path, target: Path, old: Path) -> Path:
    """Put the finished folder ``new`` in the place of ``target``, keeping the old ``target`` as ``old`` between
    the two renames (then deleting it). A kill between the renames leaves no ``target`` but two whole folders,
    ``new`` and ``old``, so the caller's recovery (:func:`recover`, the world cache's) takes the newest one.
    Returns ``target``."""
    remove(old)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    remove(old)
    return target


def write_csv(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write ``rows`` as CSV atomically; the columns are every key of every row, in order of appearance."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def first_nonfinite(tensors, prefix: str = "") -> str | None:
    """The name of the first floating-point tensor holding NaN or inf in ``tensors`` (a module's ``state_dict``,
    an optimizer's, or nested dicts/lists/tuples of them), else None.

    >>> first_nonfinite({"optimizer": {"state": {0: {"exp_avg": torch.tensor([1.0, float("nan")])}}}})
    'optimizer.state.0.exp_avg'
    >>> first_nonfinite({"w": torch.ones(2), "step": torch.tensor(3)}) is None
    True
    """
    if isinstance(tensors, torch.Tensor):
        if tensors.is_floating_point() or tensors.is_complex():
            return None if bool(torch.isfinite(tensors).all()) else (prefix or "tensor")
        return None
    if isinstance(tensors, dict):
        items = tensors.items()
    elif isinstance(tensors, (list, tuple)):
        items = enumerate(tensors)
    else:
        return None
    for key, value in items:
        bad = first_nonfinite(value, f"{prefix}.{key}" if prefix else str(key))
        if bad is not None:
            return bad
    return None


def folders(out: Path) -> tuple[Path, Path, Path]:
    """The checkpoint being written, the checkpoint, the one it replaces: newest first."""
    return out / (CHECKPOINT + ".tmp"), out / CHECKPOINT, out / (CHECKPOINT + ".old")


def remove(folder: Path) -> None:
    """Delete a folder, a checkpoint's completeness marker first (a half-deleted folder is never taken as whole)."""
    (folder / MARKER).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def read_marker(folder: Path) -> dict | None:
    """The completeness marker of ``folder``, or None when it has none (incomplete, or written before markers)."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("files"), dict) else None


def commit(out: Path, meta: dict[str, Any]) -> Path:
    """Seal ``out/checkpoint.tmp`` (its files written) with its marker (``meta`` + every file's size) and rename it
    over ``out/checkpoint``; returns the checkpoint folder."""
    tmp, target, old = folders(out)
    files = {f.relative_to(tmp).as_posix(): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
    (tmp / MARKER).write_text(json.dumps({**meta, "files": files}) + "\n")
    return replace_folder(tmp, target, old)


def recover(out: Path) -> Path | None:
    """Make the newest whole checkpoint (``.tmp`` > ``checkpoint`` > ``.old``: a save interrupted between its two
    renames leaves its new checkpoint in ``.tmp``) the ``checkpoint`` folder and drop the others; None when none
    is whole."""
    tmp, target, old = folders(out)
    for folder in (tmp, target, old):
        if read_marker(folder) is None:
            continue
        if folder != target:
            remove(target)
            os.replace(folder, target)
        remove(tmp)
        remove(old)
        return target
    return None


def load_state(checkpoint: Path, format: int, way_out: str) -> dict:
    """The trainer state of the whole ``checkpoint`` folder (see :func:`recover`), read as data
    (``weights_only=True``). A folder without a marker, a missing or truncated file, a state that would need
    pickle, or one of another ``format`` raises ``ValueError`` (``FileNotFoundError`` for a missing file) naming
    the file and ``way_out``."""
    marker = read_marker(checkpoint)
    if marker is None:
        raise ValueError(f"checkpoint {checkpoint} has no {MARKER}: it was written by an earlier textenv (checkpoint "
                         f"format 1), whose pickled {STATE} is not loaded (unpickling can run code), or it is "
                         f"incomplete; {way_out}")
    for name, size in marker["files"].items():
        path = checkpoint / name
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file {path} is missing: the checkpoint is incomplete; {way_out}")
        if path.stat().st_size != size:
            raise ValueError(f"checkpoint file {path} is truncated or corrupted ({path.stat().st_size} bytes, "
                             f"{size} when written); {way_out}")
    path = checkpoint / STATE
    try:
        state = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path} holds objects other than tensors, numbers and containers (a pickled trainer state "
                         f"of an earlier textenv, or a crafted file); it is not loaded, as unpickling can run code; "
                         f"{way_out}") from error
    except Exception as error:  # a damaged zip archive: torch raises RuntimeError, EOFError, ...
        raise ValueError(f"{path} cannot be read ({type(error).__name__}: {error}); {way_out}") from error
    if not isinstance(state, dict) or state.get("format") != format:
        raise ValueError(f"{path} is not a textenv trainer state of format {format}; {way_out}")
    return state


# ---------------------------------------------------------------- trainer states as data
def to_safe(obj, where: str = "state"):
    """``obj`` in a form ``torch.load(..., weights_only=True)`` reads back: numpy arrays become
    ``{"__ndarray__": tensor}``, numpy scalars Python numbers; tensors, str, int, float, bool, None, dicts,
    lists and tuples stay. Anything else raises ``TypeError`` naming where it is (it would need pickle).

    >>> to_safe({"ret": np.array([1.5, 2.0]), "n": np.int64(3)})
    {'ret': {'__ndarray__': tensor([1.5000, 2.0000], dtype=torch.float64)}, 'n': 3}
    """
    if isinstance(obj, (torch.Tensor, str, bool, int, float, type(None))):
        return obj
    if isinstance(obj, np.ndarray):
        try:
            return {_NDARRAY: torch.from_numpy(np.array(obj, copy=True))}
        except TypeError as error:
            raise TypeError(f"{where}: numpy array of dtype {obj.dtype} has no tensor equivalent; a trainer state "
                            f"holds tensors, numbers, strings and plain containers only") from error
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_safe(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [to_safe(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if type(obj) is tuple else items
    raise TypeError(f"{where}: a {type(obj).__name__} cannot be stored in a trainer state (it would need pickle, "
                    f"which runs code on load); store tensors, numbers, strings and plain containers")


def from_safe(obj):
    """Inverse of :func:`to_safe`: ``{"__ndarray__": tensor}`` back to the numpy array."""
    if isinstance(obj, dict):
        if len(obj) == 1 and _NDARRAY in obj:
            return obj[_NDARRAY].numpy()
        return {k: from_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_safe(v) for v in obj)
    return obj


def _version() -> str:
    from textenv import __version__

    return __version__


class Checkpoints:
    """The checkpoints of one run folder ``path``: save atomically, refuse NaN, recover and check on load.

    Args:
        path: the run folder; the checkpoint is ``path/checkpoint``.
        config: the fields a resumed run must share with the interrupted one (JSON-able); stored in every
            trainer state and compared on :meth:`load`.
        format: the trainer-state format; a checkpoint of another format is refused.
        defaults: the default of each config field; a field that a checkpoint written before it existed does not
            hold is taken at its default (so adding a field with a default keeps older runs resumable).
    """

    def __init__(self, path: str | os.PathLike, config: dict[str, Any], format: int,
                 defaults: dict[str, Any] | None = None):
        self.path = Path(path)
        self.config = config
        self.format = format
        self.defaults = defaults or {}

    @property
    def dir(self) -> Path:
        return self.path / CHECKPOINT

    def last_good(self) -> str:
        """One sentence naming the last whole checkpoint (for divergence messages)."""
        marker = read_marker(self.dir)
        if marker is None:
            return f"No checkpoint has been written to {self.dir} yet."
        return f"The last good checkpoint, {self.dir} ({marker.get('progress')}), is untouched."

    def clear(self) -> None:
        """Remove the checkpoint (and any ``checkpoint.tmp``/``checkpoint.old``): a fresh run has started."""
        for folder in folders(self.path):
            remove(folder)

    def save(self, write: Callable[[Path], None], state: dict[str, Any], progress: str,
             tensors: dict[str, Any], diverged: type[Exception] = FloatingPointError, lr=None,
             meta: dict[str, Any] | None = None) -> Path:
        """Write a checkpoint: ``write(folder)`` writes the model files, then ``state`` (with the config, the
        format and the package version) goes to ``trainer_state.pt`` and the folder is committed; returns it.

        Raises ``diverged`` (writing nothing) when a floating tensor of ``tensors`` (``{name: state_dict, ...}``:
        the weights, the optimizer's moments) holds NaN/inf, naming it, ``progress`` (``"iteration 4"``), ``lr``
        and the last good checkpoint; ``TypeError`` when ``state`` holds an object that would need pickle.
        """
        bad = first_nonfinite(tensors)
        if bad is not None:
            hint = f" (lr={lr}: lower it)" if lr is not None else ""
            raise diverged(f"{bad} holds NaN/inf at {progress}: training diverged{hint}; this state was not "
                           f"checkpointed. {self.last_good()}")
        full = to_safe({**state, "version": _version(), "format": self.format, "config": self.config})
        tmp = folders(self.path)[0]
        remove(tmp)
        tmp.mkdir(parents=True)
        write(tmp)
        torch.save(full, tmp / STATE)
        return commit(self.path, {"format": self.format, "progress": progress, **(meta or {})})

    def load(self) -> dict[str, Any] | None:
        """The saved trainer state (numpy arrays restored), or None when there is no checkpoint.

        A save interrupted between its renames is recovered (the newest whole checkpoint is taken). Raises
        ``ValueError`` if the checkpoint was written with a different config (naming the fields and both
        values), is truncated, or is not a weights-only trainer state of this format (refused, never unpickled),
        and ``FileNotFoundError`` if it is incomplete; each message names the file and :data:`WAY_OUT`.
        """
        target = recover(self.path)
        if target is None:
            target = self.dir
            if not target.exists():
                return None
            if not (target / STATE).is_file():
                raise FileNotFoundError(f"checkpoint {target} has no {STATE}; it is incomplete: {WAY_OUT}")
        state = from_safe(load_state(target, self.format, WAY_OUT))
        saved, now = {**{k: v for k, v in self.defaults.items() if k in self.config}, **state["config"]}, self.config
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if diff:
            changes = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
            raise ValueError(f"the checkpoint in {target} was written by a run with a different config ({changes}); "
                             f"use a new run directory, or resume=False (--no-resume) to start over")
        return state
