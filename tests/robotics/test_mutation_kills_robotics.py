"""Tests written to kill the mutants of ``robotics/randomization.py`` that survived ``benchmarks/mutation.py`` (see
benchmarks/results/mutation.md): exact refusal messages, the sampled ranges, the action-delay queue, the
shifted-dynamics defaults and the exact observation noise.

Each test names, in its docstring, the mutation it guards against and why the test catches it.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

mujoco = pytest.importorskip("mujoco")

from robotics import DomainRandomization, RandomizationConfig  # noqa: E402

NOMINAL = {"mass": (1, 1), "friction": (1, 1), "damping": (1, 1), "gain": (1, 1)}


class _Recorder(gym.Wrapper):
    """Keeps a copy of every action and of the reset options the wrapped env receives."""

    def __init__(self, env):
        super().__init__(env)
        self.actions, self.options = [], []

    def reset(self, *, seed=None, options=None):
        self.options.append(options)
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        self.actions.append(np.array(action, copy=True))
        return self.env.step(action)


class _FakeMujocoEnv(gym.Env):
    """An env that looks like a MuJoCo env only in part (``model`` and/or ``data`` given as attributes)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
    action_space = gym.spaces.Box(-1.0, 1.0, (1,))

    def __init__(self, **attributes):
        for name, value in attributes.items():
            setattr(self, name, value)


def _hopper_model() -> mujoco.MjModel:
    return gym.make("Hopper-v5").unwrapped.model


# ---------------------------------------------------------------------------------------- RandomizationConfig checks
@pytest.mark.parametrize(("ranges", "message"), [
    ({"mass": (0, 1)}, r"^mass=\(0\.0, 1\.0\) is not a valid range; expected finite low <= high with low > 0$"),
    ({"friction": (1.3, 0.7)}, r"^friction=\(1\.3, 0\.7\) is not a valid range; .* with low > 0$"),
    ({"gain": (1, math.inf)}, r"^gain=\(1\.0, inf\) is not a valid range; .* with low > 0$"),
    ({"obs_noise": (-0.1, 0.1)}, r"^obs_noise=\(-0\.1, 0\.1\) is not a valid range; .* with low >= 0$"),
    ({"action_delay": (-1, 2)}, r"^action_delay=\(-1\.0, 2\.0\) is not a valid range; .* with low >= 0$"),
    ({"action_delay": (0, 1.5)}, r"^action_delay=\(0, 1\.5\): expected whole numbers of steps$"),
    ({"damping": (1, 2, 3)}, r"^damping=\(1, 2, 3\): expected a \(low, high\) pair of numbers$"),
    ({"damping": 1.0}, r"^damping=1\.0: expected a \(low, high\) pair of numbers$"),
])
def test_a_bad_range_is_refused_naming_the_field_the_values_and_the_rule(ranges, message):
    """A mutant that accepts a zero, reversed, infinite, negative, fractional or non-pair range (``and``/``or``
    swapped, ``low >= 0`` for the scales, ``allow_zero=True`` by default) or words the refusal differently
    (another field name, ``>= 0``/``> 0`` swapped, no message) — caught because each case must raise exactly this."""
    with pytest.raises(ValueError, match=message):
        RandomizationConfig(**ranges)


def test_action_delay_is_stored_as_an_int_pair():
    """A mutant that stores the converted pair under another attribute name (``XXaction_delayXX``) leaves the
    list ``[1.0, 2.0]`` in place — caught because the field must read ``(1, 2)`` as ints."""
    delay = RandomizationConfig(action_delay=[1.0, 2.0]).action_delay
    assert delay == (1, 2) and isinstance(delay, tuple) and all(type(v) is int for v in delay)


def test_nominal_config_is_every_scale_one_no_noise_no_delay():
    """A mutant of ``RandomizationConfig.nominal()`` (a scale range (1, 2), a dropped field falling back to its
    training range) — caught because every field must be exactly its no-randomization value, and a reset under it
    must reproduce the bare env's model and observation."""
    config = RandomizationConfig.nominal()
    assert (config.mass, config.friction, config.damping, config.gain) == ((1.0, 1.0),) * 4
    assert config.obs_noise == (0.0, 0.0) and config.action_delay == (0, 0)
    env = DomainRandomization(gym.make("Hopper-v5"), config)
    nominal = env.nominal_model()
    obs, info = env.reset(seed=3)
    for name in ("mass", "friction", "damping", "gain"):
        np.testing.assert_array_equal(info["randomization"][name], 1.0, err_msg=name)
    np.testing.assert_array_equal(env.unwrapped.model.body_mass, nominal["body_mass"])
    np.testing.assert_array_equal(obs, gym.make("Hopper-v5").reset(seed=3)[0])


