"""What every training run shares: its directory, metrics (CSV and TensorBoard), atomic checkpoints, resume.

A run directory holds ``config.json``, ``metrics.csv`` (one row per iteration), ``tb/`` (TensorBoard event
files), and ``checkpoint/``: the policy in Hugging Face format (or a ``policy.pt``), ``trainer_state.pt``
(optimizer, iteration, RNG states, KL-controller state, metrics so far, package version) and the config.
A checkpoint is written into ``checkpoint.tmp/`` and renamed over the old one, so an interruption at any
moment leaves the previous checkpoint whole. Resuming refuses a changed config and names the fields that
differ.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT = "checkpoint"
STATE = "trainer_state.pt"


def package_version() -> str:
    from textenv import __version__

    return __version__


def config_dict(config) -> dict[str, Any]:
    """The config as a JSON-able dict (what ``config.json`` holds)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def check_range(name: str, value, low=None, high=None, low_open: bool = False, integer: bool = False) -> None:
    """Raise ``ValueError`` naming ``name``, ``value`` and the allowed range unless ``value`` lies in it.

    >>> check_range("lr", -1.0, 0, None, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: lr=-1.0 is out of range; expected a number > 0
    """
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        parts = [f"> {low}" if low_open else f">= {low}"] if low is not None else []
        parts += [f"<= {high}"] if high is not None else []
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name}={value!r} is out of range; expected {kind} {' and '.join(parts)}".rstrip())


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class Run:
    """A run directory: metrics rows to CSV and TensorBoard, checkpoints, resume.

    Args:
        path: the run directory (created).
        config: the run's config dataclass; saved as ``config.json`` and compared on resume.
        ignore: config fields that may change between an interrupted run and its resumption (e.g. where output
            goes, the thread count, the number of iterations to run to).
    """

    def __init__(self, path: str | os.PathLike, config, ignore: tuple[str, ...] = ()):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.ignore = ignore
        self.rows: list[dict[str, float]] = []
        self._tb = None

    def start(self, resume: bool) -> dict[str, Any] | None:
        """Begin the run: the checkpoint's state when resuming one (see :meth:`load`), else None after removing
        any old checkpoint. ``config.json`` is written only once the config is accepted."""
        if not resume:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        state = self.load() if resume else None
        (self.path / "config.json").write_text(json.dumps(config_dict(self.config), indent=2) + "\n")
        return state

    # ---------------------------------------------------------------- metrics
    def log(self, row: dict[str, float]) -> None:
        """Append a metrics row (``iteration`` is the step axis) to memory, ``metrics.csv`` and TensorBoard."""
        self.rows.append(row)
        self._write_csv()
        writer = self._writer()
        if writer is not None:
            step = int(row.get("iteration", len(self.rows)))
            for key, value in row.items():
                if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                    writer.add_scalar(key, value, step)
            writer.flush()

    def _write_csv(self) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        tmp = self.path / "metrics.csv.tmp"
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path / "metrics.csv")

    def _writer(self):
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a dependency; a broken install still trains, with CSV only
                self._tb = False
                return None
            self._tb = SummaryWriter(str(self.path / "tb"))
        return self._tb or None

    def close(self) -> None:
        if self._tb:
            self._tb.close()

    # ---------------------------------------------------------------- checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT

    def save(self, policy, state: dict[str, Any]) -> Path:
        """Write ``policy`` (``save_pretrained`` if it has one, else its ``state_dict``) and ``state`` atomically."""
        target, tmp, old = self.checkpoint_dir, self.path / (CHECKPOINT + ".tmp"), self.path / (CHECKPOINT + ".old")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        if hasattr(policy, "save_pretrained"):
            policy.save_pretrained(tmp / "policy")
        else:
            torch.save(policy.state_dict(), tmp / "policy.pt")
        full = {**state, "rows": self.rows, "rng": rng_state(), "version": package_version(),
                "config": self._comparable(config_dict(self.config))}
        torch.save(full, tmp / STATE)
        (tmp / "config.json").write_text(json.dumps(config_dict(self.config), indent=2) + "\n")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
        return target

    def _comparable(self, config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in self.ignore}

    def load(self) -> dict[str, Any] | None:
        """The saved trainer state (RNG restored, metrics rows reloaded), or None when there is no checkpoint.

        Raises ``ValueError`` if the checkpoint was written with a different config, naming the fields, and
        ``FileNotFoundError`` if the checkpoint folder is incomplete.
        """
        target = self.checkpoint_dir
        if not target.exists():
            return None
        if not (target / STATE).is_file():
            raise FileNotFoundError(
                f"checkpoint {target} has no {STATE}; it is incomplete. Delete it to start over, or pass resume=False"
            )
        state = torch.load(target / STATE, weights_only=False)
        saved, now = state["config"], self._comparable(config_dict(self.config))
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if diff:
            changes = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
            raise ValueError(
                f"the checkpoint in {target} was written by a run with a different config ({changes}); use a new "
                f"run directory, or resume=False to start over"
            )
        set_rng_state(state["rng"])
        self.rows = list(state["rows"])
        self._write_csv()
        return state

    def policy_path(self) -> Path:
        """Where the checkpoint's policy is (``checkpoint/policy``), checking it is there."""
        path = self.checkpoint_dir / "policy"
        if not path.exists() and not (self.checkpoint_dir / "policy.pt").exists():
            raise FileNotFoundError(f"checkpoint {self.checkpoint_dir} has no policy; it is incomplete")
        return path
