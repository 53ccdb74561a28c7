"""robotics.datasets: the Minari round trip array by array, rollouts and the recorder, metadata read by Minari
itself, bad input (missing ids, other spaces, damaged files, failed writes), and one tiny D4RL-style collection."""

from __future__ import annotations

import json
import socket
import time

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("minari")

import minari

from robotics.datasets import (
    DatasetError,
    Episode,
    EpisodeRecorder,
    dataset_id,
    dataset_info,
    load_dataset,
    local_dataset_ids,
    rollout_episodes,
    write_dataset,
)

ID = "robotics/pendulum/medium-v0"
REF_MIN, REF_MAX = -1200.0, -100.0  # dyadic-friendly: 100·(R + 1200)/1100


@pytest.fixture(autouse=True)
def root(tmp_path, monkeypatch):
    """Every test writes and reads under its own MINARI_DATASETS_PATH, never ~/.minari."""
    path = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a dataset operation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def controller(obs):
    """A deterministic Pendulum policy (a damping torque)."""
    return np.array([-0.5 * obs[2]], dtype=np.float32)


def pendulum_episodes(steps=17, limit=7, seed=3):
    """Episodes of 7, 7 and 3 steps: two cut by the time limit, the last by the size limit (all truncated)."""
    return rollout_episodes(gym.make("Pendulum-v1", max_episode_steps=limit), controller, steps, seed=seed)


def synthetic(T, offset, terminated=False, truncated=False):
    """``T`` steps whose observations are ``offset + 0, 1, 2, ...`` (each value unique across episodes),
    actions in Pendulum's bounds and dyadic rewards (their sums are exact in float32)."""
    obs = (offset + np.arange(3 * (T + 1), dtype=np.float32)).reshape(T + 1, 3) / 8
    actions = np.linspace(-2.0, 2.0, T, dtype=np.float32).reshape(T, 1)
    rewards = -np.arange(1, T + 1, dtype=np.float64) / 4
    terms, truncs = np.zeros(T, bool), np.zeros(T, bool)
    terms[-1], truncs[-1] = terminated, truncated
    return Episode(obs, actions, rewards, terms, truncs)


def all_episodes():
    return [*pendulum_episodes(), synthetic(3, 100, terminated=True), synthetic(2, 200, truncated=True),
            synthetic(1, 300, terminated=True), synthetic(4, 400, truncated=True)]


def write(episodes=None, id=ID, **kwargs):
    return write_dataset(id, episodes if episodes is not None else all_episodes(), "Pendulum-v1", REF_MIN, REF_MAX,
                         algorithm_name="test", description="a test dataset", **kwargs)


# ---------------------------------------------------------------- ids
def test_dataset_id_follows_minari_namespaces():
    assert dataset_id("Hopper-v5", "medium") == "robotics/hopper/medium-v0"
    assert dataset_id("InvertedPendulum-v5", "medium-expert", version=2) == "robotics/invertedpendulum/medium-expert-v2"
    with pytest.raises(ValueError, match="unknown dataset kind 'good'"):
        dataset_id("Hopper-v5", "good")


