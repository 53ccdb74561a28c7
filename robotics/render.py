"""Rendering an evaluation episode to a GIF, headless (``MUJOCO_GL=egl``, or ``osmesa`` with Debian's libosmesa6).

Where no GL backend works, :func:`record_gif` returns None with the reason in a warning instead of failing:
rendering is a user-facing extra, never a requirement. Only the failures of creating a GL context are skipped
that way (see :func:`_no_gl`); any other error, a bug in the frame code included, propagates.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np


def record_gif(policy, env_id: str, path: str | os.PathLike, seed: int = 0, max_steps: int = 300, fps: int = 30,
               size: int = 240, every: int = 2) -> Path | None:
    """Play one deterministic episode of ``policy`` in ``env_id`` and write every ``every``-th frame to ``path``.

    Returns the path, or None (with a warning) when the machine cannot render (no GL context can be made);
    any other error raised while rendering propagates.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym
    from PIL import Image

    env = gym.make(env_id, render_mode="rgb_array", width=size, height=size)
    if _has_camera(env, "track"):  # the locomotion tasks' tracking camera keeps the robot in view
        env.close()
        env = gym.make(env_id, render_mode="rgb_array", width=size, height=size, camera_name="track")
    obs, _ = env.reset(seed=seed)
    try:
        frames = [env.render()]  # the first frame creates the GL context: the only step allowed to fail here
    except Exception as error:
        if not _no_gl(error):  # a bug, not a missing GL backend: never hide it
            env.close()
            raise
        warnings.warn(f"cannot render {env_id} here ({type(error).__name__}: {error}); set MUJOCO_GL=egl or osmesa",
                      RuntimeWarning, stacklevel=2)
        env.close()
        return None
    for t in range(max_steps):
        action = policy.act(np.asarray(obs)[None], deterministic=True).action[0].numpy()
        obs, _, terminated, truncated, _ = env.step(np.clip(action, env.action_space.low, env.action_space.high))
        if t % every == 0:
            frames.append(env.render())
        if terminated or truncated:
            break
    env.close()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 * every / fps), loop=0)
    return path


_GL_WORDS = re.compile(r"opengl|\begl|osmesa|glfw|glad|\bgl\b|mjr_makeContext", re.IGNORECASE)


def _no_gl(error: BaseException) -> bool:
    """Whether ``error`` says that no GL context can be made here (what MuJoCo's backends raise on a machine
    without EGL/OSMesa/a display), rather than a bug.

    | backend failure | raised as |
    |---|---|
    | backend libraries missing, no EGL device display, ``PYOPENGL_PLATFORM`` clash | ``ImportError`` naming GL/EGL/OSMesa |
    | no framebuffer config, context not created or not made current | ``RuntimeError`` naming EGL/OSMesa |
    | no GL loaded when MuJoCo makes its render context (GLFW without a display) | ``mujoco.FatalError`` naming OpenGL |
    | an EGL/GL call failing inside PyOpenGL | ``OpenGL.error.Error`` subclasses |
    """
    if type(error).__module__.split(".")[0] == "OpenGL":
        return True
    try:
        from mujoco import FatalError
    except ImportError:
        FatalError = RuntimeError  # noqa: N806
    return isinstance(error, (ImportError, RuntimeError, FatalError)) and bool(_GL_WORDS.search(str(error)))


def _has_camera(env, name: str) -> bool:
    import mujoco

    model = env.unwrapped.model
    return any(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) == name for i in range(model.ncam))
