"""Offline RL on datasets in Minari format, and offline-to-online fine-tuning.

| algorithm | config | notes |
|---|---|---|
| behaviour cloning | :class:`BCConfig` | deterministic tanh policy, MSE |
| TD3+BC | :class:`TD3BCConfig` | Fujimoto & Gu 2021 |
| CQL | :class:`CQLConfig` | SAC + CQL(H), importance-sampled |
| IQL | :class:`IQLConfig` | expectile value, advantage-weighted policy; fine-tunes online |
| Decision Transformer | :class:`DTConfig` | return-conditioned, context ``K`` |

``config.create(data)`` builds an algorithm (``update(batch)``, ``act(obs)``); :func:`train_offline` trains it
with metrics, evaluation and resumable checkpoints; :func:`finetune_online` continues an IQL agent online.
The datasets come from :mod:`robotics.datasets`; :mod:`agents.offline.collect` makes them (``textenv datasets
collect``). The losses are pure functions in :mod:`agents.offline.losses`.
"""

from agents.offline.algorithms import (
           BCConfig,
           CQLConfig,
           IQLConfig,
           OfflineConfig,
           TD3BCConfig,
)
from agents.offline.dt import DTConfig
from agents.offline.train import (
           FinetuneSettings,
           OfflineResult,
           finetune_online,
           train_offline,
)

ALGORITHMS: dict[str, type[OfflineConfig]] = {c.name: c for c in (BCConfig, TD3BCConfig, CQLConfig, IQLConfig, DTConfig)}

__all__ = ["ALGORITHMS", "BCConfig", "CQLConfig", "DTConfig", "FinetuneSettings", "IQLConfig", "OfflineConfig",
           "OfflineResult", "TD3BCConfig", "finetune_online", "train_offline"]
