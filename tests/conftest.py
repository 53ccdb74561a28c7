import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub lookup fails in milliseconds instead of ~47 s of retries
os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo: no checker or renderer may try to open a window

import pytest
import torch

torch.set_num_threads(1)  # tests may run side by side (pytest -n 2); 1 thread is the safe speed here


@pytest.fixture(scope="session")
def lm_dir():
    """The built-in world's LM directory (built once per cache, about a minute)."""
    from textenv import world

    return world.lm_path(progress=False)


@pytest.fixture(scope="session")
def base_lm(lm_dir):
    from textenv.lm import load_causal_lm

    return load_causal_lm(lm_dir)
