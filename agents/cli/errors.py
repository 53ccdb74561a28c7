"""The ``textenv`` command's user errors: one line on stderr, exit status 2, no traceback (``--debug`` shows it).

A user error is a :class:`UsageError` (a flag value a config refuses, a missing input), a missing file, a
missing optional dependency, a read-only cache, or a ``ValueError`` raised by textenv's own code (a refused
resume, a bad env id...: those messages name the value and the way out). Anything else is a bug and keeps its
traceback; so does a ``ValueError`` raised inside a third-party library (numpy's "could not broadcast" is not
something the user typed).

>>> name_flags("lr=-1.0 is out of range", {"lr": "--lr"})
'--lr=-1.0 is out of range'
>>> name_flags("RewardModelConfig.batch_size=0 must be >= 1 (see runs/batch_size)", {"batch_size": "--batch-size"})
'--batch-size=0 must be >= 1 (see runs/batch_size)'
"""

from __future__ import annotations

import re
from pathlib import Path

EXTRAS = {"stable_baselines3": "sb3", "mujoco": "mujoco", "minari": "offline", "h5py": "offline", "trl": "bench",
          "datasets": "bench", "peft": "dev"}
"""Optional dependency (top-level module) → the extra of ``pyproject.toml`` that installs it."""

_OURS = tuple(str(Path(__file__).resolve().parents[2] / name) for name in ("agents", "textenv", "robotics"))


class UsageError(Exception):
    """A mistake in the command line or its input: ``textenv`` prints the message on one line and exits with 2."""


def name_flags(message: str, flags: dict[str, str]) -> str:
    """``message`` with each config field name written as its flag: a name followed by ``=`` or ``: `` (``lr=-1``,
    ``lr: 0.1 -> 0.2``), or any name holding ``_`` that is not part of a path; ``SomeConfig.lr=`` becomes ``--lr=``."""
    for name in sorted(flags, key=len, reverse=True):
        after = r"(?=(?:=|: ))" if "_" not in name else r"(?![\w/.\-])"
        message = re.sub(rf"(?<![\w/.\-])(?:\w+(?:Config|Settings)\.)?{re.escape(name)}{after}", flags[name], message)
    return message


def _raised_by_us(error: BaseException) -> bool:
    """Whether the innermost frame of ``error``'s traceback is in agents/, textenv/ or robotics/."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(_OURS)


def _missing_extra(error: BaseException) -> str | None:
    name = (getattr(error, "name", None) or "").split(".")[0]
    if isinstance(error, ImportError) and name in EXTRAS:
        return f"this command needs {name}, an optional dependency: pip install -e \".[{EXTRAS[name]}]\""
    if type(error).__name__ == "DependencyNotInstalled":  # gymnasium's, for MuJoCo envs without mujoco
        return f"{' '.join(str(error).split())}; the MuJoCo extra: pip install -e \".[mujoco]\""
    return None


def user_message(error: BaseException, flags: dict[str, str] | None = None) -> str | None:
    """The one-line message for a user error (field names written as flags), or None for a bug."""
    from agents.core.update import TrainingDiverged
    from textenv.world.cache import CacheError

    if isinstance(error, (UsageError, CacheError, TrainingDiverged)):
        message = str(error)
    elif isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        message = f"{error.strerror.lower()}: {error.filename}" if error.filename and error.strerror else str(error)
    elif (extra := _missing_extra(error)) is not None:
        message = extra
    elif isinstance(error, ValueError) and _raised_by_us(error):
        message = str(error)
    else:
        return None
    message = name_flags(" ".join(message.split()), flags or {})
    if "--no-resume" not in message:  # the library's words for the command line's flags
        message = message.replace("resume=False", "--no-resume").replace("use a new run directory", "use a different --out")
    return message
