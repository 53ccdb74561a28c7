"""Reward modelling: preference data, Bradley-Terry training, evaluation.

| what | where |
|---|---|
| the preference JSONL format, loading, K-wise expansion, generation with noisy gold labels | :mod:`textenv.rm.data` |
| the Bradley-Terry loss, :class:`RewardModelConfig`, :func:`train_reward_model` (checkpoints, resume) | :mod:`textenv.rm.train` |
| held-out accuracy, accuracy vs gold, calibration, length bias, the report plot | :mod:`textenv.rm.evaluate` |

The trained model is a plain ``AutoModelForSequenceClassification`` directory: pass it to an env as
``reward_model=PATH`` (:class:`textenv.rewards.HFRewardModel` applies its stored normalisation).
"""

from textenv.rm.data import (
    LabelStats,
    PreferenceRecord,
    bradley_terry_rank,
    expand_pairs,
    generate_preferences,
    label_stats,
    load_preferences,
    parse_record,
    ranking_pairs,
    write_preferences,
)
from textenv.rm.evaluate import evaluate_reward_model, plot_report
from textenv.rm.train import BTLoss, RewardModelConfig, bradley_terry_loss, train_reward_model

__all__ = [
    "BTLoss",
    "LabelStats",
    "PreferenceRecord",
    "RewardModelConfig",
    "bradley_terry_loss",
    "bradley_terry_rank",
    "evaluate_reward_model",
    "expand_pairs",
    "generate_preferences",
    "label_stats",
    "load_preferences",
    "parse_record",
    "plot_report",
    "ranking_pairs",
    "train_reward_model",
    "write_preferences",
]