def test_unknown_config_keys_of_mixed_types_are_listed_sorted_as_strings():
    """A mutant that sorts the unknown keys without ``key=str`` raises a bare TypeError on ``{3: ..., 'weight':
    ...}`` — caught because the refusal must be the ValueError listing ``[3, 'weight']``."""
    with pytest.raises(ValueError, match=r"^config has unknown keys \[3, 'weight'\]; expected some of \['mass'"):
        RandomizationConfig.from_dict({"weight": (1, 2), 3: (1, 2)})


# ------------------------------------------------------------------------------------ DomainRandomization construction
def test_an_env_without_a_mujoco_model_and_data_is_refused_by_name():
    """A mutant of the MuJoCo check (``getattr`` without its default, ``and`` for ``or``, the class name of
    ``None``, no message) — caught because CartPole, a model without ``body_mass`` and a model without ``data`` must
    each raise this TypeError naming the env's class, not pass or fail later with an AttributeError."""
    with pytest.raises(TypeError, match=r"^DomainRandomization needs a MuJoCo env \(env\.unwrapped\.model\); "
                                        r"got CartPoleEnv$"):
        DomainRandomization(gym.make("CartPole-v1"))
    with pytest.raises(TypeError, match=r"needs a MuJoCo env .*; got _FakeMujocoEnv$"):
        DomainRandomization(_FakeMujocoEnv(model=object(), data=object()))  # no body_mass
    with pytest.raises(TypeError, match=r"needs a MuJoCo env .*; got _FakeMujocoEnv$"):
        DomainRandomization(_FakeMujocoEnv(model=_hopper_model()))  # no data


@pytest.mark.parametrize(("fixed", "message"), [
    ({"weight": 1.3}, r"^fixed has unknown keys \['weight'\]; expected some of \['action_delay', 'damping', "
                      r"'friction', 'gain', 'mass', 'obs_noise'\]$"),
    ({"weight": 1.0, 3: 1.0}, r"^fixed has unknown keys \[3, 'weight'\]"),
    ({"mass": 0}, r"^fixed\['mass'\]=\(0\.0, 0\.0\) is not a valid range; .* with low > 0$"),
    ({"obs_noise": -0.1}, r"^fixed\['obs_noise'\]=\(-0\.1, -0\.1\) is not a valid range; .* with low >= 0$"),
    ({"action_delay": 1.5}, r"^fixed\['action_delay'\]=1\.5: expected a whole number of steps$"),
])
def test_a_bad_fixed_value_is_refused_naming_the_key_and_the_rule(fixed, message):
    """A mutant that skips the unknown-key check (``unknown = None``), sorts mixed keys without ``key=str``,
    accepts a zero scale or a fractional delay (``allow_zero`` flipped, ``is_integer`` negated, another key
    name), or words the refusal differently — caught because each case must raise exactly this ValueError."""
    with pytest.raises(ValueError, match=message):
        DomainRandomization(gym.make("Hopper-v5"), fixed=fixed)


def test_fixed_zero_noise_and_zero_delay_are_accepted():
    """A mutant that checks ``fixed['obs_noise']`` or ``fixed['action_delay']`` with ``allow_zero`` false
    (``None``, dropped, ``not in``, a misspelt name) refuses 0 — caught because 0 noise and 0 delay are valid."""
    env = DomainRandomization(gym.make("Hopper-v5"), fixed={"obs_noise": 0, "action_delay": 0})
    obs, info = env.reset(seed=0)
    assert info["randomization"]["obs_noise"] == 0.0 and info["randomization"]["action_delay"] == 0
    np.testing.assert_array_equal(obs, gym.make("Hopper-v5").reset(seed=0)[0])


def test_fixed_mode_ignores_the_config_noise_and_delay():
    """A mutant that leaves ``obs_noise`` or ``action_delay`` out of the fixed-mode defaults (a misspelt key) draws
    them from ``config`` — caught because with ``fixed={'mass': 1.3}`` the config's noise 0.5 and delay 2 must
    not apply: the reset observation is the bare env's and the first action is applied at once."""
    config = RandomizationConfig(mass=(0.5, 0.6), obs_noise=(0.5, 0.5), action_delay=(2, 2))
    recorder = _Recorder(gym.make("Hopper-v5"))
    env = DomainRandomization(recorder, config, fixed={"mass": 1.3})
    obs, info = env.reset(seed=0)
    p = info["randomization"]
    assert (p["obs_noise"], p["action_delay"]) == (0.0, 0)
    np.testing.assert_array_equal(p["mass"][1:], 1.3)
    np.testing.assert_array_equal(p["friction"], 1.0)
    np.testing.assert_array_equal(obs, gym.make("Hopper-v5").reset(seed=0)[0])
    env.step(np.full(3, 0.5, dtype=np.float32))
    np.testing.assert_array_equal(recorder.actions[0], 0.5)


