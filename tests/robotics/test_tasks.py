"""The robotics ids: Gymnasium's checker, seeded determinism, domain randomization's ranges and effect, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("mujoco")

import robotics  # noqa: E402
from robotics import RANDOMIZED, DomainRandomization, RandomizationConfig  # noqa: E402
from robotics.evaluation import normalized_score  # noqa: E402


@pytest.mark.parametrize("env_id", sorted(RANDOMIZED))
def test_every_robotics_id_passes_the_checker_and_is_seeded(env_id):
    from gymnasium.utils.env_checker import check_env

    env = gym.make(env_id)
    check_env(env, skip_render_check=True)
    assert type(env.unwrapped).__module__.startswith("gymnasium.envs.mujoco")  # set_state works on it

    def rollout(seed):
        e = gym.make(env_id)
        obs, info = e.reset(seed=seed)
        e.action_space.seed(seed)
        trace = [obs, info["randomization"]]
        for _ in range(20):
            obs, reward, terminated, truncated, info = e.step(e.action_space.sample())
            trace += [obs, reward]
        return trace

    def same(x, y):
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
        return np.array_equal(x, y)

    a, b, c = rollout(3), rollout(3), rollout(4)
    assert all(same(x, y) for x, y in zip(a, b))
    assert not same(a[1], c[1])  # another seed draws other physics


def test_samples_stay_in_their_ranges_and_reach_the_model():
    config = RandomizationConfig(mass=(0.5, 0.6), friction=(1.5, 2.0), damping=(0.9, 1.3), gain=(1.1, 1.2),
                                 obs_noise=(0.0, 0.1), action_delay=(0, 2))
    env = DomainRandomization(gym.make("Hopper-v5"), config)
    nominal = env.nominal_model()
    model = env.unwrapped.model
    seen = set()
    for seed in range(30):
        _, info = env.reset(seed=seed)
        p = info["randomization"]
        for name in ("mass", "friction", "damping", "gain", "obs_noise", "action_delay"):
            low, high = getattr(config, name)
            drawn = p[name][1:] if name == "mass" else p[name]  # the world body (0) keeps scale 1
            assert np.all((low <= drawn) & (drawn <= high)), (name, p[name])
        seen.add(p["action_delay"])
        np.testing.assert_allclose(model.body_mass, nominal["body_mass"] * p["mass"])
        np.testing.assert_allclose(model.body_inertia, nominal["body_inertia"] * p["mass"][:, None])
        np.testing.assert_allclose(model.geom_friction[:, 0], nominal["geom_friction"][:, 0] * p["friction"])
        np.testing.assert_allclose(model.actuator_gainprm[:, 0], nominal["actuator_gainprm"][:, 0] * p["gain"])
        np.testing.assert_allclose(model.dof_damping, nominal["dof_damping"] * p["damping"])
    assert seen == {0, 1, 2}


def _final_state(fixed, steps=200):
    env = DomainRandomization(gym.make("HalfCheetah-v5"), fixed=fixed)
    env.reset(seed=0)
    for t in range(steps):  # the same open-loop gait under every physics
        env.step(np.sin(np.arange(6) + 0.1 * t).astype(np.float32))
    return np.concatenate([env.unwrapped.data.qpos, env.unwrapped.data.qvel])


NOMINAL = {"mass": 1.0, "friction": 1.0, "damping": 1.0, "gain": 1.0}


@pytest.mark.parametrize("name", ["mass", "friction", "damping", "gain"])
def test_each_scale_changes_the_simulated_dynamics(name):
    base = _final_state(NOMINAL)
    np.testing.assert_array_equal(base, _final_state(NOMINAL))  # deterministic
    shifted = _final_state({**NOMINAL, name: 1.6})
    assert np.linalg.norm(shifted - base) > 0.1, name


def test_action_delay_and_observation_noise():
    actions = [np.full(3, v, dtype=np.float32) for v in (0.5, -0.5, 0.3, 0.1)]
    delayed = DomainRandomization(gym.make("Hopper-v5"), fixed={**NOMINAL, "action_delay": 2})
    plain = DomainRandomization(gym.make("Hopper-v5"), fixed=NOMINAL)
    delayed.reset(seed=1)
    plain.reset(seed=1)
    zero = np.zeros(3, dtype=np.float32)
    for a, b in zip(actions, [zero, zero, *actions[:2]]):  # a delay of 2 applies zeros, then a0, a1
        o1 = delayed.step(a)[0]
        o2 = plain.step(b)[0]
        np.testing.assert_array_equal(o1, o2)
    noisy = DomainRandomization(gym.make("Hopper-v5"), fixed={**NOMINAL, "obs_noise": 0.1})
    obs, _ = noisy.reset(seed=1)
    clean = noisy.unwrapped._get_obs()
    assert 0.02 < np.std(obs - clean) < 0.3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mass": (1.2, 0.8)}, r"mass=\(1.2, 0.8\) is not a valid range"),
        ({"friction": (-0.1, 1.0)}, r"friction=\(-0.1, 1.0\) is not a valid range; expected finite low <= high with low > 0"),
        ({"obs_noise": (-1.0, 0.0)}, r"obs_noise=\(-1.0, 0.0\) is not a valid range"),
        ({"action_delay": (0, 1.5)}, r"action_delay=\(0, 1.5\): expected whole numbers of steps"),
        ({"gain": 3}, r"gain=3: expected a \(low, high\) pair of numbers"),
    ],
)
def test_bad_ranges_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandomizationConfig(**kwargs)


def test_fixed_mode_samples_nothing():
    env = DomainRandomization(gym.make("Hopper-v5"), fixed={"mass": 1.3, "friction": 0.7})
    model = env.unwrapped.model
    expected = {"mass": [1.0] + [1.3] * (model.nbody - 1), "friction": [0.7] * model.ngeom,
                "damping": [1.0] * model.nv, "gain": [1.0] * model.nu, "obs_noise": 0.0, "action_delay": 0}
    for seed in range(5):
        draw = env.reset(seed=seed)[1]["randomization"]
        assert draw.keys() == expected.keys()
        for name, value in expected.items():
            np.testing.assert_array_equal(draw[name], value, err_msg=name)
    with pytest.raises(ValueError, match=r"fixed\['action_delay'\]=1.5: expected a whole number"):
        DomainRandomization(gym.make("Hopper-v5"), fixed={"action_delay": 1.5})


def test_bad_wrapping_is_refused():
    with pytest.raises(ValueError, match=r"fixed has unknown keys \['weight'\]"):
        DomainRandomization(gym.make("Hopper-v5"), fixed={"weight": 1.0})
    with pytest.raises(TypeError, match="needs a MuJoCo env"):
        DomainRandomization(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match=r"unknown env id 'Hopper-v9'; the robotics tasks are \['InvertedPendulum-v5'"):
        robotics.check_env_id("Hopper-v9")


def test_our_random_reference_return_is_what_the_protocol_measures():
    from robotics.evaluation import REFERENCE_RETURNS, random_return

    assert random_return("InvertedPendulum-v5").mean == pytest.approx(REFERENCE_RETURNS["InvertedPendulum-v5"][0], abs=0.005)


def test_normalized_score_follows_d4rl():
    assert normalized_score("Hopper-v5", -20.272305) == pytest.approx(0.0)
    assert normalized_score("robotics/Hopper-DR-v0", 3234.3) == pytest.approx(100.0)
    assert normalized_score("Reacher-v5", -5.0) is None


def test_an_evaluation_episode_renders_to_a_gif_or_skips_cleanly(tmp_path):
    import torch

    from robotics.render import record_gif

    class Still:  # any object with the policy protocol's act(obs, deterministic) -> .action
        def act(self, obs, deterministic=True):
            return type("Act", (), {"action": torch.zeros(len(obs), 1)})()

    policy = Still()
    path = record_gif(policy, "InvertedPendulum-v5", tmp_path / "episode.gif", max_steps=10, size=64)
    if path is None:
        pytest.skip("no GL backend on this machine (record_gif warned and returned None)")
    from PIL import Image

    with Image.open(path) as gif:
        assert gif.n_frames >= 2 and gif.size == (64, 64)
        gif.seek(1)
        assert np.asarray(gif.convert("RGB")).std() > 5  # a scene, not a blank frame


class _Still:  # any object with the policy protocol's act(obs, deterministic) -> .action
    def act(self, obs, deterministic=True):
        import torch

        return type("Act", (), {"action": torch.zeros(len(obs), 1)})()


def test_a_bug_in_the_first_frame_propagates_instead_of_skipping(tmp_path, monkeypatch):
    """Guards against record_gif turning any first-frame error into "cannot render here" (None + warning), which
    hid a NameError in the frame code and made the GIF test skip: only a missing GL backend may be skipped."""
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

    from robotics.render import record_gif

    def buggy_render(self):
        raise NameError("name 'frame' is not defined")

    monkeypatch.setattr(MujocoEnv, "render", buggy_render)
    with pytest.raises(NameError, match="name 'frame' is not defined"):
        record_gif(_Still(), "InvertedPendulum-v5", tmp_path / "episode.gif", max_steps=2, size=32)
    assert not (tmp_path / "episode.gif").exists()


@pytest.mark.parametrize("error", [
    ImportError("Cannot initialize a EGL device display. This likely means that your EGL driver does not support "
                "the PLATFORM_DEVICE extension"),
    RuntimeError("Failed to create OSMesa GL context."),
    "mujoco.FatalError",
], ids=["egl-display", "osmesa-context", "glfw-no-opengl"])
def test_a_missing_gl_backend_is_skipped_with_a_warning(tmp_path, monkeypatch, error):
    """The other side of the first-frame rule: what MuJoCo's EGL/OSMesa/GLFW backends raise on a machine
    without GL is a skip (None and a RuntimeWarning naming the reason), not a failure."""
    import mujoco
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

    from robotics.render import record_gif

    if error == "mujoco.FatalError":
        error = mujoco.FatalError("an OpenGL platform library has not been loaded into this process")

    def no_gl(self):
        raise error

    monkeypatch.setattr(MujocoEnv, "render", no_gl)
    with pytest.warns(RuntimeWarning, match=f"cannot render InvertedPendulum-v5 here \\({type(error).__name__}"):
        assert record_gif(_Still(), "InvertedPendulum-v5", tmp_path / "episode.gif", max_steps=2, size=32) is None


def test_make_env_adds_episode_statistics_and_action_clipping_and_nothing_else():
    """Normalisation lives with the agent (the policy's RunningNorm, the trainer's ReturnScaler), not in the env."""
    env = robotics.make_env("InvertedPendulum-v5")
    assert isinstance(env, gym.wrappers.ClipAction) and isinstance(env.env, gym.wrappers.RecordEpisodeStatistics)
    obs, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs, gym.make("InvertedPendulum-v5").reset(seed=3)[0])  # raw observations
    env.step(np.array([5.0]))
    assert env.unwrapped.data.ctrl[0] == 3.0  # clipped to the action bound
    with pytest.raises(TypeError, match="normalize_obs"):  # no such option: it reaches gymnasium.make and fails
        robotics.make_env("InvertedPendulum-v5", normalize_obs=True)
