"""Building cached artifacts once: under a file lock, into a temporary folder renamed into place, with checksums.

Used by every stage of the built-in world, so an interrupted or concurrent build never leaves a half-written
folder behind, and a second process waiting on the lock finds the finished one.

Each finished folder holds ``checksums.json``: the size and sha256 of every file the build wrote. Reading a
folder checks cheaply that every file is there with its size (no lock is taken, so a finished cache may be
read-only); ``textenv build-world`` checks the sha256 too. A damaged folder is rebuilt under the lock, or, where
it cannot be (a read-only cache), reported with the way out. A folder written before checksums were recorded is
accepted after a structural check (JSON files parse, ``.safetensors`` sizes match their headers, a model folder
has weights, a tokenizer its vocabulary), on every read; ``textenv build-world`` records its checksums once.

Temporary folders ``<name>.tmp-*`` are made only by the holder of ``<name>.lock``, so one found by the holder
of the lock belongs to a build that was killed: it is deleted. A rebuild swaps the new folder in with
:func:`textenv.checkpoint.replace_folder` (the old one aside as ``<name>.tmp-old`` between the two renames); a
build killed between those renames leaves no ``<name>`` but whole temporary folders, and the next build puts
the newest whole one (its marker and checksums in place) back instead of building again.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from textenv.checkpoint import atomic_write, replace_folder

CHECKSUMS = "checksums.json"
"""Name of the checksum manifest written into every finished folder."""


class CacheError(RuntimeError):
    """A cached folder is damaged (or cannot be built) and could not be rebuilt here; the message says the way out."""


def build_once(target: Path, marker: str, fill: Callable[[Path], None], force: bool = False,
               announce: str | None = None) -> Path:
    """``target``, built by ``fill(tmp_dir)`` unless ``target / marker`` exists and passes :func:`check` (or ``force``).

    ``announce``: one line printed to stderr, with where the result is cached, when a build really starts
    (before its progress bars): what is built, why, and about how long it takes.

    A finished, undamaged ``target`` is returned without taking the lock. Otherwise the lock ``<target>.lock``
    is taken, temporary folders of killed builds are deleted, and ``target`` is (re)built with its checksums.
    Raises :class:`CacheError` if the folder must be built but the lock cannot be taken (a read-only cache).
    """
    problem = None
    if not force and (target / marker).exists():
        problem = check(target)
        if problem is None:
            _clean_stale_if_free(target)
            return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(target) + ".lock")
        lock.acquire()
    except OSError as error:
        if problem is not None:
            raise CacheError(
                f"the cached {target} is damaged ({problem}) and cannot be rebuilt here ({error}); "
                f"run `textenv build-world --force` where the cache is writable, or delete {target}"
            ) from error
        raise CacheError(
            f"cannot build {target}: its folder is not writable ({error}); "
            "set TEXTENV_CACHE to a writable folder, or build it there first with `textenv build-world`"
        ) from error
    try:
        _adopt_whole(target, marker)
        _clean_stale(target)
        if not force and (target / marker).exists():
            problem = check(target)
            if problem is None:
                return target
            warnings.warn(f"the cached {target} is damaged ({problem}); rebuilding it", RuntimeWarning, stacklevel=2)
        if announce:
            print(f"{announce}; cached in {target}", file=sys.stderr, flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            fill(tmp)
            write_checksums(tmp)
            replace_folder(tmp, target, _aside(target))  # the old folder moved aside first: never seen half-deleted
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.release()
    return target


def check(target: Path, full: bool = False) -> str | None:
    """What is wrong with the finished folder ``target`` (one line), or ``None`` if nothing is.

    With ``checksums.json``: every listed file must exist with its recorded size, and with ``full`` its sha256.
    Without it (written by an older textenv): the structural check of the module docstring.
    """
    if not target.is_dir():
        return f"{target} is missing"
    manifest = target / CHECKSUMS
    if not manifest.exists():
        return _structure_problem(target)
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{CHECKSUMS} is unreadable ({error!r})"
    for name, expected in files.items():
        path = target / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != expected["bytes"]:
            return f"{name} is {size} bytes, expected {expected['bytes']}"
        try:
            if full and sha256_file(path) != expected["sha256"]:
                return f"{name} does not match its sha256 in {CHECKSUMS}"
        except OSError as error:
            return f"{name} is unreadable ({error.strerror})"
    return None


def write_checksums(folder: Path) -> None:
    """Record the size and sha256 of every file of ``folder`` (nested stages excluded) in ``folder/checksums.json``."""
    files = {path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
             for path in _stage_files(folder)}
    with atomic_write(folder / CHECKSUMS) as f:
        f.write(json.dumps({"format": 1, "files": files}, indent=1, sort_keys=True) + "\n")


def record_checksums(target: Path) -> bool:
    """Write ``checksums.json`` into a finished folder written by an older textenv; ``True`` if written.

    Takes the lock; ``False`` where the folder already has checksums, fails the structural check, or is not
    writable (it stays accepted on the structural check alone).
    """
    if (target / CHECKSUMS).exists() or _structure_problem(target) is not None:
        return False
    try:
        with FileLock(str(target) + ".lock"):
            if (target / CHECKSUMS).exists() or _structure_problem(target) is not None:
                return False
            write_checksums(target)
    except OSError:
        return False
    return True


def _stage_files(folder: Path) -> Iterator[Path]:
    """Files of ``folder``, skipping locks, temporary folders and nested stages (a folder beside its ``.lock``,
    or with its own ``checksums.json``: a proxy inside its world)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if ".tmp-" not in d and not (here / f"{d}.lock").exists()
                             and not (here / d / CHECKSUMS).exists())
        for name in sorted(filenames):
            if name.endswith(".lock") or ".tmp-" in name or (here == folder and name in (CHECKSUMS, CHECKSUMS + ".tmp")):
                continue
            yield here / name


