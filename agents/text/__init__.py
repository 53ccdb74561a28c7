"""Text algorithms on the token-level env: PPO (:mod:`~agents.text.ppo`), REINFORCE/RLOO/GRPO
(:mod:`~agents.text.pg`), SFT and DPO/IPO (:mod:`~agents.text.sft`, :mod:`~agents.text.dpo`, sharing
:mod:`~agents.text.supervised`), best-of-N and evaluation (:mod:`~agents.text.evaluation`) and the end-to-end
RLHF pipeline (:mod:`~agents.text.pipeline`, ``textenv rlhf``)."""

from agents.text.dpo import DPOConfig, train_dpo
from agents.text.evaluation import best_of_n
from agents.text.pg import PGConfig, train_pg
from agents.text.ppo import PPOConfig, train_ppo
from agents.text.sft import SFTConfig, train_sft

__all__ = ["DPOConfig", "PGConfig", "PPOConfig", "SFTConfig", "best_of_n", "train_dpo", "train_pg", "train_ppo",
           "train_sft"]
