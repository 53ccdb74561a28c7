"""Text algorithms on the token-level env: PPO (:mod:`~agents.text.ppo`), REINFORCE/RLOO/GRPO
(:mod:`~agents.text.pg`), SFT and DPO/IPO (:mod:`~agents.text.sft`, :mod:`~agents.text.dpo`, sharing
:mod:`~agents.text.supervised`), best-of-N and evaluation (:mod:`~agents.text.evaluation`), accuracy and pass@k on verifiable tasks
(:mod:`~agents.text.verifiable`), success and turns on multi-turn games (:mod:`~agents.text.games`) and the
end-to-end RLHF pipeline (:mod:`~agents.text.pipeline`, ``textenv rlhf``)."""

from agents.text.dpo import DPOConfig, train_dpo
from agents.text.evaluation import best_of_n
from agents.text.games import evaluate_game
from agents.text.pg import PGConfig, train_pg
from agents.text.ppo import PPOConfig, train_ppo
from agents.text.sft import SFTConfig, train_sft
from agents.text.verifiable import evaluate_accuracy, pass_at_k

__all__ = ["DPOConfig", "PGConfig", "PPOConfig", "SFTConfig", "best_of_n", "evaluate_accuracy", "evaluate_game",
           "pass_at_k", "train_dpo", "train_pg", "train_ppo", "train_sft"]
