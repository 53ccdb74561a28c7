"""Multi-objective rewards: a weighted sum of named terms, each reported on its own.

>>> from textenv.world import gold_fluency, gold_sentiment
>>> from textenv.rewards.rules import LengthTarget
>>> reward = CompositeReward(
...     {"positivity": gold_sentiment, "fluency": gold_fluency, "brevity": LengthTarget(8)},
...     weights={"positivity": 1.0, "fluency": 0.5, "brevity": 0.25},
... )
>>> reward(["the room was"], [" clean ."])                   # weighted terms; the env sums them
{'positivity': [1.0], 'fluency': [0.5], 'brevity': [-0.1875]}
>>> reward.vector(["the room was"], [" clean ."]).tolist()  # unweighted, one column per term
[[1.0, 1.0, -0.75]]

In an env (``gymnasium.make("textenv/Sentiment-v0", reward_model=reward)``) the reward is the sum of the
weighted terms and ``info`` carries ``reward_positivity``, ``reward_fluency`` and ``reward_brevity``.

With ``normalize_then_sum=True`` each term is standardised before weighting, ``(x - mean) / std``, so terms of
different scales (a reward model's logits, a 0/1 rule) weigh what their weights say. The statistics are frozen
by :meth:`CompositeReward.calibrate` on reference completions (recommended: e.g. samples of the base policy);
until then they are running statistics of every score seen (Gymnasium's ``RunningMeanStd``, Chan et al.'s
parallel update, started from no observations), which drift as the policy changes. The std is the sample std.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from gymnasium.wrappers.utils import RunningMeanStd

from textenv.rewards.protocol import Reward, RewardFn


class CompositeReward:
    """Weighted sum of named reward terms; see the module docstring.

    Args:
        terms: ``{name: reward}``; each reward follows the reward protocol (a path string loads a HF reward model).
        weights: ``{name: weight}`` (default 1.0 for every term; a missing name gets 1.0).
        normalize_then_sum: standardise each term before weighting.
    """

    def __init__(self, terms: Mapping[str, RewardFn], weights: Mapping[str, float] | None = None, normalize_then_sum: bool = False):
        from textenv.rewards.protocol import as_reward

        if not isinstance(terms, Mapping) or not terms:
            raise ValueError(f"terms must be a non-empty mapping {{name: reward}}; got {terms!r}")
        weights = dict(weights or {})
        unknown = set(weights) - set(terms)
        if unknown:
            raise ValueError(f"weights name terms {sorted(unknown)} that are not in terms {sorted(terms)}")
        self.names = [str(name) for name in terms]
        for name in self.names:
            if not name.isidentifier():
                raise ValueError(f"term name {name!r} must be an identifier (it becomes info['reward_{name}'])")
        self.terms = {name: as_reward(fn) if isinstance(fn, str) else Reward(fn, name=name) for name, fn in terms.items()}
        self.weights = np.array([float(weights.get(name, 1.0)) for name in self.names])
        if not np.all(np.isfinite(self.weights)):
            raise ValueError(f"weights must be finite; got {dict(zip(self.names, self.weights.tolist()))}")
        self.normalize_then_sum = bool(normalize_then_sum)
        self.stats = self._fresh_stats()
        self.frozen = False
        self.__name__ = "composite(" + ", ".join(self.names) + ")"

    def raw(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """Unweighted, unnormalised scores, shape ``(B, n_terms)`` in the order of :attr:`names`."""
        return np.stack([self.terms[name](prompts, completions).total for name in self.names], axis=1)  # (B, K)

    def vector(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """The reward vector ``(B, n_terms)``: per-term scores, normalised if enabled, not weighted."""
        scores = self.raw(prompts, completions)  # (B, K)
        if not self.normalize_then_sum or scores.shape[0] == 0:
            return scores
        if not self.frozen:
            self.stats.update(scores)
        return (scores - self.mean) / self.std

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> dict[str, list[float]]:
        weighted = self.vector(prompts, completions) * self.weights  # (B, K)
        return {name: weighted[:, k].tolist() for k, name in enumerate(self.names)}

    def _fresh_stats(self) -> RunningMeanStd:
        # epsilon=0: no pseudo-observation, so the mean and variance are exactly those of the scores seen
        return RunningMeanStd(epsilon=0.0, shape=(len(self.names),))

    @property
    def count(self) -> int:
        """Scores seen by the statistics."""
        return int(self.stats.count)

    @property
    def mean(self) -> np.ndarray:
        """Per-term mean of the statistics."""
        return self.stats.mean

    @property
    def m2(self) -> np.ndarray:
        """Per-term sum of squared deviations from the mean."""
        return self.stats.var * self.stats.count

    @property
    def std(self) -> np.ndarray:
        """Per-term sample standard deviation of the statistics (1 where fewer than 2 scores or no spread)."""
        if self.count < 2:
            return np.ones(len(self.names))
        std = np.sqrt(self.stats.var * self.count / (self.count - 1))
        return np.where(std > 1e-8, std, 1.0)

    def calibrate(self, prompts: Sequence[str], completions: Sequence[str]) -> dict[str, tuple[float, float]]:
        """Fix the normalisation statistics to those of these completions; returns ``{name: (mean, std)}``."""
        if len(completions) < 2:
            raise ValueError(f"calibrate needs at least 2 completions to measure a spread; got {len(completions)}")
        self.stats = self._fresh_stats()
        self.stats.update(self.raw(prompts, completions))
        self.frozen = True
        return {name: (float(m), float(s)) for name, m, s in zip(self.names, self.mean, self.std)}

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist(), "frozen": self.frozen}

    def load_state_dict(self, state: dict) -> None:
        self.stats = self._fresh_stats()
        count, self.frozen = int(state["count"]), bool(state["frozen"])
        if count:
            self.stats.mean = np.array(state["mean"], dtype=float)
            self.stats.var = np.array(state["m2"], dtype=float) / count
            self.stats.count = count
