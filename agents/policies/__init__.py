"""Policies: the protocol (:mod:`~agents.policies.base`), MLP actor-critics (:mod:`~agents.policies.mlp`), the LM
policy (:mod:`~agents.policies.lm`) with its KV-cache sampler (:mod:`~agents.policies.sampler`), and
Stable-Baselines3 glue (:mod:`~agents.policies.sb3`, needs ``textenv[sb3]``; not imported here)."""

from agents.policies.base import Act, Evaluation, Policy
from agents.policies.lm import LMPolicy
from agents.policies.mlp import MLPCategoricalPolicy, MLPGaussianPolicy, make_mlp_policy
from agents.policies.sampler import Episodes, LMSampler, collect_episodes

__all__ = ["Act", "Episodes", "Evaluation", "LMPolicy", "LMSampler", "MLPCategoricalPolicy", "MLPGaussianPolicy",
           "Policy", "collect_episodes", "make_mlp_policy"]
