"""Building cached artifacts once: under a file lock, into a temporary folder renamed into place.

Used by every stage of the built-in world, so an interrupted or concurrent build never leaves a half-written
folder behind, and a second process waiting on the lock finds the finished one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock


def build_once(target: Path, marker: str, fill: Callable[[Path], None], force: bool = False) -> Path:
    """``target``, built by ``fill(tmp_dir)`` unless ``target / marker`` exists (or ``force``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / marker).exists() and not force:
            return target
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            fill(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch threads (float sums, and so trained weights, depend on the count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
