"""Domain randomization for sim-to-real: per-episode physics and sensor/actuator perturbations of MuJoCo envs.

Every ``reset`` draws, from the env's own seeded ``np_random``, an independent scale for each body's mass (its
inertia scaled by the same factor), each geom's sliding friction, each joint's damping and each actuator's gain, as
dynamics-randomization papers do (Peng et al. 2018, "Sim-to-Real Transfer of Robotic Control with Dynamics
Randomization"), plus one observation-noise level and one action delay for the episode. The scaled values are
written into the MuJoCo model, then ``mujoco.mj_setConst`` recomputes what the compiler derives from them (subtree
masses, ``dof_invweight0`` which sets contact softness, ``actuator_acc0``, ``dof_M0``), so the episode runs exactly
as a model compiled with those values would. The scales are relative to the nominal model, read once when the
wrapper is made, so they never compound.

The "shifted dynamics" mode fixes the scales instead of sampling them (``fixed={"mass": 1.3, "friction":
0.7}``: every body's mass ×1.3, every geom's friction ×0.7): the sim-to-real style test of a policy on dynamics
it was not trained on.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from dataclasses import dataclass, fields

import gymnasium as gym
import numpy as np

SCALES = ("mass", "friction", "damping", "gain")


def _number(name: str, value) -> float:
    """``value`` as a float, or a TypeError naming it: strings, bools and None are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r} is a {type(value).__name__}; expected a number (int or float)")
    return float(value)


def _check_range(name: str, value, allow_zero: bool = False) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name}={value!r}: expected a (low, high) pair of numbers")
    low, high = (_number(f"{name}[{i}]", v) for i, v in enumerate(value))
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
    | ``mass`` | (0.8, 1.2) | each body's mass, and its inertia by the same factor (one draw per body) |
    | ``friction`` | (0.7, 1.3) | each geom's sliding friction (one draw per geom) |
    | ``damping`` | (0.8, 1.2) | each joint's damping (one draw per joint; joints without damping stay at 0) |
    | ``gain`` | (0.9, 1.1) | each actuator's gain, ``gainprm[0]`` (one draw per actuator) |
    | ``obs_noise`` | (0.0, 0.0) | std of Gaussian noise added to every observation, reset and steps (drawn per episode) |
    | ``action_delay`` | (0, 0) | steps between choosing an action and applying it (integer, drawn per episode) |

    Ranges are stored as float pairs (``action_delay`` as int pairs); anything else is refused here, by name.
    """

    mass: tuple[float, float] = (0.8, 1.2)
    friction: tuple[float, float] = (0.7, 1.3)
    damping: tuple[float, float] = (0.8, 1.2)
    gain: tuple[float, float] = (0.9, 1.1)
    obs_noise: tuple[float, float] = (0.0, 0.0)
    action_delay: tuple[int, int] = (0, 0)

    def __post_init__(self):
        for name in SCALES:
            object.__setattr__(self, name, _check_range(name, getattr(self, name)))
        object.__setattr__(self, "obs_noise", _check_range("obs_noise", self.obs_noise, allow_zero=True))
        low, high = _check_range("action_delay", self.action_delay, allow_zero=True)
        if not (low.is_integer() and high.is_integer()):
            raise ValueError(f"action_delay={self.action_delay!r}: expected whole numbers of steps")
        object.__setattr__(self, "action_delay", (int(low), int(high)))

    @classmethod
    def nominal(cls) -> RandomizationConfig:
        """No randomization at all (every scale 1, no noise, no delay)."""
        return cls(mass=(1, 1), friction=(1, 1), damping=(1, 1), gain=(1, 1))

    @classmethod
    def from_dict(cls, ranges: dict) -> RandomizationConfig:
        """``RandomizationConfig(**ranges)``, refusing unknown keys by name (e.g. ``gym.make(..., config={...})``)."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(ranges) - set(known), key=str)
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}; expected some of {known}")
        return cls(**ranges)


