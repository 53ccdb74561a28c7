"""Stable-Baselines3 as a black-box agent: PPO learns the bandit, and runs on the text env with the token extractor."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import textenv  # noqa: F401  (registers the ids)

pytest.importorskip("stable_baselines3")
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.preprocessing import preprocess_obs

from agents.policies.sb3 import TokenEmbeddingExtractor, sb3_policy_kwargs

BETA = 0.05


def _prob_a(model) -> float:
    obs = torch.zeros(1, 1)  # the bandit's only observation
    return model.policy.get_distribution(obs).distribution.probs[0, 0].item()


def test_ppo_learns_the_bandit():
    env = gym.make("textenv/Bandit-v0")
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, learning_rate=3e-3, seed=0, device="cpu")
    assert _prob_a(model) == pytest.approx(0.5, abs=0.02)  # untrained: both actions equally likely
    model.learn(2048)
    assert _prob_a(model) > 0.95


def test_ppo_runs_on_the_text_env_with_token_embeddings():
    env = gym.make("textenv/Sentiment-v0", max_new_tokens=8, kl_coef=BETA, kl_mode="reference")
    check_env(env)  # SB3's own spec check, through the KL wrapper
    model = PPO(
        "MultiInputPolicy", env, n_steps=32, batch_size=32, n_epochs=2, ent_coef=BETA, seed=0, device="cpu",
        policy_kwargs=sb3_policy_kwargs(embed_dim=16),
    )
    extractor = model.policy.features_extractor
    assert isinstance(extractor, TokenEmbeddingExtractor) and isinstance(extractor.embed, torch.nn.Embedding)
    vocab, length = env.action_space.n, env.observation_space["input_ids"].shape[0]
    assert extractor.embed.num_embeddings == vocab and extractor.features_dim == 2 * 16
    n_params = sum(p.numel() for p in extractor.parameters())
    one_hot_first_layer = vocab * length * 64  # a one-hot (V·L,) input into SB3's default first layer of 64
    assert n_params == vocab * 16 and n_params * 100 < one_hot_first_layer

    before = extractor.embed.weight.detach().clone()
    model.learn(64)
    assert not torch.equal(before, extractor.embed.weight)  # the embedding is trained, not frozen

    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert np.shape(action) == () and env.action_space.contains(int(action))
    _, reward, _, _, info = env.step(action)
    assert info["kl_mode"] == "reference" and np.isfinite(reward)


def test_extractor_reads_ids_unscaled_and_pools_real_tokens():
    space = spaces.Dict(
        {"input_ids": spaces.Box(0, 9, (4,), np.int64), "attention_mask": spaces.Box(0, 1, (4,), np.int64)}
    )
    extractor = TokenEmbeddingExtractor(space, embed_dim=3)
    with torch.no_grad():
        extractor.embed.weight.copy_(torch.arange(30, dtype=torch.float32).view(10, 3))  # row v = [3v, 3v+1, 3v+2]
    raw = {"input_ids": torch.tensor([[2, 7, 5, 0]]), "attention_mask": torch.tensor([[1, 1, 0, 0]])}  # int64, as buffered
    obs = preprocess_obs(raw, space)  # what SB3's policy does before the extractor: float32, not divided by 255
    assert obs["input_ids"].dtype == torch.float32 and obs["input_ids"].max() == 7
    with torch.no_grad():
        features = extractor(obs)  # (1, 6): mean of rows 2 and 7, then row 7 (the last real token)
    np.testing.assert_allclose(features[0].numpy(), [13.5, 14.5, 15.5, 21.0, 22.0, 23.0])


@pytest.mark.parametrize(
    "space",
    [
        spaces.Box(0, 9, (4,), np.int64),
        spaces.Dict({"tokens": spaces.Box(0, 9, (4,), np.int64), "attention_mask": spaces.Box(0, 1, (4,), np.int64)}),
    ],
    ids=["not-a-dict", "wrong-keys"],
)
def test_extractor_refuses_other_observation_spaces(space):
    with pytest.raises(ValueError, match=r"keys \('input_ids', 'attention_mask'\)"):
        TokenEmbeddingExtractor(space)
