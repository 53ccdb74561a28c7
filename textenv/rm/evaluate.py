"""Evaluation of a reward model on held-out preference data: accuracy, calibration, length bias, and plots.

| metric | meaning |
|---|---|
| ``accuracy`` | share of held-out pairs scored ``r(chosen) > r(rejected)`` (ties count ½) |
| ``gold_accuracy`` | share of pairs with different gold scores that the model orders as gold does (ties ½) |
| ``gold_pearson`` / ``gold_spearman`` | correlation of score and gold over the distinct completions (Spearman: tied values share their average rank) |
| ``ece`` | expected calibration error of ``P(a ≻ b) = σ(r_a − r_b)`` against the labels (both orders, 10 bins) |
| ``length_pearson`` | correlation of score with completion length in tokens (``gold_length_pearson``: the same for gold) |
| ``length_matched_accuracy`` | accuracy on pairs whose lengths differ by at most one token |
| ``longer_chosen_accuracy`` / ``shorter_chosen_accuracy`` | accuracy where the chosen completion is longer / shorter by 2+ tokens |
| ``score_mean`` / ``score_std`` | of the raw scores of all held-out completions (the normalisation statistics) |

A length-biased model is accurate where the longer completion won and poor where it lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from textenv.rm.data import PreferenceRecord


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's of the average ranks (tied values share the mean of their ranks).

    >>> round(_spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 1.0, 2.0, 2.0])), 4)  # ranks 1, 2.5, 2.5, 4 vs 1.5, 1.5, 3.5, 3.5
    0.7071
    """
    return _pearson(_ranks(x), _ranks(y))


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks from 1, ties sharing the mean of the ranks they span (``scipy.stats.rankdata``'s default).

    >>> _ranks(np.array([0.5, 0.2, 0.5, 0.9, 0.5]))
    array([3., 1., 3., 5., 3.])
    """
    values, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of the last member of each distinct value
    return (last - (counts - 1) / 2.0)[inverse.reshape(-1)]


def calibration_bins(logits: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Reliability of ``p = σ(r_chosen − r_rejected)``, symmetrised (each pair counted as (p, 1) and (1−p, 0)).

    Returns per-bin mean predicted probability, empirical frequency, count, and the expected calibration error.
    """
    p = 1.0 / (1.0 + np.exp(-logits))
    predicted = np.concatenate([p, 1 - p])
    observed = np.concatenate([np.ones_like(p), np.zeros_like(p)])
    which = np.minimum((predicted * n_bins).astype(int), n_bins - 1)
    mean_p, freq, count = np.full(n_bins, np.nan), np.full(n_bins, np.nan), np.zeros(n_bins, dtype=int)
    for b in range(n_bins):
        in_bin = which == b
        count[b] = in_bin.sum()
        if count[b]:
            mean_p[b], freq[b] = predicted[in_bin].mean(), observed[in_bin].mean()
    filled = count > 0
    ece = float(np.sum(count[filled] * np.abs(mean_p[filled] - freq[filled])) / count.sum())
    return mean_p, freq, count, ece


def evaluate_reward_model(
    reward: Callable[[list[str], list[str]], Sequence[float]],
    records: Sequence[PreferenceRecord],
    tokenizer,
    gold: Callable[[list[str], list[str]], Sequence[float]] | None = None,
) -> dict:
    """Metrics (see the module table) and the arrays behind the plots (under ``"arrays"``).

    Args:
        reward: anything on the reward protocol, ``(prompts, completions) -> scores``: a reward model (pass
            ``HFRewardModel(path, normalize=False)`` so the statistics are of raw scores), a judge, a rule.
        records: held-out preference records.
        tokenizer: counts completion lengths in tokens.
        gold: a gold reward ``(prompts, completions) -> scores``; default: the records' ``gold`` fields if any.
    """
    if not records:
        raise ValueError("evaluate_reward_model needs at least one preference record")
    keys = list(dict.fromkeys((r.prompt, c) for r in records for c in r.completions))  # distinct (prompt, completion)
    index = {key: i for i, key in enumerate(keys)}
    scores = np.asarray(reward([p for p, _ in keys], [c for _, c in keys]), dtype=float)  # (N,)
    lengths = np.array([len(ids) for ids in tokenizer([c for _, c in keys], add_special_tokens=False)["input_ids"]])
    if gold is not None:
        gold_scores = np.asarray(gold([p for p, _ in keys], [c for _, c in keys]), dtype=float)
    elif all(r.gold is not None for r in records):
        gold_scores = np.empty(len(keys))
        for r in records:
            for c, g in zip(r.completions, r.gold):
                gold_scores[index[(r.prompt, c)]] = g
    else:
        gold_scores = None

    chosen = np.array([index[(r.prompt, r.completions[w])] for r in records for w, _ in r.pairs])
    rejected = np.array([index[(r.prompt, r.completions[l])] for r in records for _, l in r.pairs])
    diff = scores[chosen] - scores[rejected]  # (P,)
    correct = (diff > 0) + 0.5 * (diff == 0)
    dlen = lengths[chosen] - lengths[rejected]
    mean_p, freq, count, ece = calibration_bins(diff)

    def acc(mask: np.ndarray) -> float:
        return float(correct[mask].mean()) if mask.any() else float("nan")

    def acc_against(truth: np.ndarray, mask: np.ndarray) -> float:
        """Share of pairs ordered as ``truth`` orders them (score ties count ½)."""
        agree = np.where(diff == 0, 0.5, (diff > 0) == (truth > 0))
        return float(agree[mask].mean()) if mask.any() else float("nan")

    metrics = {
        "pairs": int(diff.size),
        "completions": len(keys),
        "accuracy": float(correct.mean()),
        "ece": ece,
        "length_pearson": _pearson(scores, lengths.astype(float)),
        "length_matched_accuracy": acc(np.abs(dlen) <= 1),
        "length_matched_pairs": int((np.abs(dlen) <= 1).sum()),
        "longer_chosen_accuracy": acc(dlen >= 2),
        "shorter_chosen_accuracy": acc(dlen <= -2),
        "score_mean": float(scores.mean()),
        "score_std": float(scores.std()),
    }
    if gold_scores is not None:
        gdiff = gold_scores[chosen] - gold_scores[rejected]
        distinct = ~np.isclose(gdiff, 0.0)
        metrics.update(
            gold_accuracy=acc_against(gdiff, distinct),
            gold_pearson=_pearson(scores, gold_scores),
            gold_spearman=_spearman(scores, gold_scores),
            gold_length_pearson=_pearson(gold_scores, lengths.astype(float)),
        )
    metrics["arrays"] = {
        "scores": scores, "lengths": lengths, "gold": gold_scores,
        "calibration": (mean_p, freq, count),
    }
    return metrics


def plot_report(metrics: dict, path: str | Path, losses: Sequence[float] | None = None, title: str = "reward model") -> Path:
    """One PNG: calibration diagram, score vs length, score vs gold (if known), and the training loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = metrics["arrays"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    mean_p, freq, count = arrays["calibration"]
    filled = count > 0
    axes[0].plot([0, 1], [0, 1], color="gray", lw=1, ls="--", label="perfect")
    axes[0].plot(mean_p[filled], freq[filled], "o-", color="tab:blue", label=f"model (ECE {metrics['ece']:.3f})")
    axes[0].set(title="calibration (held-out pairs)", xlabel="predicted P(a ≻ b) = σ(r_a − r_b)", ylabel="empirical frequency")
    axes[0].legend(loc="upper left", fontsize=8)

    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, size=arrays["lengths"].size)
    axes[1].scatter(arrays["lengths"] + jitter, arrays["scores"], s=4, alpha=0.3, color="tab:purple")
    axes[1].set(title=f"length bias: r = {metrics['length_pearson']:+.2f}", xlabel="completion length (tokens)", ylabel="RM score")

    if arrays["gold"] is not None:
        gjitter = np.random.default_rng(1).uniform(-0.03, 0.03, size=arrays["gold"].size)
        axes[2].scatter(arrays["gold"] + gjitter, arrays["scores"], s=4, alpha=0.3, color="tab:green")
        axes[2].set(title=f"score vs gold: Spearman {metrics['gold_spearman']:+.2f}", xlabel="gold reward", ylabel="RM score")
    else:
        axes[2].text(0.5, 0.5, "no gold scores", ha="center", va="center")
        axes[2].set_axis_off()

    if losses:
        steps = np.arange(1, len(losses) + 1)
        window = max(1, len(losses) // 25)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axes[3].plot(steps, losses, color="tab:gray", alpha=0.35, lw=0.8, label="per step")
        axes[3].plot(steps[window - 1 :], smooth, color="tab:red", label=f"mean of {window}")
        axes[3].axhline(np.log(2), color="gray", ls="--", lw=1, label="chance (log 2)")
        axes[3].set(title="training loss", xlabel="step", ylabel="Bradley-Terry loss")
        axes[3].legend(fontsize=8)
    else:
        axes[3].set_axis_off()
    fig.suptitle(f"{title}: held-out accuracy {metrics['accuracy']:.3f}" + (
        f", vs gold {metrics['gold_accuracy']:.3f}" if "gold_accuracy" in metrics else ""))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def public_metrics(metrics: dict) -> dict:
    """The metrics without the plot arrays, rounded for JSON."""
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items() if k != "arrays"}
