"""Entry points of the registered ids; ``import textenv`` registers them with Gymnasium.

| id | what | reward |
|---|---|---|
| ``textenv/Sentiment-v1`` | continue a review prompt of the built-in world; the token cap ends the episode as ``terminated`` | the learned proxy reward model (normalised); gold sentiment reported as ``info["reward_gold"]`` |
| ``textenv/Sentiment-v0`` | the same, with the cap's step ``truncated`` (kept for old runs; see the env's ``## Version History``) | the same |
| ``textenv/Bandit-v0`` | the two-action A/B bandit | A: +1, B: −1 |

Keyword arguments of ``gymnasium.make`` / ``make_vec`` for the text ids: ``model``, ``reward_model``,
``gold_reward`` (default: gold sentiment; None to skip), ``prompts``, ``max_new_tokens``, ``max_prompt_tokens``, ``stop_strings``, ``dense``, ``chat_template``, ``kl_coef`` (0 = no
KL shaping, and no reference model is loaded), ``kl_estimator``, ``kl_mode``, ``kl_target``, ``kl_horizon``,
``kl_temperature``, ``kl_timing`` (``"step"`` or ``"end"``: see :mod:`textenv.kl`), ``ref_model`` (a name, a
path or a loaded module), ``device``; ``render_mode`` (single env) and ``autoreset_mode`` (vector env).
Every value is checked at ``make`` (a bad one raises naming it and the allowed range).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from textenv.env import TextGenerationEnv
from textenv.kl import ESTIMATORS, MODES, TIMINGS, KLShaping, KLShapingVector
from textenv.task import TextTask, load_prompts
from textenv.vector_env import TextGenerationVectorEnv

_KL_ARGS = ("kl_estimator", "kl_mode", "kl_target", "kl_horizon", "kl_temperature", "kl_timing", "ref_model", "device")


_DEFAULT = object()


def _sentiment_task(model=None, reward_model=None, prompts=None, gold_reward=_DEFAULT, **task_kwargs) -> TextTask:
    from textenv import world

    return TextTask(
        model=world.lm_path() if model is None else model,
        reward_model=world.proxy_rm_path() if reward_model is None else reward_model,
        prompts=load_prompts(world.prompts_path(), split="train") if prompts is None else prompts,
        gold_reward=world.gold_sentiment if gold_reward is _DEFAULT else gold_reward,
        **task_kwargs,
    )


def _split_kl(kwargs: dict) -> tuple[float, dict]:
    kl_coef = kwargs.pop("kl_coef", 0.0)
    kl = {k: kwargs.pop(k) for k in _KL_ARGS if k in kwargs}
    if not isinstance(kl_coef, (int, float, np.integer, np.floating)) or isinstance(kl_coef, bool) or not (
        math.isfinite(kl_coef) and kl_coef >= 0
    ):
        raise ValueError(f"kl_coef={kl_coef!r} must be a finite number >= 0 (0: no KL shaping)")
    if kl.get("kl_estimator", ESTIMATORS[0]) not in ESTIMATORS:
        raise ValueError(f"kl_estimator={kl['kl_estimator']!r}; expected one of {ESTIMATORS}")
    if kl.get("kl_mode", MODES[0]) not in MODES:
        raise ValueError(f"kl_mode={kl['kl_mode']!r}; expected one of {MODES}")
    if kl.get("kl_timing", TIMINGS[0]) not in TIMINGS:
        raise ValueError(f"kl_timing={kl['kl_timing']!r}; expected one of {TIMINGS}")
    if kl.get("kl_target") is not None and not kl_coef > 0:
        raise ValueError("kl_target (adaptive β) needs an initial kl_coef > 0")
    return kl_coef, kl


def make_sentiment(render_mode: str | None = None, **kwargs) -> gym.Env:
    """``gymnasium.make("textenv/Sentiment-v1", **kwargs)`` (and ``-v0``, whose spec adds ``cap_flag="truncated"``)."""
    kl_coef, kl = _split_kl(kwargs)
    env = TextGenerationEnv(_sentiment_task(**kwargs), render_mode=render_mode)
    return KLShaping(env, kl_coef=kl_coef, **kl) if kl_coef > 0 else env


def make_sentiment_vector(num_envs: int = 1, autoreset_mode: str = "same_step", **kwargs) -> gym.vector.VectorEnv:
    """``gymnasium.make_vec("textenv/Sentiment-v1", num_envs=N, **kwargs)`` (and ``-v0``): the batched env."""
    kl_coef, kl = _split_kl(kwargs)
    env = TextGenerationVectorEnv(num_envs, _sentiment_task(**kwargs), autoreset_mode=autoreset_mode)
    return KLShapingVector(env, kl_coef=kl_coef, **kl) if kl_coef > 0 else env


def register_envs() -> None:
    if "textenv/Sentiment-v1" in gym.registry:
        return
    for version, cap_flag in (("v0", "truncated"), ("v1", "terminated")):  # v0: the cap truncates (Version History)
        gym.register(
            id=f"textenv/Sentiment-{version}",
            entry_point=make_sentiment,
            vector_entry_point=make_sentiment_vector,
            disable_env_checker=False,
            kwargs={"cap_flag": cap_flag},
        )
    gym.register(id="textenv/Bandit-v0", entry_point="textenv.bandit:BanditEnv")
