"""Agents that train on textenv and robotics envs. This release: the LM sampler, the rollout benchmark, the CLI."""

from agents.sampler import Episodes, LMSampler, collect_episodes

__all__ = ["Episodes", "LMSampler", "collect_episodes"]
