"""DPO on the built-in preference pairs, then a gold win rate against the base LM on held-out prompts.

Shows: ``DPOConfig``/``train_dpo`` (no reward model, no sampling during training) and ``win_rate``. About a
minute on one CPU thread.

    python examples/dpo.py
"""

import torch

from agents import LMPolicy
from agents.text.dpo import DPOConfig, train_dpo
from agents.text.evaluation import eval_prompts, generate, win_rate
from textenv import world

torch.set_num_threads(1)
path = train_dpo(DPOConfig(max_pairs=8000, beta=0.1, lr=3e-4, seed=0), "runs/examples/dpo", resume=False)
base, dpo = LMPolicy.from_pretrained(world.lm_path()), LMPolicy.from_pretrained(path)
prompts = eval_prompts(256)
before, after = generate(base, prompts, seed=1), generate(dpo, prompts, reference=base, seed=1)
print(f"gold: base {before.summary()['gold']:+.3f}, DPO {after.summary()['gold']:+.3f}; KL to base {after.summary()['kl']:.2f}")
print("DPO vs base by gold on the same prompts:", win_rate(after.gold, before.gold))
