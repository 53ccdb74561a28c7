"""PPO from human-feedback-style rewards on the token env: proxy reward up, gold reward up, KL bounded.

Shows: ``PPOConfig`` on ``textenv/Sentiment-v1`` (the built-in world's learned proxy reward model, KL shaping
against the base LM, gold sentiment reported beside the proxy), then an evaluation of base vs trained policy on
held-out prompts. About a minute on one CPU thread. For the whole SFT → preferences → reward model → PPO
pipeline run ``textenv rlhf``.

    python examples/ppo_rlhf.py
"""

import torch

from agents import LMPolicy, PPOConfig, train_ppo
from agents.text.evaluation import eval_prompts, generate
from agents.text.pipeline import plot_curves
from textenv import world

torch.set_num_threads(1)
config = PPOConfig(iterations=30, prompts_per_iter=64, lr=3e-4, kl_coef=0.05, seed=0)
result = train_ppo(config, "runs/examples/ppo", resume=False)
plot_curves(result.rows, "runs/examples/ppo/curves.png", "PPO on textenv/Sentiment-v1")

base = LMPolicy.from_pretrained(world.lm_path())
prompts = eval_prompts(256)
before, after = generate(base, prompts, seed=1), generate(result.policy, prompts, reference=base, seed=1)
for name, s in (("base LM", before.summary()), ("PPO", after.summary())):
    kl = f"KL to base {s['kl']:.2f}" if name == "PPO" else ""
    print(f"{name:8s} proxy {s['proxy']:+.3f}  gold {s['gold']:+.3f} ± {s['gold_sem']:.3f}  {kl}")
for i in range(4):
    print(f"  {prompts[i]} |{before.completions[i]}\n  {' ' * len(prompts[i])} |{after.completions[i]}")
print("curves: runs/examples/ppo/curves.png; TensorBoard: tensorboard --logdir runs/examples/ppo/tb")