# ---------------------------------------------------------------- round trip
def test_round_trip_keeps_every_array_per_episode():
    episodes = all_episodes()
    assert [len(e) for e in episodes] == [7, 7, 3, 3, 2, 1, 4]
    write(episodes)
    data = load_dataset(ID, env="Pendulum-v1")

    assert len(data) == sum(len(e) for e in episodes) == 27 and data.num_episodes == 7
    np.testing.assert_array_equal(data.episode_starts, [0, 7, 14, 17, 20, 22, 23, 27])
    for k, ep in enumerate(episodes):
        s = data.episode(k)
        np.testing.assert_array_equal(data.observations[s], ep.observations[:-1])
        np.testing.assert_array_equal(data.next_observations[s], ep.observations[1:])  # never the next episode's
        np.testing.assert_array_equal(data.actions[s], ep.actions)
        np.testing.assert_array_equal(data.rewards[s], ep.rewards.astype(np.float32))
        np.testing.assert_array_equal(data.terminals[s], ep.terminations)
        np.testing.assert_array_equal(data.timeouts[s], ep.truncations)
    for name in ("observations", "next_observations", "actions", "rewards"):
        assert getattr(data, name).dtype == np.float32, name
    assert data.terminals.dtype == bool and data.timeouts.dtype == bool
    # terminals and timeouts stay apart: the MDP ended (episodes 3 and 5) vs cut (the rest, the size-limit one too)
    np.testing.assert_array_equal(np.flatnonzero(data.terminals), [19, 22])
    np.testing.assert_array_equal(np.flatnonzero(data.timeouts), [6, 13, 16, 21, 26])
    assert not (data.terminals & data.timeouts).any()
    # the synthetic episodes by hand: observation (T + 1)·3 values offset/8 onwards
    s = data.episode(3)
    np.testing.assert_array_equal(data.observations[s][0], np.array([100, 101, 102], np.float32) / 8)
    np.testing.assert_array_equal(data.next_observations[s][-1], np.array([109, 110, 111], np.float32) / 8)
    np.testing.assert_array_equal(data.observations[data.episode(5)], [np.array([300, 301, 302], np.float32) / 8])
    np.testing.assert_array_equal(data.next_observations[data.episode(5)], [np.array([303, 304, 305], np.float32) / 8])

    returns = data.episode_returns()
    # −(1 + 2 + 3)/4, −(1 + 2)/4, −1/4, −(1 + 2 + 3 + 4)/4
    np.testing.assert_array_equal(returns[3:], [-1.5, -0.75, -0.25, -2.5])
    np.testing.assert_allclose(returns[:3], [e.ret for e in episodes[:3]], rtol=1e-6)
    assert data.ref_min_score == REF_MIN and data.ref_max_score == REF_MAX
    # D4RL: 100·(R − min)/(max − min) = 100·(R + 1200)/1100
    assert data.normalized_score(-650.0) == pytest.approx(50.0)
    assert data.normalized_score(-100.0) == pytest.approx(100.0)
    np.testing.assert_allclose(data.normalized_score(returns), 100 * (returns + 1200) / 1100, rtol=1e-12)
    assert data.env_id == "Pendulum-v1" and data.dataset_id == ID
    assert data.observation_space == gym.make("Pendulum-v1").observation_space
    assert data.action_space == gym.make("Pendulum-v1").action_space


def test_a_terminated_episode_stays_a_terminal_even_when_the_size_limit_cuts_it():
    class Countdown(gym.Env):
        """Terminates after 3 steps; observation = steps left."""

        observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.left = 3
            return np.array([self.left], np.float32), {}

        def step(self, action):
            self.left -= 1
            return np.array([self.left], np.float32), 1.0, self.left == 0, False, {}

    episodes = rollout_episodes(Countdown(), lambda obs: np.zeros(1, np.float32), steps=6)
    assert [len(e) for e in episodes] == [3, 3]
    for ep in episodes:  # cut and terminated at once: terminated, not truncated
        np.testing.assert_array_equal(ep.terminations, [False, False, True])
        np.testing.assert_array_equal(ep.truncations, [False, False, False])
    episodes = rollout_episodes(Countdown(), lambda obs: np.zeros(1, np.float32), steps=5)
    assert [len(e) for e in episodes] == [3, 2]
    np.testing.assert_array_equal(episodes[1].terminations, [False, False])
    np.testing.assert_array_equal(episodes[1].truncations, [False, True])


# ---------------------------------------------------------------- rollouts and the recorder
def test_rollout_gives_exactly_steps_transitions_and_is_seeded():
    for steps in (1, 7, 14, 17):
        episodes = pendulum_episodes(steps=steps)
        assert sum(len(e) for e in episodes) == steps
        assert all(len(e.observations) == len(e) + 1 for e in episodes)
        assert episodes[-1].truncations[-1] and not episodes[-1].terminations.any()
        assert all(not e.truncations[:-1].any() for e in episodes)
    assert [len(e) for e in pendulum_episodes(steps=14)] == [7, 7]  # no empty episode after an exact cut

    env = gym.make("Pendulum-v1", max_episode_steps=7)
    a = rollout_episodes(env, controller, 17, seed=3)
    b = rollout_episodes(env, controller, 17, seed=3)
    c = rollout_episodes(env, controller, 17, seed=4)
    for x, y in zip(a, b):
        for name in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
    assert not np.array_equal(a[0].observations, c[0].observations)
    # episode k starts from reset(seed=seed + k)
    assert [e.seed for e in a] == [3, 4, 5]
    np.testing.assert_array_equal(a[1].observations[0], gym.make("Pendulum-v1").reset(seed=4)[0])
    # the rewards are the env's: replaying the stored actions from the same reset gives them back
    replay = gym.make("Pendulum-v1")
    obs, _ = replay.reset(seed=5)
    for t, action in enumerate(a[2].actions):
        obs, reward, *_ = replay.step(action)
        np.testing.assert_array_equal(obs, a[2].observations[t + 1])
        assert reward == a[2].rewards[t]


