"""The reward protocol: what a reward returns, and the validating adapter every env reward goes through.

A reward is anything callable as ``reward(prompts, completions)`` on two equal-length sequences of strings that
returns either one float per pair, or a mapping ``{term name: one float per pair}`` whose terms add up to the
reward (each term then appears in the env's ``info`` as ``reward_<term>``). That covers a plain function,
a Hugging Face reward model (:class:`~textenv.rewards.hf.HFRewardModel`), the built-in gold rewards and any object of yours.

:func:`as_reward` turns what a user passes as ``reward_model=`` (a path, a callable, a reward object) into a
:class:`Reward`, which checks every call: the right number of scores, all finite, and errors that say which
reward failed on which input instead of a bare traceback deep in an env step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

RewardFn = Callable[[Sequence[str], Sequence[str]], "Sequence[float] | Mapping[str, Sequence[float]]"]


@dataclass
class RewardOutput:
    """Scores of a batch: ``total`` (B,) and the named ``terms`` (each (B,)) that sum to it."""

    total: np.ndarray
    terms: dict[str, np.ndarray]


class Reward:
    """A validated reward: wraps any reward callable and checks what it returns."""

    def __init__(self, fn: RewardFn, name: str | None = None):
        if not callable(fn):
            raise TypeError(
                f"reward_model must be a path to a sequence-classification model, a callable "
                f"(prompts, completions) -> list[float], or a reward object; got {type(fn).__name__}"
            )
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> RewardOutput:
        n = len(prompts)
        try:
            raw = self.fn(list(prompts), list(completions))
        except Exception as error:
            raise RuntimeError(
                f"reward {self.name!r} raised {type(error).__name__}: {error} (scoring {n} completions"
                + (f"; first prompt {prompts[0]!r}, completion {completions[0]!r})" if n else ")")
            ) from error
        if isinstance(raw, Mapping):
            if not raw:
                raise ValueError(f"reward {self.name!r} returned an empty mapping of terms")
            terms = {str(k): self._check(v, n, f"term {k!r}") for k, v in raw.items()}
            total = np.sum(list(terms.values()), axis=0)
        else:
            total = self._check(raw, n, "scores")
            terms = {"score": total}
        return RewardOutput(total=total, terms=terms)

    def _check(self, values, n: int, what: str) -> np.ndarray:
        if isinstance(values, torch.Tensor):
            values = values.detach().float().cpu().numpy()
        try:
            array = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as error:
            raise TypeError(f"reward {self.name!r} returned {what} that are not numbers: {values!r}") from error
        if array.shape[0] != n:
            raise ValueError(f"reward {self.name!r} returned {array.shape[0]} {what} for {n} completions; expected {n}")
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise ValueError(
                f"reward {self.name!r} returned non-finite {what} {array[bad[:5]].tolist()} at positions "
                f"{bad[:5].tolist()}; rewards must be finite floats"
            )
        return array


def as_reward(spec, device: str | torch.device = "cpu") -> Reward:
    """A :class:`Reward` from a path/name of a HF reward model, a callable, or a :class:`Reward`."""
    if isinstance(spec, Reward):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        from textenv.rewards.hf import HFRewardModel

        return Reward(HFRewardModel(spec, device=device))
    return Reward(spec)
