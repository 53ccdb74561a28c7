import os
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub lookup fails in milliseconds instead of ~47 s of retries
os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo: no checker or renderer may try to open a window

import pytest
import torch

torch.set_num_threads(1)  # tests may run side by side (pytest -n 2); 1 thread is the safe speed here


def _mujoco_warning(message: str) -> None:
    """MuJoCo's warnings as Python warnings, where pytest shows them (or pyproject's filterwarnings hides the expected).

    MuJoCo's default handler appends every warning to ``MUJOCO_LOG.TXT`` in the working directory, which under
    pytest is the repository root (Gymnasium's own ``half_cheetah.xml`` triggers one on every compile).
    """
    try:
        warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)
    # under -W error: an exception must not cross MuJoCo's C code (the process would abort), so print it instead
    except Exception:  # noqa: BLE001
        print(f"MuJoCo warning: {message}", file=sys.stderr)


try:
    import mujoco
except ImportError:  # the dev extra brings it; without it no test compiles a MuJoCo model
    pass
else:
    mujoco.set_mju_user_warning(_mujoco_warning)


@pytest.fixture(scope="session")
def lm_dir():
    """The built-in world's LM directory (built once per cache, about a minute)."""
    from textenv import world

    return world.lm_path(progress=False)


@pytest.fixture(scope="session")
def base_lm(lm_dir):
    from textenv.lm import load_causal_lm

    return load_causal_lm(lm_dir)
