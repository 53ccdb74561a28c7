"""Domain randomization against ground truth: a freshly compiled model with the same scaled values, per-element
draws, refusal of bad configs at construction, and observation noise on every step."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

mujoco = pytest.importorskip("mujoco")

from robotics import DomainRandomization, RandomizationConfig  # noqa: E402

ONLY_MASS = {"friction": (1, 1), "damping": (1, 1), "gain": (1, 1)}
DERIVED = ("body_mass", "body_inertia", "body_subtreemass", "body_invweight0", "dof_invweight0", "dof_M0",
           "actuator_acc0")


def _compiled_with_masses(env, body_scales) -> mujoco.MjModel:
    """The env's XML compiled afresh with each body's geom densities scaled: mass and inertia scale with them."""
    spec = mujoco.MjSpec.from_file(env.unwrapped.fullpath)
    for body, scale in zip(spec.bodies, body_scales):  # spec.bodies is in body-id order, the world first
        for geom in body.geoms:
            geom.density *= scale
    return spec.compile()


def _same_run(env, fresh: mujoco.MjModel, steps: int, seed: int = 0):
    """Step ``env`` and a bare simulation of ``fresh`` from the env's state with the same controls; compare states."""
    data = mujoco.MjData(fresh)
    data.qpos[:], data.qvel[:] = env.unwrapped.data.qpos, env.unwrapped.data.qvel
    mujoco.mj_forward(fresh, data)
    rng = np.random.default_rng(seed)
    for t in range(steps):
        action = rng.uniform(-1, 1, size=env.action_space.shape)
        env.step(action.astype(np.float32))
        data.ctrl[:] = action.astype(np.float32)
        mujoco.mj_step(fresh, data, nstep=env.unwrapped.frame_skip)
        np.testing.assert_allclose(env.unwrapped.data.qpos, data.qpos, rtol=0, atol=1e-9, err_msg=f"step {t}")
        np.testing.assert_allclose(env.unwrapped.data.qvel, data.qvel, rtol=0, atol=1e-7, err_msg=f"step {t}")


def test_a_mass_shift_reaches_what_the_compiler_derives_from_masses():
    """Guards against writing body_mass/body_inertia without mj_setConst: Hopper's subtree mass stayed 15.82 at
    mass x1.5 (compiled: 23.73), contact softness (dof_invweight0) stayed nominal, and trajectories drifted from
    those of a model compiled with the heavier bodies (by 0.3 within 27 steps)."""
    env = DomainRandomization(gym.make("Hopper-v5"), fixed={"mass": 1.5})
    obs, _ = env.reset(seed=0)
    fresh = _compiled_with_masses(env, [1.5] * env.unwrapped.model.nbody)
    assert fresh.body_subtreemass[1] == pytest.approx(23.73002, abs=1e-4)  # 1.5 x 15.82001, by hand
    for name in DERIVED:
        np.testing.assert_allclose(getattr(env.unwrapped.model, name), getattr(fresh, name), rtol=1e-9, err_msg=name)
    bare = gym.make("Hopper-v5")  # the reset state is the env's own for that seed (mj_setConst did not reset it)
    np.testing.assert_array_equal(obs, bare.reset(seed=0)[0])
    np.testing.assert_array_equal(env.unwrapped.data.qpos, bare.unwrapped.data.qpos)
    np.testing.assert_array_equal(env.unwrapped.data.qvel, bare.unwrapped.data.qvel)
    _same_run(env, fresh, steps=60)


def test_per_body_draws_match_a_model_compiled_with_them_in_every_episode():
    """Guards against derived quantities that follow only the first (or a global) draw: each episode's
    per-body masses must give exactly the model a compiler would build from them, episode after episode."""
    env = DomainRandomization(gym.make("Hopper-v5"), RandomizationConfig(mass=(0.5, 1.5), **ONLY_MASS))
    for seed in (1, 2):
        _, info = env.reset(seed=seed)
        fresh = _compiled_with_masses(env, info["randomization"]["mass"])
        for name in DERIVED:
            np.testing.assert_allclose(getattr(env.unwrapped.model, name), getattr(fresh, name), rtol=1e-9,
                                       err_msg=f"seed {seed}: {name}")
        _same_run(env, fresh, steps=30, seed=seed)


