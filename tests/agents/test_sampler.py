import gymnasium as gym
import numpy as np
import pytest
import torch

import textenv  # noqa: F401
from agents.policies.sampler import LMSampler, collect_episodes, sample_categorical


def test_inverse_cdf_sampling_matches_the_distribution():
    g = torch.Generator().manual_seed(0)
    logprobs = torch.log_softmax(torch.tensor([[2.0, 0.0, -1.0, -30.0, 1.0]]).repeat(40_000, 1), -1)
    draws = sample_categorical(logprobs, g)
    freq = torch.bincount(draws, minlength=5).double() / len(draws)
    np.testing.assert_allclose(freq.numpy(), logprobs[0].exp().double().numpy(), atol=0.01)
    assert freq[3] == 0  # a token of probability e^-30 is (practically) never drawn
    masked = torch.log_softmax(torch.tensor([[0.0, -float("inf"), 0.0]]).repeat(1000, 1), -1)
    assert 1 not in sample_categorical(masked, g).tolist()


def test_collect_episodes_is_deterministic_and_supplies_logprobs(base_lm):
    def run():
        env = gym.make_vec("textenv/Sentiment-v0", num_envs=4, max_new_tokens=12, kl_coef=0.1)
        return collect_episodes(env, base_lm, 10, seed=3, progress=False)

    a, b = run(), run()
    assert len(a) == 10 and a.completions == b.completions and a.returns == b.returns
    # the policy is its own reference: the exact KL term is ~0, so returns equal scores
    np.testing.assert_allclose(a.returns, a.scores, atol=1e-3)


def test_sampler_refuses_a_policy_with_another_vocabulary():
    from transformers import GPT2Config, GPT2LMHeadModel

    env = gym.make_vec("textenv/Sentiment-v0", num_envs=2)
    other = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=64, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="policy vocabulary 300 differs"):
        LMSampler(other, env)