def test_rollout_clips_actions_to_the_bounds_and_refuses_no_steps():
    env = gym.make("Pendulum-v1", max_episode_steps=5)
    episodes = rollout_episodes(env, lambda obs: np.array([5.0]), 3)
    np.testing.assert_array_equal(episodes[0].actions, [[2.0]] * 3)
    assert episodes[0].actions.dtype == np.float32
    with pytest.raises(ValueError, match="steps=0"):
        rollout_episodes(env, controller, 0)


def test_recorder_records_what_passes_through():
    recorder = EpisodeRecorder(gym.make("Pendulum-v1", max_episode_steps=5))
    rng = np.random.default_rng(0)
    manual = []
    for k in range(3):
        obs, _ = recorder.reset(seed=10 + k)
        frames, actions, rewards, flags = [obs], [], [], []
        for _ in range(5 if k < 2 else 3):  # the third episode is left unfinished
            action = rng.uniform(-2, 2, size=1).astype(np.float32)
            obs, reward, terminated, truncated, _ = recorder.step(action)
            frames.append(obs)
            actions.append(action.copy())
            rewards.append(reward)
            flags.append((terminated, truncated))
            action[:] = 99.0  # mutating the caller's array afterwards must not change the record
        manual.append((frames, actions, rewards, flags))

    assert len(recorder.episodes) == 2  # an unfinished episode is not recorded
    for ep, (frames, actions, rewards, flags) in zip(recorder.episodes, manual):
        np.testing.assert_array_equal(ep.observations, np.stack(frames))
        np.testing.assert_array_equal(ep.actions, np.stack(actions))
        np.testing.assert_array_equal(ep.rewards, rewards)
        np.testing.assert_array_equal(ep.terminations, [f[0] for f in flags])
        np.testing.assert_array_equal(ep.truncations, [f[1] for f in flags])
        assert ep.truncations[-1] and len(ep) == 5

    shared: list[Episode] = []
    EpisodeRecorder(gym.make("Pendulum-v1"), shared)
    recorder = EpisodeRecorder(gym.make("Pendulum-v1", max_episode_steps=2), shared)
    recorder.reset(seed=0)
    recorder.step(np.zeros(1, np.float32))
    recorder.step(np.zeros(1, np.float32))
    assert len(shared) == 1 and recorder.episodes is shared  # records into the list it was given


# ---------------------------------------------------------------- metadata and Minari's own API
def test_minari_reads_the_dataset_and_its_reference_scores(root):
    write(extra_metadata={"note": "hello"})
    dataset = minari.load_dataset(ID)
    assert dataset.total_episodes == 7 and dataset.total_steps == 27
    assert dataset.storage.metadata["ref_min_score"] == REF_MIN
    assert dataset.storage.metadata["ref_max_score"] == REF_MAX
    first = next(dataset.iterate_episodes())
    np.testing.assert_array_equal(first.observations, pendulum_episodes()[0].observations)
    assert ID in minari.list_local_datasets()
    assert local_dataset_ids() == [ID]

    info = dataset_info(ID)
    assert info["id"] == ID and info["env_id"] == "Pendulum-v1"
    assert info["steps"] == 27 and info["episodes"] == 7
    returns = load_dataset(ID).episode_returns()
    assert info["mean_return"] == pytest.approx(returns.mean()) and info["max_return"] == -0.25
    assert info["normalized_mean"] == pytest.approx(100 * (returns.mean() + 1200) / 1100)
    assert info["ref_min_score"] == REF_MIN and info["ref_max_score"] == REF_MAX
    assert info["note"] == "hello" and info["size_mb"] > 0
    assert json.loads((root / ID / "data" / "textenv.json").read_text()) == {"note": "hello"}


def test_local_ids_span_namespaces_and_skip_hidden_folders(root):
    assert local_dataset_ids() == []  # the root does not even exist yet
    write(id="robotics/pendulum/random-v0")
    write(id="other/pendulum/expert-v1")
    stray = root / ".tmp-1-2" / "robotics" / "pendulum" / "expert-v0" / "data"
    stray.mkdir(parents=True)
    (stray / "metadata.json").write_text("{}")
    assert local_dataset_ids() == ["other/pendulum/expert-v1", "robotics/pendulum/random-v0"]