def test_each_body_geom_joint_and_actuator_gets_its_own_seeded_draw():
    """Guards against one global factor per quantity where the docstring promises one per body, geom, joint
    and actuator (what domain-randomization papers sample), and checks the draws are seeded."""
    config = RandomizationConfig(mass=(0.5, 0.6), friction=(1.5, 2.0), damping=(0.9, 1.3), gain=(1.1, 1.2))
    env = DomainRandomization(gym.make("Ant-v5"), config)  # a free joint (6 dofs), 8 hinges, 8 actuators
    model, nominal = env.unwrapped.model, env.nominal_model()
    _, info = env.reset(seed=0)
    p = info["randomization"]
    sizes = {"mass": model.nbody, "friction": model.ngeom, "damping": model.nv, "gain": model.nu}
    for name, size in sizes.items():
        assert p[name].shape == (size,), name
        drawn = p[name][1:] if name == "mass" else p[name]  # the world body's scale is 1
        low, high = getattr(config, name)
        assert np.all((low <= drawn) & (drawn <= high)), name
    assert p["mass"][0] == 1.0
    draws = {"mass": model.nbody - 1, "friction": model.ngeom, "damping": model.njnt, "gain": model.nu}
    for name, per in draws.items():
        assert len(np.unique(p[name][1:] if name == "mass" else p[name])) == per, f"{name}: not one draw each"
    np.testing.assert_array_equal(p["damping"][:6], p["damping"][0])  # one draw for the free joint's 6 dofs
    np.testing.assert_allclose(model.body_mass, nominal["body_mass"] * p["mass"])
    np.testing.assert_allclose(model.body_inertia, nominal["body_inertia"] * p["mass"][:, None])
    np.testing.assert_allclose(model.geom_friction[:, 0], nominal["geom_friction"][:, 0] * p["friction"])
    np.testing.assert_allclose(model.dof_damping, nominal["dof_damping"] * p["damping"])
    np.testing.assert_allclose(model.actuator_gainprm[:, 0], nominal["actuator_gainprm"][:, 0] * p["gain"])
    again = DomainRandomization(gym.make("Ant-v5"), config).reset(seed=0)[1]["randomization"]
    other = env.reset(seed=1)[1]["randomization"]
    for name in sizes:
        np.testing.assert_array_equal(p[name], again[name])
        assert not np.array_equal(p[name], other[name]), name


def test_a_config_dict_is_converted_and_bad_values_are_refused_at_construction():
    """Guards against config={...} and fixed={"mass": "1.3"} passing construction and crashing at reset
    (AttributeError / UFuncTypeError): a dict is converted, wrong types and unknown keys are refused by name."""
    env = DomainRandomization(gym.make("Hopper-v5"), config={"mass": (1.1, 1.2), "obs_noise": [0, 0.1]})
    assert env.config == RandomizationConfig(mass=(1.1, 1.2), obs_noise=(0.0, 0.1))
    assert np.all(env.reset(seed=0)[1]["randomization"]["mass"][1:] >= 1.1)
    made = gym.make("robotics/Hopper-DR-v0", config={"gain": (0.5, 0.5)})
    np.testing.assert_array_equal(made.reset(seed=0)[1]["randomization"]["gain"], 0.5)
    with pytest.raises(ValueError, match=r"config has unknown keys \['weight'\]; expected some of \['mass'"):
        DomainRandomization(gym.make("Hopper-v5"), config={"weight": (1, 2)})
    with pytest.raises(TypeError, match=r"config='wide' is a str; expected a RandomizationConfig or a dict"):
        DomainRandomization(gym.make("Hopper-v5"), config="wide")
    with pytest.raises(TypeError, match=r"fixed\['mass'\]='1.3' is a str; expected a number"):
        DomainRandomization(gym.make("Hopper-v5"), fixed={"mass": "1.3"})
    with pytest.raises(TypeError, match=r"fixed\['gain'\]=True is a bool; expected a number"):
        DomainRandomization(gym.make("Hopper-v5"), fixed={"gain": True})
    with pytest.raises(TypeError, match=r"fixed=\[\('mass', 1.3\)\] is a list; expected a dict"):
        DomainRandomization(gym.make("Hopper-v5"), fixed=[("mass", 1.3)])
    with pytest.raises(TypeError, match=r"mass\[0\]='0.8' is a str; expected a number"):
        RandomizationConfig(mass=("0.8", 1.2))
    with pytest.raises(ValueError, match=r"friction='0.7': expected a \(low, high\) pair of numbers"):
        RandomizationConfig(friction="0.7")
    assert RandomizationConfig(mass=[1, 2]).mass == (1.0, 2.0)  # stored as a float pair, whatever came in


def test_observation_noise_is_fresh_on_every_step():
    """Guards against noise applied on the reset observation only (or one noise vector reused): over 100 steps
    the residuals obs - clean have the configured std (0.1; the sample std of 1,100 normals is within 5% of it
    with probability > 0.999), mean ~0, and no correlation between consecutive steps."""
    env = DomainRandomization(gym.make("Hopper-v5"), fixed={"obs_noise": 0.1})
    env.reset(seed=0)
    residuals = []
    for t in range(100):
        obs, *_ = env.step(np.zeros(3, dtype=np.float32))
        residuals.append(obs - env.unwrapped._get_obs())
    r = np.array(residuals)  # (100, 11)
    assert r.std() == pytest.approx(0.1, rel=0.05)
    assert abs(r.mean()) < 0.01  # 4 standard errors (0.1 / sqrt(1100) = 0.003)
    assert np.all(np.abs(r).max(axis=1) > 0.05)  # every step is noisy, not only some
    lag1 = np.corrcoef(r[:-1].ravel(), r[1:].ravel())[0, 1]
    assert abs(lag1) < 0.15  # a reused noise vector gives 1; independent draws give ~0 (s.e. 0.03)


def test_an_empty_fixed_dict_is_the_nominal_model_not_randomization():
    """``fixed={}`` names no shift: everything stays nominal and nothing is sampled (an earlier version read the
    empty dict as "no fixed mode" and randomized)."""
    env = DomainRandomization(gym.make("Hopper-v5"), fixed={})
    for seed in (0, 1):
        _, info = env.reset(seed=seed)
        for name in ("mass", "friction", "damping", "gain"):
            assert np.all(info["randomization"][name] == 1.0), (seed, name)
        assert info["randomization"]["obs_noise"] == 0.0 and info["randomization"]["action_delay"] == 0
