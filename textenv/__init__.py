"""textenv: text generation by a language model as a token-level Gymnasium environment.

Importing it registers ``textenv/Sentiment-v0`` and ``textenv/Bandit-v0``.
"""

from textenv.bandit import BanditEnv
from textenv.env import TextGenerationEnv
from textenv.kl import KLController, KLShaping, KLShapingVector, kl_controller, kl_estimate, supply_policy_logprobs
from textenv.lm import IncrementalLM, load_causal_lm, load_tokenizer
from textenv.registration import register_envs
from textenv.rewards import HFRewardModel, Reward, RewardOutput, as_reward
from textenv.task import TextTask, load_prompts
from textenv.vector_env import TextGenerationVectorEnv

__version__ = "0.2.0"

__all__ = [
    "BanditEnv",
    "HFRewardModel",
    "IncrementalLM",
    "KLController",
    "KLShaping",
    "KLShapingVector",
    "Reward",
    "RewardOutput",
    "TextGenerationEnv",
    "TextGenerationVectorEnv",
    "TextTask",
    "as_reward",
    "kl_controller",
    "kl_estimate",
    "load_causal_lm",
    "load_prompts",
    "load_tokenizer",
    "supply_policy_logprobs",
]

register_envs()
