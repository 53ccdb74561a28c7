"""An ``env.step`` loop over text generation with your own reward function.

Shows: plugging a plain Python callable in as the reward model, stepping the single env token by token with
the built-in LM as the policy, and reading the reward terms from ``info``. Runs in seconds on a CPU.

    python examples/custom_reward.py
"""

import gymnasium as gym
import torch

import textenv
from textenv import world


def exclamation_and_brevity(prompts, completions):
    """Reward terms: +1 for mentioning 'great', and -0.05 per word."""
    return {
        "great": [float("great" in c.split()) for c in completions],
        "brevity": [-0.05 * len(c.split()) for c in completions],
    }


def main():
    torch.manual_seed(0)
    policy = textenv.load_causal_lm(world.lm_path())
    env = gym.make("textenv/Sentiment-v1", reward_model=exclamation_and_brevity, max_new_tokens=24)
    for episode in range(4):
        obs, info = env.reset(seed=episode)
        ids = env.unwrapped.prompt_token_ids()
        done, ret = False, 0.0
        while not done:
            with torch.no_grad():  # the simplest policy: the base LM re-reading the prefix
                logits = policy(torch.tensor([ids])).logits[0, -1]
            action = int(torch.multinomial(torch.softmax(logits, -1), 1))
            obs, reward, terminated, truncated, info = env.step(action)
            ids.append(action)
            ret += reward
            done = terminated or truncated
        print(f"{info['prompt']!r} →{info['completion']!r}")
        print(f"   return {ret:+.2f} = great {info['reward_great']:+.2f} + brevity {info['reward_brevity']:+.2f}"
              f"  ({'at the token cap' if info['capped'] else 'EOS'} after {info['num_tokens']} tokens)")


if __name__ == "__main__":
    main()
