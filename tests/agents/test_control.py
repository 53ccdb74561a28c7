"""PPO and REINFORCE on control tasks with the same core as the text agents; the Gaussian policy's maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents import PGConfig, train_pg
from agents.control import ControlPPOConfig, ReturnScaler, train_control_ppo
from agents.core.run import from_safe, to_safe
from agents.policies.mlp import (
    MLPGaussianPolicy,
    RunningNorm,
    gaussian_log_prob,
    gaussian_log_prob_of_noise,
    make_mlp_policy,
)


def test_gaussian_log_prob_and_entropy_match_torch_distributions():
    policy = MLPGaussianPolicy(spaces.Box(-1, 1, (4,)), spaces.Box(-1, 1, (2,)), log_std_init=-0.3)
    obs, actions = torch.randn(6, 4), torch.randn(6, 2)
    out = policy.evaluate({"obs": obs, "actions": actions})
    dist = torch.distributions.Normal(policy.actor(obs), policy.log_std.exp())
    torch.testing.assert_close(out.logprob, dist.log_prob(actions).sum(-1))
    torch.testing.assert_close(out.entropy, dist.entropy().sum(-1))
    act = policy.act(obs.numpy())
    torch.testing.assert_close(act.logprob, policy.evaluate({"obs": obs, "actions": act.action}).logprob.detach())


def test_gaussian_log_prob_is_normal_log_prob_summed_over_the_last_axis():
    torch.manual_seed(0)
    x, mean, log_std = torch.randn(5, 3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(x).sum(-1)  # (5, 3)
    out = gaussian_log_prob(x, mean, log_std)
    assert out.shape == (5, 3)
    torch.testing.assert_close(out, ref)
    eps = (x - mean) / log_std.exp()  # the noise of a reparameterised sample gives the same density
    torch.testing.assert_close(gaussian_log_prob_of_noise(eps, log_std), ref)


def test_running_norm_matches_numpy_over_batches():
    data = np.random.default_rng(0).normal(3.0, 2.0, size=(300, 5))
    norm = RunningNorm((5,))
    for chunk in np.split(data, [7, 100, 250]):
        norm.update(torch.as_tensor(chunk))
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-6)
    np.testing.assert_allclose(norm.var.numpy(), data.var(0), rtol=1e-4)


def test_return_scaler_divides_by_the_std_of_discounted_returns():
    scaler = ReturnScaler(num_envs=1, gamma=0.0)  # γ = 0: the "return" is the reward itself
    rewards = torch.full((50, 1), 4.0)
    rewards[::2] = -4.0
    scaled = scaler(rewards, torch.zeros(50, 1, dtype=torch.bool))
    assert scaled[-10:].abs().max() == pytest.approx(1.0, abs=0.05)  # ±4 over a std of about 4


def test_return_scaler_discounts_and_resets_at_episode_ends():
    scaler = ReturnScaler(num_envs=1, gamma=0.5)
    scaler(torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([[False], [True], [False]]))
    assert scaler.ret.tolist() == [4.0]  # 1, then 0.5·1 + 2 = 2.5 (episode ends: reset), then 4


def test_return_scaler_statistics_are_those_of_every_return_seen_plus_a_1e4_prior():
    """The std after each step is that of all discounted returns so far (all envs) pooled with SB3's and
    Gymnasium's prior: a pseudo-count of 1e-4 at mean 0, variance 1."""
    gamma, rng = 0.5, np.random.default_rng(0)
    rewards = torch.as_tensor(rng.normal(2.0, 3.0, (6, 2)))  # (T, N), float64
    done = torch.as_tensor(rng.random((6, 2)) < 0.3)
    scaled = ReturnScaler(num_envs=2, gamma=gamma)(rewards, done)
    ret, seen = np.zeros(2), []
    for t in range(6):
        ret = gamma * ret + rewards[t].numpy()
        seen += ret.tolist()
        x, prior = np.array(seen), 1e-4
        n = len(x) + prior
        mean = x.sum() / n
        var = (prior * (1.0 + mean**2) + ((x - mean) ** 2).sum()) / n
        torch.testing.assert_close(scaled[t], rewards[t] / np.sqrt(var + 1e-8), rtol=1e-12, atol=0)
        ret[done[t].numpy()] = 0.0


