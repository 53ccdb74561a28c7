"""Domain randomization for sim-to-real: per-episode physics and sensor/actuator perturbations of MuJoCo envs.

Every ``reset`` draws, from the env's own seeded ``np_random``, a scale for each body's mass (and inertia),
each geom's sliding friction, each joint's damping and each actuator's gain, an observation-noise level and an
action delay, and writes the scaled values into the MuJoCo model (they take effect at once). The scales are
relative to the nominal model, read once when the wrapper is made, so they never compound across episodes.

The "shifted dynamics" mode fixes the scales instead of sampling them (``fixed={"mass": 1.3, "friction":
0.7}``): the sim-to-real style test of a policy on dynamics it was not trained on.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields

import gymnasium as gym
import numpy as np

SCALES = ("mass", "friction", "damping", "gain")


def _check_range(name: str, value, allow_zero: bool = False) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}={value!r}: expected a (low, high) pair of numbers") from error
    floor_ok = low >= 0 if allow_zero else low > 0
    if not (math.isfinite(low) and math.isfinite(high) and floor_ok and low <= high):
        need = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}=({low}, {high}) is not a valid range; expected finite low <= high with low {need}")
    return low, high


@dataclass(frozen=True)
class RandomizationConfig:
    """Ranges sampled uniformly at every reset (a range with low == high is fixed).

    | field | default | what is scaled |
    |---|---|---|
    | ``mass`` | (0.8, 1.2) | every body's mass, and its inertia by the same factor |
    | ``friction`` | (0.7, 1.3) | every geom's sliding friction |
    | ``damping`` | (0.8, 1.2) | every joint's damping (joints without damping stay at 0) |
    | ``gain`` | (0.9, 1.1) | every actuator's gain (``gainprm[0]``) |
    | ``obs_noise`` | (0.0, 0.0) | std of Gaussian noise added to each observation, drawn per episode |
    | ``action_delay`` | (0, 0) | steps between choosing an action and applying it (integer, drawn per episode) |
    """

    mass: tuple[float, float] = (0.8, 1.2)
    friction: tuple[float, float] = (0.7, 1.3)
    damping: tuple[float, float] = (0.8, 1.2)
    gain: tuple[float, float] = (0.9, 1.1)
    obs_noise: tuple[float, float] = (0.0, 0.0)
    action_delay: tuple[int, int] = (0, 0)

    def __post_init__(self):
        for name in SCALES:
            _check_range(name, getattr(self, name))
        _check_range("obs_noise", self.obs_noise, allow_zero=True)
        low, high = _check_range("action_delay", self.action_delay, allow_zero=True)
        if not (low.is_integer() and high.is_integer()):
            raise ValueError(f"action_delay={self.action_delay!r}: expected whole numbers of steps")

    @classmethod
    def nominal(cls) -> RandomizationConfig:
        """No randomization at all (every scale 1, no noise, no delay)."""
        return cls(mass=(1, 1), friction=(1, 1), damping=(1, 1), gain=(1, 1))


class DomainRandomization(gym.Wrapper):
    """Randomize a MuJoCo env's dynamics per episode (see :class:`RandomizationConfig`).

    Args:
        env: a Gymnasium MuJoCo env (anything whose ``unwrapped`` has a ``model``).
        config: the ranges; default :class:`RandomizationConfig()`.
        fixed: shifted-dynamics mode: ``{name: value}`` for any of ``mass``, ``friction``, ``damping``, ``gain``,
            ``obs_noise``, ``action_delay``, used every episode; in this mode nothing is sampled, and what is not
            named stays nominal (scale 1, no noise, no delay). Values outside the training ranges are the point.

    ``info["randomization"]`` holds the episode's values ``{"mass": ..., ..., "action_delay": ...}`` on reset and
    on every step.
    """

    def __init__(self, env: gym.Env, config: RandomizationConfig | None = None, fixed: dict | None = None):
        super().__init__(env)
        model = getattr(env.unwrapped, "model", None)
        if model is None or not hasattr(model, "body_mass"):
            raise TypeError(f"DomainRandomization needs a MuJoCo env (env.unwrapped.model); got {type(env.unwrapped).__name__}")
        self.config = config or RandomizationConfig()
        known = {f.name for f in fields(RandomizationConfig)}
        fixed = dict(fixed or {})
        unknown = sorted(set(fixed) - known)
        if unknown:
            raise ValueError(f"fixed has unknown keys {unknown}; expected some of {sorted(known)}")
        for name, value in fixed.items():
            _check_range(f"fixed[{name!r}]", (value, value), allow_zero=name in ("obs_noise", "action_delay"))
        if "action_delay" in fixed:
            if not float(fixed["action_delay"]).is_integer():
                raise ValueError(f"fixed['action_delay']={fixed['action_delay']!r}: expected a whole number of steps")
            fixed["action_delay"] = int(fixed["action_delay"])
        if fixed:  # shifted-dynamics mode: everything not named is nominal, nothing is sampled
            fixed = {**dict.fromkeys(SCALES, 1.0), "obs_noise": 0.0, "action_delay": 0, **fixed}
        self.fixed = fixed
        self._nominal = {
            "body_mass": model.body_mass.copy(), "body_inertia": model.body_inertia.copy(),
            "geom_friction": model.geom_friction.copy(), "dof_damping": model.dof_damping.copy(),
            "actuator_gainprm": model.actuator_gainprm.copy(),
        }
        self.params: dict[str, float] = {}
        self._queue: deque = deque()

    def _draw(self, name: str):
        if name in self.fixed:
            return self.fixed[name]
        low, high = getattr(self.config, name)
        if name == "action_delay":
            return int(self.np_random.integers(int(low), int(high) + 1))
        return float(self.np_random.uniform(low, high))

    def _apply(self) -> None:
        model, nominal, p = self.env.unwrapped.model, self._nominal, self.params
        model.body_mass[:] = nominal["body_mass"] * p["mass"]
        model.body_inertia[:] = nominal["body_inertia"] * p["mass"]
        model.geom_friction[:, 0] = nominal["geom_friction"][:, 0] * p["friction"]
        model.dof_damping[:] = nominal["dof_damping"] * p["damping"]
        model.actuator_gainprm[:, 0] = nominal["actuator_gainprm"][:, 0] * p["gain"]

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)  # seeds env.np_random, which the draws use
        self.params = {name: self._draw(name) for name in (*SCALES, "obs_noise", "action_delay")}
        self._apply()
        null = np.zeros(self.action_space.shape, dtype=self.action_space.dtype)
        self._queue = deque([null] * self.params["action_delay"])
        return self._noisy(obs), {**info, "randomization": dict(self.params)}

    def step(self, action):
        self._queue.append(np.array(action, copy=True))  # the caller may reuse its buffer
        obs, reward, terminated, truncated, info = self.env.step(self._queue.popleft())
        return self._noisy(obs), reward, terminated, truncated, {**info, "randomization": dict(self.params)}

    def _noisy(self, obs):
        if not self.params.get("obs_noise"):
            return obs
        return (obs + self.np_random.normal(0.0, self.params["obs_noise"], size=np.shape(obs))).astype(obs.dtype)

    def nominal_model(self) -> dict[str, np.ndarray]:
        """The nominal model values the scales apply to (copies)."""
        return {k: v.copy() for k, v in self._nominal.items()}