# --------------------------------------------------------------------------------------------- episodes and stepping
def test_delay_and_noise_draws_cover_their_range_and_stay_inside_it():
    """A mutant that draws the delay from ``integers(high + 1)`` (0..3) or ``integers(low, high + 2)`` (2..4),
    or the noise from ``uniform(high)`` / ``uniform(low)`` (up to 1.0) — caught because over 20 seeded episodes
    with delay (2, 3) and noise (0.2, 0.3) every delay is 2 or 3 (both occur) and every noise level is in range."""
    env = DomainRandomization(gym.make("Hopper-v5"), RandomizationConfig(obs_noise=(0.2, 0.3), action_delay=(2, 3),
                                                                          **NOMINAL))
    draws = [env.reset(seed=seed)[1]["randomization"] for seed in range(20)]
    delays = [d["action_delay"] for d in draws]
    noise = np.array([d["obs_noise"] for d in draws])
    assert set(delays) == {2, 3} and all(type(d) is int for d in delays)
    assert np.all((0.2 <= noise) & (noise <= 0.3)) and noise.min() < 0.25 < noise.max()


def test_delayed_actions_are_copies_and_the_first_ones_are_valid_zeros():
    """A mutant that queues the caller's buffer itself (``copy=None``/``False``), queues ``None`` or float64 zeros
    as the no-op actions, or leaves the fixed delay a float — caught because with delay 2 and one reused float32
    buffer the env must receive 0, 0, then the values the buffer held at each call, each in the action space."""
    recorder = _Recorder(gym.make("Hopper-v5"))
    env = DomainRandomization(recorder, fixed={"action_delay": 2.0})
    _, info = env.reset(seed=0)
    assert info["randomization"]["action_delay"] == 2 and type(info["randomization"]["action_delay"]) is int
    buffer = np.empty(3, dtype=np.float32)
    for k in range(1, 5):
        buffer[:] = 0.1 * k
        env.step(buffer)
    expected = [np.zeros(3), np.zeros(3), np.full(3, 0.1), np.full(3, 0.2)]
    for t, (got, want) in enumerate(zip(recorder.actions, expected)):
        assert got.dtype == np.float32 and env.action_space.contains(got), f"step {t}: {got.dtype}"
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"step {t}")


def test_stepping_before_any_reset_is_gymnasiums_reset_needed():
    """A mutant that starts the wrapper with ``params = None`` or ``_queue = None`` — caught because before the
    first reset nothing is drawn (``params == {}``) and a step must reach the env's own order check (ResetNeeded),
    not fail in the wrapper with an AttributeError."""
    env = DomainRandomization(gym.make("Hopper-v5"))
    assert env.params == {}
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(3, dtype=np.float32))


def test_reset_options_reach_the_wrapped_env():
    """A mutant that drops ``options=options`` from the inner reset — caught because the wrapped env must receive
    the options the caller passed."""
    recorder = _Recorder(gym.make("Hopper-v5"))
    DomainRandomization(recorder).reset(seed=0, options={"level": 3})
    assert recorder.options == [{"level": 3}]


def test_step_info_reports_the_episode_values_as_copies():
    """A mutant that reports under another key on steps, or hands out the episode's arrays themselves (``.copy()``
    disabled) — caught because each step's ``info['randomization']`` must hold the episode's values unchanged after
    the caller scaled the arrays it got from reset in place."""
    env = DomainRandomization(gym.make("Hopper-v5"))
    _, info = env.reset(seed=0)
    drawn = {k: np.copy(v) for k, v in info["randomization"].items()}
    info["randomization"]["mass"] *= 2.0
    info["randomization"]["gain"][:] = 0.0
    step_info = env.step(np.zeros(3, dtype=np.float32))[4]
    assert set(step_info["randomization"]) == set(drawn)
    for name, value in drawn.items():
        np.testing.assert_array_equal(step_info["randomization"][name], value, err_msg=name)
        np.testing.assert_array_equal(env.params[name], value, err_msg=name)


@pytest.mark.filterwarnings("ignore:.*Box (low|high)'s precision lowered:UserWarning")  # Hopper's ±inf bounds
def test_observation_noise_is_exactly_the_envs_seeded_normal_draw_in_the_observation_dtype():
    """A mutant that subtracts the noise or returns it in float64 (``astype(None)``) — caught because on a
    float32-observation Hopper the reset and step observations must equal, bit for bit, the clean observation plus
    ``np_random.normal(0, 0.1)`` drawn from the same seeded generator, in float32."""
    def make():
        return gym.wrappers.DtypeObservation(gym.make("Hopper-v5"), np.float32)

    env, bare = DomainRandomization(make(), fixed={"obs_noise": 0.1}), make()
    obs, _ = env.reset(seed=0)
    clean, _ = bare.reset(seed=0)
    noise = bare.np_random.normal(0.0, 0.1, size=clean.shape)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs, (clean + noise).astype(np.float32))
    assert np.abs(obs - clean).max() > 0.01  # the noise is there at all
    action = np.zeros(3, dtype=np.float32)
    obs, clean = env.step(action)[0], bare.step(action)[0]
    noise = bare.np_random.normal(0.0, 0.1, size=clean.shape)
    assert obs.dtype == np.float32
    np.testing.assert_array_equal(obs, (clean + noise).astype(np.float32))
