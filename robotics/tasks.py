"""The Gymnasium MuJoCo v5 tasks, their domain-randomized variants, and the standard wrappers.

| id | obs | action | episode | randomized variant |
|---|---|---|---|---|
| ``InvertedPendulum-v5`` | 4 | 1 | 1000 steps | ``robotics/InvertedPendulum-DR-v0`` |
| ``Reacher-v5`` | 10 | 2 | 50 steps | ``robotics/Reacher-DR-v0`` |
| ``Hopper-v5`` | 11 | 3 | 1000 steps | ``robotics/Hopper-DR-v0`` |
| ``HalfCheetah-v5`` | 17 | 6 | 1000 steps | ``robotics/HalfCheetah-DR-v0`` |
| ``Walker2d-v5`` | 17 | 6 | 1000 steps | ``robotics/Walker2d-DR-v0`` |
| ``Ant-v5`` | 105 | 8 | 1000 steps | ``robotics/Ant-DR-v0`` |

The MuJoCo tasks need the ``mujoco`` extra (``pip install "textenv[mujoco]"``). Importing :mod:`robotics`
registers the ``robotics/*-DR-v0`` ids: ``gymnasium.make("robotics/Hopper-DR-v0")`` is ``Hopper-v5`` inside a
:class:`robotics.randomization.DomainRandomization` with the default ranges (``config=``/``fixed=`` keyword
arguments override them); its ``unwrapped`` is the MuJoCo env itself, so ``set_state`` works.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym

from robotics.randomization import DomainRandomization, RandomizationConfig

TASKS = ("InvertedPendulum-v5", "Reacher-v5", "Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5")
RANDOMIZED = {f"robotics/{task.split('-')[0]}-DR-v0": task for task in TASKS}


def make_randomized(task: str, config: RandomizationConfig | dict | None = None, fixed: dict | None = None,
                    **kwargs) -> gym.Env:
    """``task`` (a MuJoCo id) inside :class:`DomainRandomization` (``config`` may be a dict of its ranges);
    ``kwargs`` go to ``gymnasium.make``."""
    return DomainRandomization(gym.make(task, **kwargs), config, fixed)


def register_tasks() -> None:
    """Register the ``robotics/*-DR-v0`` ids (idempotent)."""
    for env_id, task in RANDOMIZED.items():
        if env_id not in gym.registry:  # the inner gym.make(task) brings the task's own TimeLimit
            gym.register(id=env_id, entry_point="robotics.tasks:make_randomized", kwargs={"task": task})


def check_env_id(env_id: str) -> str:
    """``env_id`` if registered, else a ``ValueError`` listing the robotics ids (and the MuJoCo install hint)."""
    if env_id in gym.registry:
        return env_id
    from robotics.language import LANGUAGE_IDS

    known = [*TASKS, *RANDOMIZED, *LANGUAGE_IDS]
    raise ValueError(f"unknown env id {env_id!r}; the robotics tasks are {known} (MuJoCo ones need "
                     f"pip install \"textenv[mujoco]\", BabyAI ones \"textenv[babyai]\"), and any other registered "
                     f"Gymnasium id works")


def make_env(env_id: str, wrap: Callable[[gym.Env], gym.Env] | None = None, **kwargs) -> gym.Env:
    """``gymnasium.make(env_id, **kwargs)`` with the standard wrappers of continuous control, outermost last:

    ``RecordEpisodeStatistics`` (``info["episode"]`` with the raw return and length), then ``ClipAction`` for a
    ``Box`` action space (the policy's Gaussian samples are clipped to the action bounds). ``wrap`` (e.g. a
    recorder) goes around the bare env, inside both.

    Observation and reward normalisation are not env wrappers here: the trainer keeps them with the agent
    (``agents.policies.mlp.RunningNorm`` inside the saved policy, ``agents.control.ppo.ReturnScaler`` in the
    checkpoint), so a saved policy acts on raw observations and a resumed run keeps its statistics.
    """
    env = gym.make(check_env_id(env_id), **kwargs)
    if wrap is not None:
        env = wrap(env)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    if isinstance(env.action_space, gym.spaces.Box):
        env = gym.wrappers.ClipAction(env)
    return env
