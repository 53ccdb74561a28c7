"""What every training run shares: its directory, metrics (CSV and TensorBoard), atomic checkpoints, resume.

The checkpoint mechanics (atomic commit, recovery, the config check, the weights-only trainer state) are
:class:`textenv.checkpoint.Checkpoints`, which the reward-model trainer uses too; this module adds the agents'
side: ``config.json``, TensorBoard, RNG states and the policy.

A run directory holds ``config.json``, ``metrics.csv`` (one row per iteration), ``tb/`` (TensorBoard event
files), and ``checkpoint/``: the policy in Hugging Face format (or a ``policy.pt``), ``trainer_state.pt``
(optimizer, iteration, RNG states, KL-controller state, metrics so far, package version), the config, and
``complete.json``, written last: the size of every file, so a whole checkpoint is told from a partial or
truncated one. A checkpoint is written into ``checkpoint.tmp/`` and renamed over the old one (kept as
``checkpoint.old/`` between the two renames); on resume the newest whole one of the three is taken, so an
interruption at any moment loses at most the checkpoint being written. Resuming refuses a changed config
and names the fields that differ.

A checkpoint is data, never code: ``trainer_state.pt`` holds only tensors, numbers, strings and plain
containers (numpy arrays are stored as tensors) and is read with ``torch.load(..., weights_only=True)``;
a file that needs more (the pickled trainer state of an earlier textenv, or a crafted file) is refused, not run.
A policy or optimizer state holding NaN/inf is never saved: :meth:`Run.save` raises ``TrainingDiverged``
and the last good checkpoint stays as it is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.core.update import TrainingDiverged
from textenv.checkpoint import (  # noqa: F401  (CHECKPOINT, MARKER, STATE, to_safe, ...: names users import from here)
    CHECKPOINT, MARKER, STATE, Checkpoints, atomic_write, commit, first_nonfinite, folders, from_safe, load_state,
    read_marker, recover, remove, to_safe, write_csv,
)

FORMAT = 2
"""Checkpoint format: 2 = weights-only trainer state + completeness marker (1, earlier textenv: pickled state)."""


def package_version() -> str:
    from textenv import __version__

    return __version__


def config_dict(config) -> dict[str, Any]:
    """The config as a JSON-able dict (what ``config.json`` holds)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def config_defaults(config) -> dict[str, Any]:
    """Each field of a config dataclass that has a default, at its default, JSON-able as in :func:`config_dict`."""
    defaults = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return json.loads(json.dumps(defaults, default=str))


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
    np.random.set_state(tuple(state["numpy"]))
    random.setstate(tuple(state["python"]))


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
        self._fresh = False

    def start(self, resume: bool) -> dict[str, Any] | None:
        """Open the run: with ``resume`` the checkpoint's state (see :meth:`load`; None when there is none) and
        ``config.json`` written once the config is accepted. With ``resume=False``: None, and nothing is removed
        yet; the old checkpoint goes in :meth:`begin`, which the trainer calls once its env, policy and data have
        loaded, so a run that fails to start (a bad ``--model``) leaves the old checkpoint whole."""
        if resume:
            state = self.load()
            self._write_config()
            return state
        self._fresh = True
        return None

    def begin(self) -> None:
        """Everything loaded, training starts: after ``start(resume=False)``, remove the old checkpoint (and any
        ``checkpoint.tmp``/``checkpoint.old``) and write ``config.json``. A no-op otherwise; :meth:`log` and
        :meth:`save` call it too."""
        if self._fresh:
            self.checkpoints.clear()
            self._write_config()
            self._fresh = False

    def _write_config(self) -> None:
        (self.path / "config.json").write_text(json.dumps(config_dict(self.config), indent=2) + "\n")

    # ---------------------------------------------------------------- metrics
    def log(self, row: dict[str, float]) -> None:
        """Append a metrics row (``iteration`` is the step axis) to memory, ``metrics.csv`` and TensorBoard."""
        self.begin()
        self.rows.append(row)
        write_csv(self.path / "metrics.csv", self.rows)
        writer = self._writer()
        if writer is not None:
            step = int(row.get("iteration", len(self.rows)))
            for key, value in row.items():
                if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                    writer.add_scalar(key, value, step)
            writer.flush()

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
    def checkpoints(self) -> Checkpoints:
        """The run folder's checkpoints, keyed by the config without the ``ignore`` fields."""
        return Checkpoints(self.path, self._comparable(config_dict(self.config)), FORMAT, config_defaults(self.config))

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT

    def last_good(self) -> str:
        """One sentence naming the last whole checkpoint (for divergence messages)."""
        return self.checkpoints.last_good()

    def save(self, policy, state: dict[str, Any]) -> Path:
        """Write ``policy`` (``save_pretrained`` if it has one, else its ``state_dict``) and ``state`` atomically.

        Raises ``TrainingDiverged`` (writing nothing) when the policy's weights or a tensor of ``state`` (the
        optimizer's moments, ...) hold NaN/inf, and ``TypeError`` when ``state`` holds an object that would need
        pickle.
        """
        self.begin()
        progress = next((f"{k} {state[k]}" for k in ("iteration", "step") if k in state), "this point")
        weights = policy.state_dict() if hasattr(policy, "state_dict") else {}

        def write(folder: Path) -> None:
            if hasattr(policy, "save_pretrained"):
                policy.save_pretrained(folder / "policy")
            else:
                torch.save(policy.state_dict(), folder / "policy.pt")
            (folder / "config.json").write_text(json.dumps(config_dict(self.config), indent=2) + "\n")

        return self.checkpoints.save(write, {**state, "rows": self.rows, "rng": rng_state()}, progress,
                                     {"policy": weights, "trainer state": state}, TrainingDiverged,
                                     getattr(self.config, "lr", None))

    def _comparable(self, config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in self.ignore}

    def load(self) -> dict[str, Any] | None:
        """The saved trainer state (RNG restored, metrics rows reloaded), or None when there is no checkpoint.

        A save interrupted between its renames is recovered (the newest whole checkpoint is taken). Raises
        ``ValueError`` if the checkpoint was written with a different config (naming the fields), is truncated,
        or is not a weights-only trainer state (a format-1 checkpoint of an earlier textenv, or a crafted file: it is
        refused, never unpickled), and ``FileNotFoundError`` if the checkpoint folder is incomplete; each message
        names the file and the way out (``resume=False`` / ``--no-resume``, or deleting the folder).
        """
        state = self.checkpoints.load()
        if state is None:
            return None
        set_rng_state(state["rng"])
        self.rows = list(state["rows"])
        write_csv(self.path / "metrics.csv", self.rows)
        return state

    def policy_path(self) -> Path:
        """Where the checkpoint's policy is (``checkpoint/policy``), checking it is there."""
        path = self.checkpoint_dir / "policy"
        if not path.exists() and not (self.checkpoint_dir / "policy.pt").exists():
            raise FileNotFoundError(f"checkpoint {self.checkpoint_dir} has no policy; it is incomplete")
        return path
