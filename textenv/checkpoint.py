"""Atomic checkpoint folders, read as data: what every trainer's checkpoints share.

Used by :class:`agents.core.run.Run` (every agent) and by the reward-model trainer (:mod:`textenv.rm.train`), so it
lives in ``textenv``, which both may import. A checkpoint ``out/checkpoint/`` is written into
``out/checkpoint.tmp/``; :func:`commit` writes ``complete.json`` into it last (the size of every file) and
renames it over the old one (kept as ``checkpoint.old/`` between the two renames). :func:`recover` makes the
newest *whole* folder of the three the checkpoint, so a kill at any moment loses at most the checkpoint being
written. :func:`load_state` reads ``trainer_state.pt`` with ``torch.load(weights_only=True)``: a checkpoint is
data, never code, and one that needs pickle (an earlier textenv's, or a crafted file) is refused, not run.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint"
STATE = "trainer_state.pt"
MARKER = "complete.json"
"""Written last into a checkpoint folder: ``{"format", "files": {relative path: size in bytes}, ...}``."""


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
    """Delete a checkpoint folder, its completeness marker first (a half-deleted folder is never taken as whole)."""
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
    remove(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    remove(old)
    return target


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