# ---------------------------------------------------------------- bad input
def test_missing_id_lists_the_local_ones_without_the_network(no_network):
    tick = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="local datasets: none"):
        load_dataset(ID)
    write(id="robotics/pendulum/random-v0")
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(ID)
    assert repr(ID) in str(err.value) and "['robotics/pendulum/random-v0']" in str(err.value)
    assert "MINARI_DATASETS_PATH" in str(err.value)
    with pytest.raises(FileNotFoundError):
        dataset_info(ID)
    assert time.perf_counter() - tick < 5.0  # no download attempt, no retries


def test_other_spaces_are_refused_naming_both():
    write()
    pendulum, cartpole = gym.make("Pendulum-v1"), gym.make("CartPole-v1")
    with pytest.raises(DatasetError) as err:
        load_dataset(ID, env="CartPole-v1")
    assert str(pendulum.observation_space) in str(err.value) and str(cartpole.observation_space) in str(err.value)
    assert ID in str(err.value)

    data = load_dataset(ID, env=pendulum)  # the same env as an instance passes
    wider = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    with pytest.raises(DatasetError, match="observation space") as err:
        data.check_env(wider, pendulum.action_space)
    assert str(wider) in str(err.value) and str(pendulum.observation_space) in str(err.value)
    stronger = gym.spaces.Box(-3.0, 3.0, (1,), np.float32)  # same shape, other bounds
    with pytest.raises(DatasetError, match="action space") as err:
        data.check_env(pendulum.observation_space, stronger)
    assert str(stronger) in str(err.value) and str(pendulum.action_space) in str(err.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_file_is_a_dataset_error_naming_the_id(root, damage):
    write()
    main = root / ID / "data" / "main_data.hdf5"
    raw = main.read_bytes()
    main.write_bytes(b"this is not HDF5 " * 64 if damage == "garbage" else raw[: len(raw) // 2])
    with pytest.raises(DatasetError) as err:
        load_dataset(ID)
    assert repr(ID) in str(err.value) and "collect it again" in str(err.value)


def test_write_refuses_bad_input_and_an_existing_id(root):
    with pytest.raises(ValueError, match="no episodes"):
        write([])
    with pytest.raises(ValueError, match="must exceed"):
        write_dataset(ID, all_episodes(), "Pendulum-v1", 1.0, 1.0, algorithm_name="t", description="d")
    write()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write(pendulum_episodes(steps=5))
    assert len(load_dataset(ID)) == 27  # untouched


def test_overwrite_replaces_the_dataset_and_leaves_nothing_behind(root):
    write()
    path = write(pendulum_episodes(steps=5), overwrite=True)
    assert path == root / ID
    data = load_dataset(ID)
    assert len(data) == 5 and data.num_episodes == 1
    np.testing.assert_array_equal(data.observations, pendulum_episodes(steps=5)[0].observations[:-1])
    assert sorted(p.name for p in root.iterdir()) == ["robotics"]  # no .tmp-* root left
    assert sorted(p.name for p in (root / "robotics" / "pendulum").iterdir()) == ["medium-v0"]  # no .old copy
    assert local_dataset_ids() == [ID]


def test_a_failed_write_leaves_no_dataset_and_no_temporary_root(root, monkeypatch):
    real = minari.create_dataset_from_buffers

    def crash_after_writing(*args, **kwargs):  # the files are half there when it fails
        real(*args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", crash_after_writing)
    with pytest.raises(OSError, match="disk full"):
        write()
    assert not (root / ID).exists()
    assert list(root.iterdir()) == []  # no .tmp-* folder
    assert local_dataset_ids() == []

    # an overwrite that fails keeps the old dataset whole
    monkeypatch.setattr(minari, "create_dataset_from_buffers", real)
    write()
    monkeypatch.setattr(minari, "create_dataset_from_buffers", crash_after_writing)
    with pytest.raises(OSError, match="disk full"):
        write(pendulum_episodes(steps=5), overwrite=True)
    assert len(load_dataset(ID)) == 27
    assert sorted(p.name for p in root.iterdir()) == ["robotics"]


# ---------------------------------------------------------------- D4RL-style collection
def test_collect_writes_the_five_datasets_and_skips_them_afterwards(tmp_path):
    pytest.importorskip("mujoco")
    from agents.offline.collect import CollectConfig, collect_datasets

    # 16 PPO iterations of 2048 steps: InvertedPendulum's training return passes the medium target
    # (5.23 + (1000 − 5.23)/3 ≈ 337) after about 11 of them (4096 steps reach about 11)
    config = CollectConfig(env_id="InvertedPendulum-v5", steps=500, train_steps=32768)
    summaries = collect_datasets(config, tmp_path / "run", progress=False)
    ids = {kind: dataset_id("InvertedPendulum-v5", kind) for kind in config.kinds}
    assert set(summaries) == set(ids.values())
    assert sorted(local_dataset_ids()) == sorted(ids.values())
    data = {kind: load_dataset(i, env="InvertedPendulum-v5") for kind, i in ids.items()}

    for kind in ("random", "medium", "expert"):
        assert len(data[kind]) == 500, kind
        assert data[kind].timeouts[-1] or data[kind].terminals[-1]
    assert len(data["medium-expert"]) == len(data["medium"]) + len(data["expert"]) == 1000
    assert data["medium-expert"].num_episodes == data["medium"].num_episodes + data["expert"].num_episodes
    np.testing.assert_array_equal(data["medium-expert"].observations[:500], data["medium"].observations)
    np.testing.assert_array_equal(data["medium-expert"].observations[500:], data["expert"].observations)
    for d in data.values():
        assert d.ref_min_score == 5.23 and d.ref_max_score == 1000.0
        assert np.abs(d.actions).max() <= 3.0  # applied (clipped) actions, in InvertedPendulum's bounds
    assert data["random"].episode_returns().mean() < 20 < data["medium"].episode_returns().mean()

    # medium-replay: the finished episodes of training until the medium iteration, raw rewards and observations
    replay, medium = data["medium-replay"], summaries[ids["medium"]]
    iteration = medium["iteration"]
    assert medium["training_return"] >= medium["target_return"] == pytest.approx(5.23 + (1000 - 5.23) / 3)
    assert (iteration - 1) * 2048 - 1000 < len(replay) <= iteration * 2048
    assert summaries[ids["medium-replay"]]["episodes"] == replay.num_episodes > 10
    assert set(np.unique(replay.rewards)) <= {0.0, 1.0}  # the env's reward, not PPO's normalised one
    assert replay.terminals.sum() > 0  # early training falls over: terminals recorded as such
    returns = replay.episode_returns()
    assert returns[-10:].mean() > returns[:10].mean()  # the episodes are in training order
    assert (tmp_path / "run" / "ppo" / "medium_policy.pt").is_file()
    info = json.loads((tmp_path / "datasets" / ids["medium-replay"] / "data" / "textenv.json").read_text())
    assert info["kind"] == "medium-replay" and info["ppo_train_steps"] == 32768

    tick = time.perf_counter()
    again = collect_datasets(config, tmp_path / "run2", progress=False)
    assert again == {i: {"skipped": "exists"} for i in ids.values()}
    assert time.perf_counter() - tick < 5.0 and not (tmp_path / "run2").exists()  # no training at all
    assert len(load_dataset(ids["medium-replay"])) == len(replay)


def test_an_env_id_that_is_an_import_path_is_refused(root):
    """Guards against a crafted dataset whose metadata names its env as ``module:Env``: ``gym.make`` would import
    that module (code chosen by the dataset) when the env is made for evaluation. A dataset is data, never code."""
    write()
    [metadata] = [p for p in (root / ID).rglob("metadata.json")]
    record = json.loads(metadata.read_text())
    spec = json.loads(record["env_spec"])
    spec["id"] = "some_module:Env-v0"
    record["env_spec"] = json.dumps(spec)
    metadata.write_text(json.dumps(record))
    with pytest.raises(DatasetError, match=r"'some_module:Env-v0'.*data, never code"):
        load_dataset(ID)


def test_robotics_never_imports_textenv_or_agents():
    """Guards against ``robotics.datasets`` importing ``textenv`` for a version string (robotics and textenv never
    import each other): the version comes from the installed distribution's metadata."""
    import ast
    from importlib.metadata import version
    from pathlib import Path

    import robotics

    for path in sorted(Path(robotics.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] in ("textenv", "agents")], f"{path.name}: {names}"
    from robotics.datasets import _package_version

    assert _package_version() == version("textenv")
