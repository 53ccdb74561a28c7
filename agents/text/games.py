"""Evaluating a policy on a multi-turn game (``textenv/GuessNumber-v0`` or any :mod:`textenv.multiturn` env).

>>> summarize([{"solved": True, "turns": 2}, {"solved": False, "turns": 8}], [1.0, 0.0])["success"]
0.5
"""

from __future__ import annotations

import numpy as np
import torch


def summarize(infos: list[dict], returns) -> dict[str, float]:
    """Success rate, turns to solve (mean over solved episodes), turns per episode, mean return, of final infos."""
    solved = [bool(info.get("solved", False)) for info in infos]
    turns = [int(info.get("turns", 0)) for info in infos]
    won = [t for t, s in zip(turns, solved) if s]
    return {"episodes": len(infos), "success": float(np.mean(solved)) if infos else float("nan"),
            "turns_to_solve": float(np.mean(won)) if won else float("nan"),
            "turns": float(np.mean(turns)) if turns else float("nan"),
            "return": float(np.mean(returns)) if len(returns) else float("nan")}


def evaluate_game(policy, env_id: str = "textenv/GuessNumber-v0", episodes_per_instance: int = 4, seed: int = 0,
                  **env_kwargs) -> dict[str, float]:
    """Play every instance of the game ``episodes_per_instance`` times with ``policy`` (an
    :class:`agents.policies.lm.LMPolicy`, or a path it loads from), sampling at the policy's temperature with a
    seeded generator; returns :func:`summarize` of the episodes."""
    import gymnasium as gym

    from agents.core.rollout import run_episodes
    from agents.policies.lm import LMPolicy

    if not isinstance(policy, LMPolicy):
        policy = LMPolicy.from_pretrained(policy)
        env_kwargs.setdefault("model", policy.model.name_or_path)
    probe = gym.make_vec(env_id, num_envs=1, autoreset_mode="disabled", **env_kwargs)
    instances = probe.unwrapped.task.prompts
    if not instances:
        raise ValueError(f"{env_id}'s game names no instances; evaluate it with run_episodes and your own prompts")
    prompts = [key for key in instances for _ in range(episodes_per_instance)]
    env = gym.make_vec(env_id, num_envs=len(prompts), autoreset_mode="disabled", **env_kwargs)
    generator, policy.generator = policy.generator, torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            episodes = run_episodes(env, policy, seed=seed, options={"prompts": prompts})
    finally:
        policy.generator = generator
    return summarize(episodes.infos, episodes.returns.tolist())
