"""Rewards: one protocol, many implementations.

A reward is anything callable as ``reward(prompts, completions)`` returning one float per pair, or a mapping
``{term: floats}`` whose terms add up to the reward (each reported in the env's ``info`` as ``reward_<term>``).

| what | where |
|---|---|
| validation of any reward, ``as_reward`` (path / callable / object) | :mod:`textenv.rewards.protocol` |
| Hugging Face ``num_labels=1`` reward models, stored normalisation | :mod:`textenv.rewards.hf` |
| rule and verifiable rewards, length normalisation and penalties | :mod:`textenv.rewards.rules` |
| weighted multi-objective composites | :mod:`textenv.rewards.composite` |
| LLM-as-judge (pointwise rubric, pairwise in both orders) | :mod:`textenv.rewards.judge` |

Training reward models from preference data lives in :mod:`textenv.rm`.
"""

from textenv.rewards.composite import CompositeReward
from textenv.rewards.hf import HFRewardModel
from textenv.rewards.judge import PairwiseJudge, PointwiseJudge
from textenv.rewards.protocol import Reward, RewardFn, RewardOutput, as_reward
from textenv.rewards.rules import (
    ExactMatch,
    KeywordReward,
    LengthNormalized,
    LengthPenalty,
    LengthTarget,
    RegexReward,
)

__all__ = [
    "CompositeReward",
    "ExactMatch",
    "HFRewardModel",
    "KeywordReward",
    "LengthNormalized",
    "LengthPenalty",
    "LengthTarget",
    "PairwiseJudge",
    "PointwiseJudge",
    "RegexReward",
    "Reward",
    "RewardFn",
    "RewardOutput",
    "as_reward",
]
