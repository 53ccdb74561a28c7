"""Agents that train on textenv (and, with the same core, robotics) envs: policies, rollouts, advantages, losses.

| algorithm | config | train with |
|---|---|---|
| PPO (LM, adaptive KL, ptx, value warm-up) | :class:`PPOConfig` | :func:`train_ppo` |
| REINFORCE / RLOO / GRPO | :class:`PGConfig` (``estimator=``) | :func:`train_pg` |
| SFT | :class:`agents.text.SFTConfig` | :func:`agents.text.train_sft` |
| DPO / IPO | :class:`agents.text.DPOConfig` | :func:`agents.text.train_dpo` |
| best-of-N | — | :func:`agents.text.best_of_n` |
| PPO on control tasks | :class:`agents.control.ControlPPOConfig` | :func:`agents.control.train_control_ppo` |
| BC, TD3+BC, CQL, IQL, Decision Transformer (offline) | :mod:`agents.offline` | :func:`agents.offline.train_offline` |
| IQL offline → online | :class:`agents.offline.IQLConfig` | :func:`agents.offline.finetune_online` |

The house, imports running one way (each folder imports only those above it):

```
agents/policies/  the policy protocol, MLP and LM policies, the KV-cache sampler, SB3 glue
agents/core/      advantages, losses, the rollout, the PPO update, the on-policy loop, run directories
agents/text/      PPO, REINFORCE/RLOO/GRPO (and DAPO, Dr. GRPO, GSPO, CISPO), SFT, DPO, best-of-N, evaluation, RLHF
agents/control/   PPO for MuJoCo control
agents/offline/   BC, TD3+BC, CQL, IQL, Decision Transformer; datasets; offline-to-online
agents/cli/       the `textenv` command, the benchmark, the throughput harness
```

The module paths of the flat layout before 0.2 (``agents.sft``, ``agents.lm_policy``, ...) still import, with a
``DeprecationWarning`` naming the new path.
"""

from agents._moved import install as _install_moved
from agents.core.advantages import discounted_returns, gae, group_advantages, whiten
from agents.core.losses import dpo_loss, masked_mean, ppo_loss
from agents.core.onpolicy import OnPolicyConfig, TrainResult
from agents.core.rollout import EpisodeBatch, StepBatch, collect_steps, run_episodes, start_rollout
from agents.core.update import TrainingDiverged
from agents.policies import Act, Episodes, Evaluation, LMPolicy, LMSampler, MLPCategoricalPolicy, Policy
from agents.policies import collect_episodes
from agents.policies.lm import LoRASettings
from agents.text.pg import PGConfig, train_pg
from agents.text.ppo import PPOConfig, train_ppo

__all__ = [
    "Act",
    "EpisodeBatch",
    "Episodes",
    "Evaluation",
    "LMPolicy",
    "LMSampler",
    "LoRASettings",
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

_install_moved()
