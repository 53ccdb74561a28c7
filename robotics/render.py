"""Rendering an evaluation episode to a GIF, headless (``MUJOCO_GL=egl``, or ``osmesa`` with Debian's libosmesa6).

Where no GL backend works, :func:`record_gif` returns None with the reason in a warning instead of failing:
rendering is a user-facing extra, never a requirement.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np


def record_gif(policy, env_id: str, path: str | os.PathLike, seed: int = 0, max_steps: int = 300, fps: int = 30,
               size: int = 240, every: int = 2) -> Path | None:
    """Play one deterministic episode of ``policy`` in ``env_id`` and write every ``every``-th frame to ``path``.

    Returns the path, or None (with a warning) when the machine cannot render.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym
    from PIL import Image

    env = gym.make(env_id, render_mode="rgb_array", width=size, height=size)
    if _has_camera(env, "track"):  # the locomotion tasks' tracking camera keeps the robot in view
        env = gym.make(env_id, render_mode="rgb_array", width=size, height=size, camera_name="track")
    obs, _ = env.reset(seed=seed)
    try:
        frames = [env.render()]  # the first frame creates the GL context: the only step allowed to fail here
    except Exception as error:  # noqa: BLE001  (no GL backend, missing libraries: skip cleanly)
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


def _has_camera(env, name: str) -> bool:
    import mujoco

    model = env.unwrapped.model
    return any(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) == name for i in range(model.ncam))