def test_return_scaler_resumed_from_its_saved_state_continues_exactly(tmp_path):
    rng = np.random.default_rng(1)
    chunks = [(torch.as_tensor(rng.normal(0, 5, (8, 3)), dtype=torch.float32), torch.as_tensor(rng.random((8, 3)) < 0.1))
              for _ in range(3)]
    whole = ReturnScaler(num_envs=3, gamma=0.9)
    expected = [whole(r, d) for r, d in chunks]
    first = ReturnScaler(num_envs=3, gamma=0.9)
    first(*chunks[0])
    torch.save(to_safe({"scaler": first.state_dict()}), tmp_path / "state.pt")  # as agents.core.run.Run saves it
    resumed = ReturnScaler(num_envs=3, gamma=0.9)
    resumed.load_state_dict(from_safe(torch.load(tmp_path / "state.pt", weights_only=True))["scaler"])
    for (r, d), want in zip(chunks[1:], expected[1:]):
        assert torch.equal(resumed(r, d), want)


def test_mlp_policies_refuse_what_they_cannot_handle():
    with pytest.raises(TypeError, match="1-D Box action space"):
        MLPGaussianPolicy(spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2, 2)))
    with pytest.raises(TypeError, match="Box observation space, got Dict"):
        make_mlp_policy(spaces.Dict({"x": spaces.Box(-1, 1, (3,))}), spaces.Box(-1, 1, (2,)))
    with pytest.raises(TypeError, match="no MLP policy for action space"):
        make_mlp_policy(spaces.Box(-1, 1, (3,)), spaces.MultiBinary(3))


def test_control_config_errors():
    with pytest.raises(ValueError, match=r"unknown env id 'Nope-v0'; the robotics tasks are"):
        ControlPPOConfig(env_id="Nope-v0")
    with pytest.raises(ValueError, match=r"batch_size=4096 is larger than a rollout"):
        ControlPPOConfig(n_steps=1024, batch_size=4096)
    with pytest.raises(ValueError, match=r"gamma=1.5 is out of range"):
        ControlPPOConfig(gamma=1.5)


def test_reinforce_learns_cartpole(tmp_path):
    config = PGConfig(env_id="CartPole-v1", estimator="reinforce", prompts_per_iter=1, group_size=16, iterations=30,
                      lr=1e-2, kl_coef=0.0, seed=0)
    rows = train_pg(config, tmp_path, progress=False).rows
    assert rows[0]["return"] < 40  # random play: about 22 steps
    assert np.mean([r["return"] for r in rows[-5:]]) > 200  # measured: 500 (the cap) from iteration 25


@pytest.mark.slow
def test_ppo_solves_inverted_pendulum(tmp_path):
    pytest.importorskip("mujoco")
    from robotics.evaluation import evaluate_policy

    config = ControlPPOConfig(env_id="InvertedPendulum-v5", total_steps=30_720, n_steps=1024, seed=0)
    result = train_control_ppo(config, tmp_path, progress=False)
    assert evaluate_policy(result.policy, "InvertedPendulum-v5", episodes=10, seed=0).mean >= 950  # measured 1000
    assert result.rows[0]["episode_return"] < 100  # the untrained policy falls within a few dozen steps
    assert (tmp_path / "policy.pt").exists() and (tmp_path / "metrics.csv").exists()


def test_control_ppo_resumes_and_is_deterministic(tmp_path):
    pytest.importorskip("mujoco")
    config = ControlPPOConfig(env_id="InvertedPendulum-v5", total_steps=1024, n_steps=256, batch_size=64,
                              normalize_obs=True, normalize_reward=True, checkpoint_every=2, seed=1)
    a = train_control_ppo(config, tmp_path / "a", progress=False).rows
    b = train_control_ppo(config, tmp_path / "b", progress=False).rows
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ("time_s", "steps_per_s")} for r in rows]  # noqa: E731
    assert drop(a) == drop(b)
    more = ControlPPOConfig(**{**config.__dict__, "total_steps": 2048})
    resumed = train_control_ppo(more, tmp_path / "a", progress=False)
    assert [r["iteration"] for r in resumed.rows] == list(range(1, 9))
    saved = torch.load(tmp_path / "a" / "policy.pt")
    assert saved["norm.count"] > 2000  # observation statistics travel with the policy
