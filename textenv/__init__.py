"""textenv: text generation by a language model as a token-level Gymnasium environment.

Importing it registers ``textenv/Sentiment-v1`` (and ``-v0``), ``textenv/Arithmetic-v0`` (verifiable),
``textenv/GuessNumber-v0`` (multi-turn) and ``textenv/Bandit-v0``.
"""

from textenv.bandit import BanditEnv
from textenv.env import TextGenerationEnv
from textenv.kl import KLController, KLShaping, KLShapingVector, kl_controller, kl_estimate, supply_policy_logprobs
from textenv.lm import IncrementalLM, load_causal_lm, load_tokenizer
from textenv.multiturn import MultiTurnEnv, MultiTurnVectorEnv, Turn
from textenv.registration import register_envs
from textenv.rewards import HFRewardModel, Reward, RewardOutput, as_reward
from textenv.task import TextTask, load_prompts
from textenv.turn import TurnEnv
from textenv.vector_env import TextGenerationVectorEnv

__version__ = "0.2.0"

__all__ = [
    "BanditEnv",
    "HFRewardModel",
    "IncrementalLM",
    "KLController",
    "KLShaping",
    "KLShapingVector",
    "MultiTurnEnv",
    "MultiTurnVectorEnv",
    "Reward",
    "RewardOutput",
    "TextGenerationEnv",
    "TextGenerationVectorEnv",
    "TextTask",
    "Turn",
    "TurnEnv",
    "as_reward",
    "kl_controller",
    "kl_estimate",
    "load_causal_lm",
    "load_prompts",
    "load_tokenizer",
    "supply_policy_logprobs",
]

register_envs()
