"""Evaluating text policies on held-out prompts: proxy and gold reward, KL to a reference, win rates, best-of-N.

Every evaluation samples through the env (the same code path as training: one prompt per env, the policy's KV
cache), so what is reported is what an agent would be rewarded with. KL to the reference is the summed
log-ratio of the sampled completion, ``Σ_t log π(a_t|s_t) − log π_ref(a_t|s_t)`` (an unbiased estimate of the
sequence KL), from one teacher-forced pass of each model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from agents.policies.lm import LMPolicy, sequence_logprobs
from agents.core.onpolicy import training_batch
from agents.core.rollout import run_episodes


@dataclass
class Samples:
    """Completions of a list of prompts with their scores (aligned with ``prompts``)."""

    prompts: list[str] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)
    proxy: list[float] = field(default_factory=list)
    gold: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Means (and the standard error of the gold mean)."""
        gold = np.asarray(self.gold, dtype=float)
        return {"proxy": float(np.mean(self.proxy)), "gold": float(np.mean(gold)),
                "gold_sem": float(gold.std(ddof=1) / math.sqrt(len(gold))) if len(gold) > 1 else float("nan"),
                "kl": float(np.mean(self.kl)) if self.kl else float("nan"), "length": float(np.mean(self.lengths))}


def eval_prompts(n: int | None = None) -> list[str]:
    """The built-in world's held-out prompts (``split == "eval"``), the first ``n`` of them."""
    from textenv import world
    from textenv.task import load_prompts

    prompts = load_prompts(world.prompts_path(), split="eval")
    return prompts if n is None else prompts[:n]


def generate(policy: LMPolicy, prompts: list[str], env_id: str = "textenv/Sentiment-v1", max_new_tokens: int = 24,
             reference: LMPolicy | None = None, seed: int = 0, batch_size: int = 64, env_kwargs: dict | None = None) -> Samples:
    """Sample one completion per prompt from ``policy`` in ``env_id`` and score it (proxy: the env's reward
    model; gold: ``info["reward_gold"]``); with ``reference``, also the summed log-ratio to it."""
    env_kwargs = dict(env_kwargs or {})
    env_kwargs.setdefault("model", policy.model.name_or_path)
    out = Samples()
    env = None
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        if env is None or env.num_envs != len(chunk):
            env = gym.make_vec(env_id, num_envs=len(chunk), autoreset_mode="disabled", max_new_tokens=max_new_tokens,
                               kl_coef=0.0, **env_kwargs)
        policy.generator = torch.Generator().manual_seed(seed * 1_000_003 + start)
        episodes = run_episodes(env, policy, seed=seed + start, options={"prompts": chunk})
        out.prompts += chunk
        out.completions += [info["completion"] for info in episodes.infos]
        out.proxy += [float(info["score"]) for info in episodes.infos]
        out.gold += [float(info.get("reward_gold", float("nan"))) for info in episodes.infos]
        out.lengths += episodes.lengths.tolist()
        if reference is not None:
            batch = training_batch(episodes, True)
            with torch.no_grad():
                out.kl += (sequence_logprobs(policy, batch) - sequence_logprobs(reference, batch)).tolist()
    return out


def win_rate(a: list[float], b: list[float]) -> dict[str, float]:
    """How often ``a[i] > b[i]`` (paired scores): ``win``, ``tie``, ``loss`` fractions and ``rate = win + tie/2``.

    >>> win_rate([1.0, 0.0, 2.0, 0.5], [0.0, 0.0, 3.0, 0.0])
    {'win': 0.5, 'tie': 0.25, 'loss': 0.25, 'rate': 0.625}
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or not a.size:
        raise ValueError(f"win_rate needs two equal-length non-empty score lists, got {a.shape} and {b.shape}")
    win, tie = float(np.mean(a > b)), float(np.mean(a == b))
    return {"win": win, "tie": tie, "loss": 1.0 - win - tie, "rate": win + tie / 2}


def best_of_n_kl(n: int) -> float:
    """The analytic KL of best-of-N sampling to its base policy, ``log N − (N−1)/N`` (Stiennon et al. 2020;
    an upper bound, exact when the rewards of distinct samples differ).

    >>> round(best_of_n_kl(4), 4)
    0.6363
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    return math.log(n) - (n - 1) / n


def best_of_n(policy: LMPolicy, prompts: list[str], ns: tuple[int, ...] = (1, 2, 4, 8, 16), seed: int = 0,
              max_new_tokens: int = 24, env_id: str = "textenv/Sentiment-v1", env_kwargs: dict | None = None) -> list[dict]:
    """Best-of-N by the env's reward model, for each N in ``ns``: proxy and gold of the chosen completion and the
    analytic KL. One set of ``max(ns)`` samples per prompt serves every N (the first N of them)."""
    if not ns or min(ns) < 1:
        raise ValueError(f"ns={ns} must be a non-empty tuple of integers >= 1")
    n_max = max(ns)
    samples = generate(policy, [p for p in prompts for _ in range(n_max)], env_id, max_new_tokens, seed=seed,
                       env_kwargs=env_kwargs)
    proxy = np.asarray(samples.proxy).reshape(len(prompts), n_max)  # (P, N)
    gold = np.asarray(samples.gold).reshape(len(prompts), n_max)
    rows = []
    for n in sorted(ns):
        pick = proxy[:, :n].argmax(1)  # (P,) first maximum: ties go to the earlier sample
        chosen = np.arange(len(prompts))
        rows.append({"n": n, "proxy": float(proxy[chosen, pick].mean()), "gold": float(gold[chosen, pick].mean()),
                     "kl": best_of_n_kl(n)})
    return rows