class DomainRandomization(gym.Wrapper):
    """Randomize a MuJoCo env's dynamics per episode (see :class:`RandomizationConfig`).

    Args:
        env: a Gymnasium MuJoCo env (anything whose ``unwrapped`` has a ``model`` and a ``data``).
        config: the ranges, a :class:`RandomizationConfig` or a dict of its fields; default
            :class:`RandomizationConfig()`.
        fixed: shifted-dynamics mode: ``{name: number}`` for any of ``mass``, ``friction``, ``damping``, ``gain``
            (one scale for every body / geom / joint / actuator), ``obs_noise``, ``action_delay``, used every
            episode; in this mode nothing is sampled, ``config`` is not used, and what is not named stays nominal
            (scale 1, no noise, no delay; ``fixed={}`` is the nominal model). Values outside the training ranges are
            the point.

    ``info["randomization"]`` holds the episode's values on reset and on every step: ``mass`` (one scale per
    body, indexed by body id; the world body 0 is always 1), ``friction`` (per geom), ``damping`` (per degree of
    freedom, equal within a joint), ``gain`` (per actuator) as float arrays, and ``obs_noise`` (float) and
    ``action_delay`` (int). Observation noise is fresh on every observation, the reset one included.
    """

    def __init__(self, env: gym.Env, config: RandomizationConfig | dict | None = None, fixed: dict | None = None):
        super().__init__(env)
        model = getattr(env.unwrapped, "model", None)
        if model is None or not hasattr(model, "body_mass") or not hasattr(env.unwrapped, "data"):
            raise TypeError(f"DomainRandomization needs a MuJoCo env (env.unwrapped.model); got {type(env.unwrapped).__name__}")
        if isinstance(config, dict):
            config = RandomizationConfig.from_dict(config)
        elif config is not None and not isinstance(config, RandomizationConfig):
            raise TypeError(f"config={config!r} is a {type(config).__name__}; "
                            "expected a RandomizationConfig or a dict of its fields")
        self.config = config or RandomizationConfig()
        if fixed is not None and not isinstance(fixed, dict):
            raise TypeError(f"fixed={fixed!r} is a {type(fixed).__name__}; expected a dict such as {{'mass': 1.3}}")
        known = {f.name for f in fields(RandomizationConfig)}
        shifted = fixed is not None  # fixed={} is the nominal model, not "no fixed values": nothing is sampled
        fixed = dict(fixed or {})
        unknown = sorted(set(fixed) - known, key=str)
        if unknown:
            raise ValueError(f"fixed has unknown keys {unknown}; expected some of {sorted(known)}")
        for name, value in fixed.items():
            fixed[name] = _number(f"fixed[{name!r}]", value)
            _check_range(f"fixed[{name!r}]", (value, value), allow_zero=name in ("obs_noise", "action_delay"))
        if "action_delay" in fixed:
            if not fixed["action_delay"].is_integer():
                raise ValueError(f"fixed['action_delay']={fixed['action_delay']!r}: expected a whole number of steps")
            fixed["action_delay"] = int(fixed["action_delay"])
        if shifted:  # shifted-dynamics mode: everything not named is nominal, nothing is sampled
            fixed = {**dict.fromkeys(SCALES, 1.0), "obs_noise": 0.0, "action_delay": 0, **fixed}
        self.fixed = fixed
        self._nominal = {
            "body_mass": model.body_mass.copy(), "body_inertia": model.body_inertia.copy(),
            "geom_friction": model.geom_friction.copy(), "dof_damping": model.dof_damping.copy(),
            "actuator_gainprm": model.actuator_gainprm.copy(),
        }
        self._dof_joint = model.dof_jntid.copy()  # (nv,) the joint each degree of freedom belongs to
        self._sizes = {"mass": model.nbody - 1, "friction": model.ngeom, "damping": model.njnt, "gain": model.nu}
        self._scratch = None  # an MjData for mj_setConst, so that the env's own data is never touched
        self.params: dict = {}
        self._queue: deque = deque()

    def _draw(self, name: str):
        """The episode's value of ``name``: a scalar for ``obs_noise``/``action_delay``, an array for a scale."""
        if name in ("obs_noise", "action_delay"):
            if name in self.fixed:
                return self.fixed[name]
            low, high = getattr(self.config, name)
            if name == "action_delay":
                return int(self.np_random.integers(low, high + 1))
            return float(self.np_random.uniform(low, high))
        size = self._sizes[name]
        if name in self.fixed:
            scales = np.full(size, self.fixed[name])
        else:
            scales = self.np_random.uniform(*getattr(self.config, name), size=size)
        if name == "mass":  # the world body (id 0) has no mass to scale
            scales = np.concatenate([[1.0], scales])
        elif name == "damping":  # one draw per joint, shared by its degrees of freedom (a free joint has 6)
            scales = scales[self._dof_joint]
        return scales

    def _apply(self) -> None:
        import mujoco

        model, nominal, p = self.env.unwrapped.model, self._nominal, self.params
        model.body_mass[:] = nominal["body_mass"] * p["mass"]  # (nbody,)
        model.body_inertia[:] = nominal["body_inertia"] * p["mass"][:, None]  # (nbody, 3)
        model.geom_friction[:, 0] = nominal["geom_friction"][:, 0] * p["friction"]  # (ngeom,)
        model.dof_damping[:] = nominal["dof_damping"] * p["damping"]  # (nv,)
        model.actuator_gainprm[:, 0] = nominal["actuator_gainprm"][:, 0] * p["gain"]  # (nu,)
        # What the compiler derives from masses (subtree masses, dof_invweight0 = contact softness, actuator_acc0,
        # dof_M0) must follow them. mj_setConst resets the data it is given to qpos0, so it gets a scratch MjData:
        # the env's state after its reset is untouched; mj_forward then refreshes that state's derived quantities.
        if self._scratch is None:
            self._scratch = mujoco.MjData(model)
        mujoco.mj_setConst(model, self._scratch)
        mujoco.mj_forward(model, self.env.unwrapped.data)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)  # seeds env.np_random, which the draws use
        self.params = {name: self._draw(name) for name in (*SCALES, "obs_noise", "action_delay")}
        self._apply()
        null = np.zeros(self.action_space.shape, dtype=self.action_space.dtype)
        self._queue = deque([null] * self.params["action_delay"])
        return self._noisy(obs), {**info, "randomization": self._report()}

    def step(self, action):
        self._queue.append(np.array(action, copy=True))  # the caller may reuse its buffer
        obs, reward, terminated, truncated, info = self.env.step(self._queue.popleft())
        return self._noisy(obs), reward, terminated, truncated, {**info, "randomization": self._report()}

    def _report(self) -> dict:
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self.params.items()}

    def _noisy(self, obs):
        if not self.params.get("obs_noise"):
            return obs
        return (obs + self.np_random.normal(0.0, self.params["obs_noise"], size=np.shape(obs))).astype(obs.dtype)

    def nominal_model(self) -> dict[str, np.ndarray]:
        """The nominal model values the scales apply to (copies)."""
        return {k: v.copy() for k, v in self._nominal.items()}
