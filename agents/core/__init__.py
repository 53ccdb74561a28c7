"""What every agent shares: advantages and losses (pure tensor maths), the rollout, the PPO update, the
on-policy training loop and the run directory (config, metrics, atomic checkpoints, resume).

Import direction: :mod:`agents.policies` ← :mod:`agents.core` ← :mod:`agents.text`, :mod:`agents.control`,
:mod:`agents.offline` ← :mod:`agents.cli`.
"""
