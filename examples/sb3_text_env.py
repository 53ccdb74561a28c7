"""Stable-Baselines3 PPO as a black-box agent on the text env, with KL shaping in ``"reference"`` mode.

Shows: ``PPO("MultiInputPolicy", ...)`` on ``textenv/Sentiment-v1`` with the token-embedding features extractor
of :mod:`agents.policies.sb3`, and the black-box form of KL-regularised RL: the env adds ``β·log π_ref(a|s)`` to every
token's reward and PPO adds the entropy bonus ``ent_coef=β``. That approximates ``E[R] − β·KL(π‖π_ref)``; it is
not exactly it: the KL objective needs ``β·H(π(·|s_t))`` inside the return (soft RL), while SB3 adds each visited
state's entropy to its loss, beside discounted (γ = 0.99) and normalised advantages, so even with R = 0 the
policy it converges to on multi-token episodes can differ from π_ref (see :mod:`textenv.kl`).
Before and after a small training budget it prints, over the same evaluation prompts, the proxy reward
(``info["score"]``, PPO's reward besides the KL term), the gold sentiment (``info["reward_gold"]``, never seen by
PPO), the summed KL term ``β·Σ log π_ref`` and the completion length, with standard errors.

What to expect: little. The policy is a fresh bag-of-embeddings network over 2,048 tokens, not a language model;
it starts uniform over the vocabulary, far from the reference, and this budget moves its numbers by about the
size of their standard errors. Read the proxy with care: uniformly random token strings already score about
+0.7 on it, above the base LM's own 8-token samples (about +0.2); the proxy was trained on grammatical reviews,
so gibberish is outside its data, and gold is the check. Real RLHF starts the policy from the reference LM;
SB3 is here to show that the env is a plain Gymnasium env that a black-box agent trains on.

    python examples/sb3_text_env.py     # 1–4 minutes on one CPU thread (75 s idle, 205 s beside another job), no download

It runs on one thread (``torch.set_num_threads(1)``): these networks are too small to gain from more.
"""

import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO

import textenv  # noqa: F401  (registers the ids)
from agents.policies.sb3 import sb3_policy_kwargs

BETA = 0.05  # KL coefficient β of the env, and PPO's entropy bonus (the approximation above)
TOTAL_STEPS = 32_768  # tokens of training (64 rollouts of 512)
MAX_NEW_TOKENS = 8
EVAL_EPISODES = 128


def make_env():
    return gym.make("textenv/Sentiment-v1", max_new_tokens=MAX_NEW_TOKENS, kl_coef=BETA, kl_mode="reference")


def evaluate(model, env) -> dict[str, float]:
    """Mean proxy score, gold sentiment, summed KL term and length of completions sampled from the policy."""
    rows = []
    for i in range(EVAL_EPISODES):
        obs, _ = env.reset(seed=10_000 + i)  # the same prompts before and after training
        kl_term, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=False)
            obs, _, terminated, truncated, info = env.step(action)
            kl_term += info["reward_kl"]
            done = terminated or truncated  # only to stop the loop; SB3 keeps them apart when it trains
        rows.append((info["score"], info["reward_gold"], kl_term, info["num_tokens"]))
        if i < 3:
            print(f"    {info['prompt']} |{info['completion']}")
    rows = np.array(rows)  # (episodes, 4)
    (proxy, gold, kl_term, length), (se_proxy, se_gold, *_) = rows.mean(0), rows.std(0) / np.sqrt(len(rows))
    print(
        f"  proxy {proxy:+.3f} ± {se_proxy:.3f}   gold {gold:+.3f} ± {se_gold:.3f}   "
        f"β·Σ log π_ref {kl_term:+.3f}   length {length:.2f} tokens   (± one standard error)"
    )
    return {"proxy": proxy, "gold": gold, "kl_term": kl_term, "length": length}


def main():
    torch.set_num_threads(1)
    env, eval_env = make_env(), make_env()
    model = PPO(
        "MultiInputPolicy", env, policy_kwargs=sb3_policy_kwargs(embed_dim=64), ent_coef=BETA,
        n_steps=512, batch_size=128, learning_rate=1e-3, seed=0, device="cpu",
    )
    print(f"before training ({EVAL_EPISODES} sampled completions; first three shown):")
    before = evaluate(model, eval_env)
    start = time.perf_counter()
    model.learn(TOTAL_STEPS)
    print(f"trained PPO for {TOTAL_STEPS} tokens in {time.perf_counter() - start:.0f} s; after training:")
    after = evaluate(model, eval_env)
    print("change: " + "   ".join(f"{k} {after[k] - before[k]:+.3f}" for k in before))


if __name__ == "__main__":
    main()
