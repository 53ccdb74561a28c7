"""Entry points of the registered ids; ``import textenv`` registers them with Gymnasium.

| id | what | reward |
|---|---|---|
| ``textenv/Sentiment-v1`` | continue a review prompt of the built-in world; the token cap ends the episode as ``terminated`` | the learned proxy reward model (normalised); gold sentiment reported as ``info["reward_gold"]`` |
| ``textenv/Sentiment-v0`` | the same, with the cap's step ``truncated`` (kept for old runs; see the env's ``## Version History``) | the same |
| ``textenv/Arithmetic-v0`` | answer ``a+b=`` / ``a-b=`` (the arithmetic world, :mod:`textenv.world.arithmetic`): verifiable | 1 if the first integer of the completion is the answer, else 0 (``info["reward_correct"]``); the same correctness as ``info["reward_gold"]`` |
| ``textenv/GuessNumber-v0`` | multi-turn: guess a number in 1–16, the env answers higher/lower as tokens (:mod:`textenv.guess`, :mod:`textenv.multiturn`) | ``1 − 0.1·(turns − 1)`` on the solving turn, else 0; KL only in the loss |
| ``textenv/Bandit-v0`` | the two-action A/B bandit | A: +1, B: −1 |

Keyword arguments of ``gymnasium.make`` / ``make_vec`` for the text ids: ``model``, ``reward_model``,
``gold_reward`` (default: gold sentiment; None to skip), ``prompts``, ``max_new_tokens``, ``max_prompt_tokens``, ``stop_strings``, ``dense``, ``chat_template``, ``kl_coef`` (0 = no
KL shaping, and no reference model is loaded), ``kl_estimator``, ``kl_mode``, ``kl_target``, ``kl_horizon``,
``kl_temperature``, ``kl_timing`` (``"step"`` or ``"end"``: see :mod:`textenv.kl`), ``ref_model`` (a name, a
path or a loaded module), ``device``; ``render_mode`` (single env) and ``autoreset_mode`` (vector env).
``textenv/Arithmetic-v0`` takes the same (its ``model``: the arithmetic LM; ``prompts``: the train problems;
``reward_model``: correctness) and ``answers``, ``format_coef`` (see :func:`make_arithmetic`).
Every value is checked at ``make`` (a bad one raises naming it and the allowed range).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from textenv.env import TextGenerationEnv
from textenv.guess import make_guess_number, make_guess_number_vector
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


def _arithmetic_task(model=None, reward_model=None, prompts=None, gold_reward=_DEFAULT, answers=None,
                     format_coef: float = 0.0, max_new_tokens: int = 8, **task_kwargs) -> TextTask:
    from textenv.rewards import CompositeReward, ExactMatch, RegexReward
    from textenv.world import arithmetic

    if not isinstance(format_coef, (int, float, np.integer, np.floating)) or isinstance(format_coef, bool) or not (
        math.isfinite(format_coef) and format_coef >= 0
    ):
        raise ValueError(f"format_coef={format_coef!r} must be a finite number >= 0 (0: no format reward)")
    if answers is not None and not (isinstance(answers, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                                      for k, v in answers.items())):
        raise TypeError(f"answers must be a dict {{prompt: answer string}}, got {type(answers).__name__}")
    table = {}
    if prompts is None:  # the world's train problems, scored by the problems file's answers
        problems = arithmetic.problems_path()
        prompts = [r["prompt"] for r in arithmetic.load_problems(problems, split="train")]
        table = arithmetic.answer_key(problems)
    key = arithmetic.Answers({**table, **(answers or {})})
    for i, prompt in enumerate(load_prompts(prompts)):  # every prompt must have an answer, checked at make
        try:
            key(prompt)
        except ValueError as error:
            raise ValueError(f"prompts[{i}]: {error}; pass answers={{prompt: answer}} for other prompts") from None
    correct = ExactMatch(key, extract=arithmetic.ANSWER_PATTERN)
    if reward_model is None:
        terms, weights = {"correct": correct}, {}
        if format_coef > 0:
            terms["format"], weights["format"] = RegexReward(r"-?\d+", mode="fullmatch"), float(format_coef)
        reward_model = CompositeReward(terms, weights)
    return TextTask(
        model=arithmetic.lm_path() if model is None else model,
        reward_model=reward_model,
        prompts=prompts,
        gold_reward=correct if gold_reward is _DEFAULT else gold_reward,
        max_new_tokens=max_new_tokens,
        **task_kwargs,
    )


def make_arithmetic(render_mode: str | None = None, **kwargs) -> gym.Env:
    """``gymnasium.make("textenv/Arithmetic-v0", **kwargs)``: answer a sum or a difference, rewarded by correctness.

    ## Description
    A verifiable task on :class:`textenv.env.TextGenerationEnv`: an episode is the LM's answer to one problem
    ``a+b=`` or ``a-b=`` (``0 <= b <= a`` for differences, operands up to 99) of the arithmetic world
    (:mod:`textenv.world.arithmetic`), one character a step. Its default model, a 105k-parameter GPT-2, is
    partly right (on the 500 held-out problems: 49% greedy, 25% at temperature 1, a right answer among 8 samples
    for 72%), so there is something for RL to learn; the held-out problems (``split == "eval"`` of
    ``problems.jsonl``) are neither trained on by the LM nor drawn as prompts. :mod:`agents.text.verifiable`
    measures accuracy and pass@k.

    ## Action Space
    ``Discrete(17)``: EOS, pad, unknown, the digits, ``+``, ``-``, ``=`` and space (read from the model).

    ## Observation Space
    As the text env's: ``Dict(input_ids, attention_mask)``, each ``Box(int64)`` of length
    ``max_prompt_tokens + max_new_tokens``.

    ## Rewards
    | term | when | value |
    |---|---|---|
    | ``reward_correct`` | last step | 1 if the completion's first integer (``-?[0-9]+``) equals the answer, else 0 |
    | ``reward_format`` (``format_coef > 0``) | last step | ``format_coef`` if the completion is exactly one integer |
    | ``reward_gold`` (reported, not added) | last step | correctness as ``reward_correct``, whatever ``reward_model`` |

    A completion with no integer (garbage, or EOS at once) scores 0. Answers come from ``problems.jsonl``; a
    prompt outside it (``reset(options={"prompt": "123+456="})``) is solved by :func:`textenv.world.arithmetic.solve`.

    ## Starting State
    A prompt drawn uniformly from the world's train problems with the env's seeded RNG (``prompts=`` others).

    ## Episode End
    EOS terminates. The cap (``max_new_tokens``, default 8: an answer is at most 3 characters) terminates too
    (the env's ``-v1`` behaviour), and ``info["capped"]`` is True on that step only: it tells a completion cut at
    the cap (scored as it stands) from one the model ended itself.

    ## Arguments
    The text env's (this module's docstring), with these defaults and additions: ``model`` (the
    arithmetic LM), ``prompts`` (the train problems), ``reward_model`` (correctness, plus the format term),
    ``gold_reward`` (correctness; None to skip), ``max_new_tokens=8``, ``answers`` (``{prompt: answer}`` for
    prompts of your own that are not of the form ``a+b=``), ``format_coef`` (weight of the format term; 0: none).

    ## Version History
    * v0: initial version.
    """
    kl_coef, kl = _split_kl(kwargs)
    env = TextGenerationEnv(_arithmetic_task(**kwargs), render_mode=render_mode)
    return KLShaping(env, kl_coef=kl_coef, **kl) if kl_coef > 0 else env


def make_arithmetic_vector(num_envs: int = 1, autoreset_mode: str = "same_step", **kwargs) -> gym.vector.VectorEnv:
    """``gymnasium.make_vec("textenv/Arithmetic-v0", num_envs=N, **kwargs)``: the batched env of
    :func:`make_arithmetic`."""
    kl_coef, kl = _split_kl(kwargs)
    env = TextGenerationVectorEnv(num_envs, _arithmetic_task(**kwargs), autoreset_mode=autoreset_mode)
    return KLShapingVector(env, kl_coef=kl_coef, **kl) if kl_coef > 0 else env


TEXT_VECTOR_ENTRY_POINTS: list = [make_sentiment_vector]
"""Vector entry points of textenv's batched text envs; an id registered with one of them is a text env to the agents
(:func:`is_text_env`). A new built-in text task appends its own."""
TEXT_VECTOR_ENTRY_POINTS.append(make_arithmetic_vector)
TEXT_VECTOR_ENTRY_POINTS.append(make_guess_number_vector)


def is_text_env(env_id: str) -> bool:
    """Whether ``env_id``'s vector entry point is one of textenv's batched text envs (an LM policy can play it).

    >>> is_text_env("textenv/Sentiment-v1"), is_text_env("textenv/Arithmetic-v0"), is_text_env("textenv/Bandit-v0")
    (True, True, False)
    """
    entry = gym.spec(env_id).vector_entry_point
    names = {f"{f.__module__}:{f.__name__}" for f in TEXT_VECTOR_ENTRY_POINTS}
    return any(entry is f for f in TEXT_VECTOR_ENTRY_POINTS) or entry in names


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
    gym.register(id="textenv/Arithmetic-v0", entry_point=make_arithmetic, vector_entry_point=make_arithmetic_vector,
                 disable_env_checker=False)
    gym.register(id="textenv/GuessNumber-v0", entry_point=make_guess_number,
                 vector_entry_point=make_guess_number_vector, disable_env_checker=False)
