"""``textenv.supply_policy_logprobs`` and ``textenv.kl_controller`` through Gymnasium's own wrappers, and the
hooks that end a KL batch: the on-policy loop and the Stable-Baselines3 callback."""

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import RecordEpisodeStatistics, TimeLimit
from gymnasium.wrappers.vector import RecordEpisodeStatistics as VectorRecordEpisodeStatistics

import textenv
from textenv.kl import _kl_wrapper

ID = "textenv/Sentiment-v1"


def zero_reward(prompts, completions):
    return [0.0] * len(prompts)


def _ref_logprob(env, action, row=0):
    return float(_kl_wrapper(env).ref.next_logprobs[row, action])


def test_single_env_under_gymnasium_wrappers():
    """Guards against the KL wrapper being unreachable under other wrappers (the README's ``get_wrapper_attr``
    does not exist on Gymnasium 1.4's vector wrappers): the public functions walk any stack."""
    inner = gym.make(ID, kl_coef=0.1, kl_target=2.0, max_new_tokens=3, reward_model=zero_reward)
    env = RecordEpisodeStatistics(TimeLimit(inner, max_episode_steps=10))
    assert textenv.kl_controller(env) is inner.get_wrapper_attr("controller")
    env.reset(seed=0)
    ref = _ref_logprob(env, 5)
    assert textenv.supply_policy_logprobs(env, torch.tensor(-1.0)) is True
    _, _, _, _, info = env.step(5)
    assert info["kl"] == pytest.approx(-1.0 - ref, abs=1e-5)


def test_batched_env_under_gymnasium_vector_wrappers():
    inner = gym.make_vec(ID, num_envs=2, kl_coef=0.1, max_new_tokens=2, reward_model=zero_reward)
    env = VectorRecordEpisodeStatistics(inner)
    assert not hasattr(env, "get_wrapper_attr")  # why the public functions exist
    assert textenv.kl_controller(env) is inner.controller
    env.reset(seed=0)
    refs = [_ref_logprob(env, 5, row) for row in range(2)]
    assert textenv.supply_policy_logprobs(env, torch.tensor([-1.0, -2.0])) is True
    _, _, _, _, info = env.step(np.array([5, 5]))
    np.testing.assert_allclose(info["kl"], [-1.0 - refs[0], -2.0 - refs[1]], atol=1e-5)
    textenv.supply_policy_logprobs(env, torch.tensor([-1.0, -2.0]))
    _, _, _, _, info = env.step(np.array([5, 5]))
    assert "episode" in info  # RecordEpisodeStatistics saw both episodes end


def test_sync_vector_env_of_single_kl_envs_splits_the_rows():
    """``gym.make_vec(..., vectorization_mode="sync")`` (and ``agents.core.rollout.as_vector_env``) holds one KL wrapper
    per sub-env: row i of the log-probs goes to sub-env i; one β for all of them does not exist."""
    env = gym.make_vec(ID, num_envs=2, vectorization_mode="sync", kl_coef=0.1, max_new_tokens=3, reward_model=zero_reward)
    env.reset(seed=0)
    refs = [float(_kl_wrapper(sub).ref.next_logprobs[0, 5]) for sub in env.envs]
    assert textenv.supply_policy_logprobs(env, torch.tensor([-1.0, -2.0])) is True
    _, _, _, _, info = env.step(np.array([5, 5]))
    np.testing.assert_allclose(info["kl"], [-1.0 - refs[0], -2.0 - refs[1]], atol=1e-5)
    with pytest.raises(ValueError, match="one row of log-probs per env"):
        textenv.supply_policy_logprobs(env, torch.tensor([-1.0, -2.0, -3.0]))
    with pytest.raises(ValueError, match="2 KL-shaped envs.*gym.make_vec"):
        textenv.kl_controller(env)
    from agents.core.rollout import as_vector_env

    single = gym.make(ID, kl_coef=0.1, max_new_tokens=3, reward_model=zero_reward)
    assert textenv.kl_controller(as_vector_env(single)) is single.get_wrapper_attr("controller")


def test_envs_without_policy_mode_kl_take_nothing():
    plain = gym.make(ID, max_new_tokens=3, reward_model=zero_reward)
    assert textenv.kl_controller(plain) is None
    assert textenv.supply_policy_logprobs(plain, torch.tensor(-1.0)) is False
    assert textenv.kl_controller(gym.make_vec("textenv/Bandit-v0", num_envs=2, vectorization_mode="sync")) is None
    reference = gym.make(ID, kl_coef=0.1, kl_mode="reference", max_new_tokens=3, reward_model=zero_reward)
    assert textenv.kl_controller(reference).value == 0.1
    assert textenv.supply_policy_logprobs(reference, torch.tensor(-1.0)) is False


def test_sb3_callback_ends_one_batch_for_all_sub_envs():
    """``agents.policies.sb3.KLBatchCallback`` pools the episodes of every sub-env of a DummyVecEnv into one update at the
    end of a rollout, and gives every sub-env that β."""
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.policies.sb3 import KLBatchCallback

    def make():
        return gym.make(ID, kl_coef=0.1, kl_target=1.0, kl_horizon=10, max_new_tokens=2, reward_model=zero_reward)

    venv = DummyVecEnv([make, make])
    callback = KLBatchCallback()
    callback.init_callback(SimpleNamespace(get_env=lambda: venv, logger=None))
    episode_kls = []
    for sub, logprob in zip(venv.envs, (-1.0, -6.0)):
        sub.reset(seed=0)
        done = False
        while not done:
            textenv.supply_policy_logprobs(sub, torch.tensor(logprob))
            _, _, terminated, truncated, info = sub.step(5)
            done = terminated or truncated
        episode_kls.append(info["episode_kl"])
    assert [c.value for c in callback.controllers] == [0.1, 0.1]
    callback.on_rollout_end()
    expected = 0.1 * (1 + np.clip(np.mean(episode_kls) - 1, -0.2, 0.2) * 2 / 10)
    assert [c.value for c in callback.controllers] == pytest.approx([expected, expected], abs=1e-12)
    assert all(c.pending == [] for c in callback.controllers)
    with pytest.raises(ValueError, match="no KL shaping"):
        KLBatchCallback().init_callback(SimpleNamespace(get_env=lambda: DummyVecEnv([lambda: gym.make("textenv/Bandit-v0")]),
                                                        logger=None))


def test_on_policy_loop_ends_one_batch_per_iteration_and_passes_its_temperature(tmp_path):
    """Guards against β moving inside a rollout (the first iteration must be shaped with the initial β, the
    second with one update from the first batch's mean KL) and against the env scoring the reference untempered."""
    from agents.core.onpolicy import make_env
    from agents.text.pg import PGConfig, train_pg

    config = PGConfig(iterations=2, prompts_per_iter=2, group_size=2, max_new_tokens=4, kl_coef=0.1, kl_target=0.5,
                      kl_horizon=8, epochs=1, minibatch_rows=0, temperature=0.7, checkpoint_every=2,
                      env_kwargs={"reward_model": zero_reward})
    assert _kl_wrapper(make_env(config, num_envs=1)).temperature == 0.7
    rows = train_pg(config, tmp_path, progress=False).rows
    assert rows[0]["beta"] == 0.1
    expected = 0.1 * (1 + np.clip(rows[0]["kl"] / 0.5 - 1, -0.2, 0.2) * 4 / 8)
    assert rows[1]["beta"] == pytest.approx(expected, rel=1e-6)
