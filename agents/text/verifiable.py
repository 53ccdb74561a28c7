"""Accuracy and pass@k on verifiable text tasks (``textenv/Arithmetic-v0``): greedy, sampled, and best of k.

A completion is right when the env's gold reward, ``info["reward_gold"]``, is 1 (the arithmetic env's gold is
correctness, whatever reward it trains with). Every completion is sampled through the env, as in training: one
prompt per env of the batched env, the model's KV cache, the env's token cap and EOS.

* ``greedy``: accuracy of the argmax completion of each prompt;
* ``sampled``: mean correctness of ``n`` samples per prompt at ``temperature`` (pass@1, estimated from ``n``);
* ``pass@k``: the chance that at least one of ``k`` samples is right, by the unbiased estimator of Chen et al.
  2021 ("Evaluating Large Language Models Trained on Code", the HumanEval paper) from ``n >= k`` samples of which
  ``c`` are right, averaged over prompts: :func:`pass_at_k`.

>>> round(pass_at_k(n=8, c=2, k=4), 4)   # 1 − C(6,4)/C(8,4) = 1 − 15/70
0.7857
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from agents.core.rollout import run_episodes
from agents.policies.base import Act
from agents.policies.sampler import LMSampler

ARITHMETIC = "textenv/Arithmetic-v0"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` are right: ``1 − C(n−c, k) / C(n, k)``.

    Computed as ``1 − Π_{i=n−c+1}^{n} (1 − k/i)`` (Chen et al. 2021), which never forms the large binomials.

    >>> pass_at_k(8, 0, 8), pass_at_k(8, 1, 8), pass_at_k(4, 2, 1)
    (0.0, 1.0, 0.5)
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{name}={value!r} must be an integer")
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n and 0 <= c <= n; got n={n}, c={c}, k={k}")
    if n - c < k:  # every choice of k samples holds a right one
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def arithmetic_eval_prompts(n: int | None = None) -> list[str]:
    """The arithmetic world's held-out problems (``split == "eval"``, never trained on), the first ``n``."""
    from textenv.world import arithmetic

    problems = arithmetic.load_problems(arithmetic.problems_path(), split="eval")
    prompts = [r["prompt"] for r in problems]
    return prompts if n is None else prompts[:n]


class _Decoder:
    """A causal LM acting in the batched text env through its KV cache: sampling at ``temperature``, or greedy
    (the argmax token) when ``temperature`` is None. Follows the policy protocol's acting half."""

    def __init__(self, model, temperature: float | None, generator: torch.Generator | None):
        self.model, self.temperature, self.generator = model, temperature, generator
        self._sampler: LMSampler | None = None

    def start(self, env) -> None:
        if self._sampler is None or self._sampler.base is not env.unwrapped:
            self._sampler = LMSampler(self.model, env, self.temperature or 1.0, self.generator)
        self._sampler.restart(range(env.unwrapped.num_envs))

    def act(self, obs=None) -> Act:
        if self.temperature is None:
            logprobs = torch.log_softmax(self._sampler.lm.next_logprobs, -1)  # (N, V)
            tokens = logprobs.argmax(-1)  # (N,)
        else:
            tokens, logprobs = self._sampler.sample()
        return Act(tokens, logprobs.gather(1, tokens[:, None]).squeeze(1), None, logprobs)

    def advance(self, actions: torch.Tensor) -> None:
        self._sampler.lm.step(actions)


@dataclass
class Accuracy:
    """What :func:`evaluate_accuracy` measured on ``prompts`` (``right[i, j]``: sample ``j`` of prompt ``i``)."""

    prompts: list[str]
    greedy: np.ndarray
    """(P,) correctness of the greedy completion of each prompt."""
    right: np.ndarray
    """(P, n) correctness of ``n`` sampled completions of each prompt."""
    completions: list[list[str]]
    """The sampled completions, ``[prompt][sample]``."""

    def pass_at(self, k: int) -> float:
        """pass@k averaged over prompts (:func:`pass_at_k` of each prompt's ``n`` samples)."""
        n = self.right.shape[1]
        return float(np.mean([pass_at_k(n, int(c), k) for c in self.right.sum(1)]))

    def summary(self, ks: tuple[int, ...] = (1, 8)) -> dict[str, float]:
        """``greedy``, ``sampled`` (pass@1 from all ``n`` samples), its standard error over prompts, and
        ``pass@k`` for each ``k <= n`` of ``ks``."""
        per_prompt = self.right.mean(1)  # (P,)
        out = {"greedy": float(self.greedy.mean()), "sampled": float(per_prompt.mean()),
               "sampled_sem": float(per_prompt.std(ddof=1) / math.sqrt(len(per_prompt))) if len(per_prompt) > 1
               else float("nan")}
        out.update({f"pass@{k}": self.pass_at(k) for k in ks if k <= self.right.shape[1]})
        return out


def evaluate_accuracy(policy, prompts: list[str] | None = None, n: int = 8, temperature: float = 1.0,
                      env_id: str = ARITHMETIC, max_new_tokens: int = 8, seed: int = 0, batch_size: int = 256,
                      env_kwargs: dict | None = None) -> Accuracy:
    """Greedy and sampled correctness of ``policy`` on ``prompts`` (default: the arithmetic held-out problems).

    ``policy``: an :class:`agents.policies.lm.LMPolicy` (its LM is used; the env keeps its own tokenizer, which
    the policy must share), a causal LM, or the path of a saved one (a trained policy's folder, the world's LM).
    ``n`` samples per prompt at ``temperature``; seeded, so the same arguments give the same numbers.
    """
    from textenv.lm import load_causal_lm

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be an integer >= 1 (samples per prompt)")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be > 0 (greedy is measured besides)")
    env_kwargs = dict(env_kwargs or {})
    if isinstance(policy, (str, os.PathLike)):
        env_kwargs.setdefault("model", str(policy))
        model = load_causal_lm(Path(policy))
    else:
        model = getattr(policy, "model", policy)
    prompts = arithmetic_eval_prompts() if prompts is None else list(prompts)
    if not prompts:
        raise ValueError("prompts is empty; nothing to evaluate")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            greedy, _ = _run(model, None, prompts, env_id, max_new_tokens, seed, batch_size, env_kwargs)
            right, texts = _run(model, temperature, [p for p in prompts for _ in range(n)], env_id, max_new_tokens,
                                seed + 1, batch_size, env_kwargs)
    finally:
        model.train(was_training)
    return Accuracy(prompts, greedy, right.reshape(len(prompts), n),
                    [texts[i * n : (i + 1) * n] for i in range(len(prompts))])


def _run(model, temperature, prompts, env_id, max_new_tokens, seed, batch_size, env_kwargs):
    """Correctness (``info["reward_gold"]``) and text of one completion per prompt, in ``batch_size`` chunks."""
    right, texts, env = [], [], None
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        if env is None or env.num_envs != len(chunk):
            env = gym.make_vec(env_id, num_envs=len(chunk), autoreset_mode="disabled", max_new_tokens=max_new_tokens,
                               **env_kwargs)
        decoder = _Decoder(model, temperature, torch.Generator().manual_seed(seed * 1_000_003 + start))
        episodes = run_episodes(env, decoder, seed=seed + start, options={"prompts": chunk})
        for info in episodes.infos:
            if "reward_gold" not in info:
                raise ValueError(f"{env_id} reports no info['reward_gold']; accuracy needs an env whose gold reward "
                                 f"is correctness (0 or 1)")
            right.append(float(info["reward_gold"]))
            texts.append(info["completion"])
    return np.asarray(right), texts