def _structure_problem(target: Path) -> str | None:
    """Cheap sanity check of a folder without checksums: see the module docstring."""
    try:
        return _structure_problem_or_raise(target)
    except OSError as error:
        return f"{os.path.relpath(error.filename or target, target)} is unreadable ({error.strerror})"


def _structure_problem_or_raise(target: Path) -> str | None:
    files = list(_stage_files(target))
    names = {path.relative_to(target).as_posix() for path in files}
    for path in files:
        name = path.relative_to(target).as_posix()
        size = path.stat().st_size
        if path.suffix in (".json", ".jsonl", ".safetensors") and size == 0:
            return f"{name} is empty"
        if path.suffix == ".json":
            try:
                json.loads(path.read_bytes())
            except ValueError:
                return f"{name} is not valid JSON (truncated?)"
        elif path.suffix == ".jsonl":
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    return f"{name} does not end in a newline (truncated?)"
        elif path.suffix == ".safetensors":
            expected = _safetensors_size(path)
            if expected != size:
                return f"{name} is {size} bytes, its header says {expected} (truncated?)"
        parent = name.rpartition("/")[0] + "/" if "/" in name else ""
        if path.name == "config.json" and not {parent + w for w in ("model.safetensors", "pytorch_model.bin",
                                                                    "model.safetensors.index.json")} & names:
            return f"{parent or './'} has config.json but no model weights"
        if path.name == "tokenizer_config.json" and not {parent + t for t in ("tokenizer.json", "vocab.json")} & names:
            return f"{parent or './'} has tokenizer_config.json but no tokenizer.json or vocab.json"
    return None


def _safetensors_size(path: Path) -> int | None:
    """The size a ``.safetensors`` file must have by its header, ``None`` if the header is unreadable."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        (n,) = struct.unpack("<Q", head)
        try:
            header = json.loads(f.read(n))
            ends = [t["data_offsets"][1] for key, t in header.items() if key != "__metadata__"]
        except (ValueError, AttributeError, KeyError, TypeError, IndexError):
            return None
    return 8 + n + max(ends, default=0)


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, hex (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _aside(target: Path) -> Path:
    """Where the old ``target`` waits while a rebuild renames the new one into place."""
    return target.with_name(target.name + ".tmp-old")


def _adopt_whole(target: Path, marker: str) -> None:
    """With the lock held and no ``target``: a build killed between the two renames of its swap left the new
    folder and the old one whole; make the new one (else the old one) ``target`` again."""
    if target.exists():
        return
    aside = _aside(target)
    for folder in sorted(_stale(target), key=lambda f: f == aside):  # the new folder first, the old one last
        if (folder / marker).exists() and (folder / CHECKSUMS).exists() and check(folder) is None:
            os.replace(folder, target)
            return


def _stale(target: Path) -> list[Path]:
    return list(target.parent.glob(glob.escape(target.name) + ".tmp-*"))


def _clean_stale(target: Path) -> None:
    """Delete ``<target>.tmp-*`` (call with the lock held: only its holder makes them, so these are left by killed builds)."""
    for path in _stale(target):
        shutil.rmtree(path, ignore_errors=True)


def _clean_stale_if_free(target: Path) -> None:
    """:func:`_clean_stale` if there is anything to clean and the lock is free now (never waits, never fails)."""
    if not _stale(target):
        return
    try:
        with FileLock(str(target) + ".lock", timeout=0):
            _clean_stale(target)
    except (Timeout, OSError):
        pass  # a build is running (its temporary folder is live) or the folder is read-only


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch threads (float sums, and so trained weights, depend on the count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
