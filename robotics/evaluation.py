"""The evaluation protocol shared by training, the benchmarks and the examples.

N episodes, each reset with its own fixed seed (``seed * 1000 + k``), deterministic actions (the policy's
mean), raw environment returns; mean ± std, and a normalised score ``100·(R − R_random)/(R_expert − R_random)``
(D4RL's definition) where reference returns are known.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

# D4RL's reference returns (random and expert policies, measured on the -v2 envs; used here on -v5, whose rewards
# match for Hopper, HalfCheetah and Walker2d but not quite for Ant: orientation only) for the locomotion tasks, and ours for
# InvertedPendulum (``random_return("InvertedPendulum-v5")``: 5.23 over 100 seeded episodes; the expert is the
# 1000-step cap; a test recomputes the random value).
REFERENCE_RETURNS = {
    "Hopper-v5": (-20.272305, 3234.3),
    "HalfCheetah-v5": (-280.178953, 12135.0),
    "Walker2d-v5": (1.629008, 4592.3),
    "Ant-v5": (-325.6, 3879.7),
    "InvertedPendulum-v5": (5.23, 1000.0),
}


def normalized_score(env_id: str, episode_return: float) -> float | None:
    """D4RL's normalised score, or None when ``env_id`` has no reference returns.

    >>> normalized_score("InvertedPendulum-v5", 1000.0)
    100.0
    """
    base = env_id.split("/")[-1].replace("-DR-v0", "-v5")
    if base not in REFERENCE_RETURNS:
        return None
    low, high = REFERENCE_RETURNS[base]
    return 100.0 * (episode_return - low) / (high - low)


@dataclass
class EvalResult:
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))


def evaluate(act: Callable[[np.ndarray], np.ndarray], env_id: str, episodes: int = 10, seed: int = 0,
             make: Callable[[], gym.Env] | None = None) -> EvalResult:
    """Run ``act(obs) -> action`` for ``episodes`` seeded episodes of ``env_id`` (or of ``make()``).

    A stateful ``act`` (e.g. a Decision Transformer's, which keeps the episode's history and return-to-go) may
    have ``reset()``, called at every episode start, and ``observe(reward)``, called after every step.
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    env = make() if make is not None else gym.make(env_id)
    out = EvalResult()
    for k in range(episodes):
        obs, _ = env.reset(seed=seed * 1000 + k)
        if hasattr(act, "reset"):
            act.reset()
        done, total, length = False, 0.0, 0
        while not done:
            action = np.asarray(act(obs))
            if isinstance(env.action_space, gym.spaces.Box):
                action = np.clip(action, env.action_space.low, env.action_space.high)
            obs, reward, terminated, truncated, _ = env.step(action)
            if hasattr(act, "observe"):
                act.observe(float(reward))
            total, length, done = total + float(reward), length + 1, terminated or truncated
        out.returns.append(total)
        out.lengths.append(length)
    env.close()
    return out


def evaluate_policy(policy, env_id: str, episodes: int = 10, seed: int = 0, make=None) -> EvalResult:
    """:func:`evaluate` with an agents policy acting deterministically."""
    return evaluate(lambda obs: policy.act(np.asarray(obs)[None], deterministic=True).action[0].numpy(), env_id,
                    episodes, seed, make)


def random_return(env_id: str, episodes: int = 100, seed: int = 0) -> EvalResult:
    """Uniformly random actions (the action space seeded with ``seed``) under the same protocol: how a reference
    "random" return is measured."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    return evaluate(lambda obs: env.action_space.sample(), env_id, episodes, seed, make=lambda: env)
