"""Agents that train on textenv (and, with the same core, robotics) envs: policies, rollouts, advantages, losses.

| algorithm | config | train with |
|---|---|---|
| PPO (LM, adaptive KL, ptx, value warm-up) | :class:`PPOConfig` | :func:`train_ppo` |
| REINFORCE / RLOO / GRPO | :class:`PGConfig` (``estimator=``) | :func:`train_pg` |
| SFT | :class:`agents.sft.SFTConfig` | :func:`agents.sft.train_sft` |
| DPO / IPO | :class:`agents.dpo.DPOConfig` | :func:`agents.dpo.train_dpo` |
| best-of-N | — | :func:`agents.evaluation.best_of_n` |
| PPO on control tasks | :class:`agents.control.ControlPPOConfig` | :func:`agents.control.train_control_ppo` |
| BC, TD3+BC, CQL, IQL, Decision Transformer (offline) | :mod:`agents.offline` | :func:`agents.offline.train_offline` |
| IQL offline → online | :class:`agents.offline.IQLConfig` | :func:`agents.offline.finetune_online` |

The pipeline (``textenv rlhf``) is :mod:`agents.pipeline`, the benchmark (``textenv bench``) :mod:`agents.bench`,
Stable-Baselines3 support :mod:`agents.sb3` (needs ``textenv[sb3]``).
"""

from agents.advantages import discounted_returns, gae, group_advantages, whiten
from agents.lm_policy import LMPolicy
from agents.losses import dpo_loss, masked_mean, ppo_loss
from agents.onpolicy import OnPolicyConfig, TrainResult
from agents.pg import PGConfig, train_pg
from agents.policy import Act, Evaluation, MLPCategoricalPolicy, Policy
from agents.ppo import PPOConfig, train_ppo
from agents.rollout import EpisodeBatch, StepBatch, collect_steps, run_episodes, start_rollout
from agents.sampler import Episodes, LMSampler, collect_episodes
from agents.update import TrainingDiverged

__all__ = [
    "Act",
    "EpisodeBatch",
    "Episodes",
    "Evaluation",
    "LMPolicy",
    "LMSampler",
    "MLPCategoricalPolicy",
    "OnPolicyConfig",
    "PGConfig",
    "PPOConfig",
    "Policy",
    "StepBatch",
    "TrainResult",
    "TrainingDiverged",
    "collect_episodes",
    "collect_steps",
    "discounted_returns",
    "dpo_loss",
    "gae",
    "group_advantages",
    "masked_mean",
    "ppo_loss",
    "run_episodes",
    "start_rollout",
    "train_pg",
    "train_ppo",
    "whiten",
]
