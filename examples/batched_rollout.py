"""The batched env with KL shaping: 16 completions per step, the policy's own KV cache, exact per-token KL.

Shows: ``gymnasium.make_vec`` on a text env, a sampler that hands its log-probs to the KL wrapper (no second
forward of the policy), and what finished episodes report: the proxy reward model's score (the reward) and gold
sentiment (reported beside it, never rewarded). The policy here is the base LM sampled at
temperature 1.3, so its KL to the reference (the base LM at temperature 1) is positive.

    python examples/batched_rollout.py
"""

import gymnasium as gym
import numpy as np
import torch

import textenv  # noqa: F401  (registers the ids)
from agents import collect_episodes
from textenv import world
from textenv.lm import load_causal_lm


def main():
    torch.set_num_threads(1)
    env = gym.make_vec("textenv/Sentiment-v1", num_envs=16, max_new_tokens=24, kl_coef=0.1, kl_estimator="k3")
    episodes = collect_episodes(env, load_causal_lm(world.lm_path()), n_episodes=64, temperature=1.3, seed=0)
    print(f"{len(episodes)} episodes, {episodes.tokens} tokens")
    # scores: the env's reward model (the built-in learned proxy), which the return is made of;
    # gold: the world's programmatic gold sentiment, reported beside it and never part of the reward
    print(f"mean proxy score {np.mean(episodes.scores):+.3f}, mean gold sentiment {np.mean(episodes.gold):+.3f}, "
          f"mean return (proxy score − β·KL) {np.mean(episodes.returns):+.3f}")
    for p, c in list(zip(episodes.prompts, episodes.completions))[:4]:
        print(f"  {p} |{c}")


if __name__ == "__main__":
    main()
