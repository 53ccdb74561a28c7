import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import textenv  # noqa: F401
from textenv.kl import KLController, kl_estimate


def test_estimators_match_hand_computed_values():
    # π(a) = 0.5, π_ref(a) = 0.25  →  r = log 2
    lp, lr = torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))
    r = math.log(2)
    assert kl_estimate(lp, lr, "k1").item() == pytest.approx(0.693147, abs=1e-6)
    assert kl_estimate(lp, lr, "k2").item() == pytest.approx(0.5 * r * r, abs=1e-6)  # 0.240227
    assert kl_estimate(lp, lr, "k3").item() == pytest.approx(0.5 - 1 + r, abs=1e-6)  # 0.193147
    # full: π = (0.5, 0.5), π_ref = (0.25, 0.75): 0.5·log2 + 0.5·log(2/3) = 0.143841
    p, q = torch.tensor([0.5, 0.5]).log(), torch.tensor([0.25, 0.75]).log()
    assert kl_estimate(None, None, "full", p, q).item() == pytest.approx(0.143841, abs=1e-6)
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(lp, lr, "k4")


def test_k1_and_k3_are_unbiased_for_the_full_kl():
    torch.manual_seed(0)
    p = torch.log_softmax(torch.randn(20), -1)
    q = torch.log_softmax(torch.randn(20), -1)
    a = torch.multinomial(p.exp(), 200_000, replacement=True)
    exact = kl_estimate(None, None, "full", p, q).item()
    for est in ("k1", "k3"):
        assert kl_estimate(p[a], q[a], est).mean().item() == pytest.approx(exact, rel=0.03)


def test_adaptive_controller_matches_hand_computed_updates():
    c = KLController(0.1, target=6.0, horizon=10_000)
    # KL 9 → error clip(9/6 − 1) = 0.2 → β·(1 + 0.2·256/10000) = 0.1·1.00512
    assert c.update(9.0, 256) == pytest.approx(0.100512)
    # KL 5.4 → error −0.1 → ·(1 − 0.1·100/10000) = ·0.999
    assert c.update(5.4, 100) == pytest.approx(0.100512 * 0.999)
    state = c.state_dict()
    restored = KLController(1.0)
    restored.load_state_dict(state)
    assert restored == c
    fixed = KLController(0.1)
    assert fixed.update(100.0, 1000) == 0.1
    for bad in (dict(value=-1.0), dict(value=float("nan")), dict(value=0.1, target=0.0), dict(value=0.1, horizon=0)):
        with pytest.raises(ValueError):
            KLController(**bad)


def zero_reward(prompts, completions):  # no reward model to load: these tests are about the KL terms
    return [0.0] * len(prompts)


def _ref_logprobs(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)


def test_policy_mode_kl_is_exact_against_a_full_forward(base_lm):
    env = gym.make("textenv/Sentiment-v1", kl_coef=0.1, kl_estimator="k1", kl_mode="policy", max_new_tokens=8, reward_model=zero_reward)
    obs, info = env.reset(seed=3)
    assert info["kl_mode"] == "policy"
    supply = env.get_wrapper_attr("supply_policy_logprobs")
    ids = env.unwrapped.prompt_token_ids()
    uniform = torch.full((env.action_space.n,), -math.log(env.action_space.n))
    rng = np.random.default_rng(0)
    done = False
    while not done:
        ref = _ref_logprobs(base_lm, ids)
        action = int(rng.integers(env.action_space.n))
        supply(uniform)
        obs, reward, terminated, truncated, info = env.step(action)
        expected_kl = uniform[action].item() - ref[action].item()
        assert info["kl"] == pytest.approx(expected_kl, abs=1e-4)
        assert info["reward_kl"] == pytest.approx(-0.1 * expected_kl, abs=1e-5)
        ids.append(action)
        done = terminated or truncated


def test_full_estimator_is_zero_when_the_policy_is_the_reference(base_lm):
    env = gym.make("textenv/Sentiment-v1", kl_coef=0.1, kl_estimator="full", max_new_tokens=6, reward_model=zero_reward)
    env.reset(seed=0)
    supply = env.get_wrapper_attr("supply_policy_logprobs")
    ids = env.unwrapped.prompt_token_ids()
    for _ in range(6):
        lp = _ref_logprobs(base_lm, ids)
        action = int(lp.argmax())
        supply(lp)
        _, _, terminated, truncated, info = env.step(action)
        assert abs(info["kl"]) < 1e-4
        ids.append(action)
        if terminated or truncated:
            break


def test_reference_mode_adds_beta_times_reference_logprob(base_lm):
    env = gym.make("textenv/Sentiment-v1", kl_coef=0.2, kl_mode="reference", max_new_tokens=4, reward_model=zero_reward)
    _, info = env.reset(seed=1)
    assert info["kl_mode"] == "reference"
    ids = env.unwrapped.prompt_token_ids()
    for action in (5, 17, 300, 9):
        ref = _ref_logprobs(base_lm, ids)
        _, reward, terminated, truncated, info = env.step(action)
        assert reward == pytest.approx(0.2 * ref[action].item(), abs=1e-5)
        ids.append(action)


def test_policy_mode_without_supplied_logprobs_says_what_to_do():
    env = gym.make("textenv/Sentiment-v1", kl_coef=0.1, reward_model=zero_reward)
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="supply_policy_logprobs"):
        env.step(5)
    env.get_wrapper_attr("supply_policy_logprobs")(torch.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        env.step(5)


def test_adaptive_beta_moves_towards_target_and_kl_options_are_validated():
    env = gym.make("textenv/Sentiment-v1", kl_coef=0.1, kl_target=0.01, kl_horizon=10, max_new_tokens=4, reward_model=zero_reward)
    supply = env.get_wrapper_attr("supply_policy_logprobs")
    env.reset(seed=0)
    done = False
    while not done:
        supply(torch.tensor(0.0))  # log π(a) = 0: far more KL than the target
        _, _, terminated, truncated, info = env.step(7)
        done = terminated or truncated
    assert info["episode_kl"] > 0.01
    controller = env.get_wrapper_attr("controller")
    assert controller.value == 0.1  # β moves once per batch, when the agent ends it
    assert controller.end_batch() == pytest.approx(0.1 * (1 + 0.2 / 10))
    with pytest.raises(ValueError, match="kl_mode"):
        gym.make("textenv/Sentiment-v1", kl_coef=0.1, kl_mode="exact", reward_model=zero_reward)
    with pytest.raises(ValueError, match="kl_target"):
        gym.make("textenv/Sentiment-v1", kl_coef=0.1, kl_mode="reference", kl_target=1.0, reward_model=zero_reward)
    with pytest.raises(ValueError, match="kl_coef"):
        gym.make("textenv/Sentiment-v1", kl_coef=-0.1, reward_model=zero_reward)
