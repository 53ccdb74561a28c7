"""The A/B bandit, solved by REINFORCE with a group baseline: the policy-gradient "hello world".

Shows: the same trainer that fine-tunes language models (``agents.train_pg``) on a one-step Gymnasium env with
an MLP policy; P(A) climbing from 0.5 to ~1. Runs in a few seconds on a CPU.

    python examples/bandit_policy_gradient.py
"""

import torch

from agents import PGConfig, train_pg

config = PGConfig(env_id="textenv/Bandit-v0", estimator="reinforce", iterations=30, prompts_per_iter=4, group_size=8,
                  lr=1e-2, kl_coef=0.0, seed=0)
result = train_pg(config, "runs/examples/bandit", resume=False, progress=False)
for row in result.rows[::5] + [result.rows[-1]]:
    print(f"iteration {row['iteration']:3d}  mean reward {row['return']:+.3f}")
print(f"P(A) after training: {float(result.policy.probs(torch.zeros(1, 1))[0, 0]):.4f}  (A pays +1, B pays -1)")
