"""The policy-gradient update every on-policy agent shares: epochs of shuffled minibatches of PPO's loss.

A batch is a dict of tensors whose first dimension is the row (a timestep for an MLP policy, a whole
completion for an LM policy), with ``mask`` marking valid entries of ``actions``, plus ``old_logprobs``
(optional: without them the minibatch's own detached log-probs are used, i.e. a ratio of 1), ``advantages`` and, for a policy with a critic, ``old_values`` and ``returns``. REINFORCE, RLOO and GRPO
use it with no critic and (by default) one epoch of one minibatch, where the ratio is 1 and the clipped
loss is the plain policy gradient.

A non-finite loss or gradient skips that minibatch (the parameters are not touched) and is counted; the
trainer stops the run after too many (``TrainingDiverged``).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from agents.core.losses import ppo_loss
from textenv.checkpoint import first_nonfinite  # noqa: F401  (re-exported: agents.core.update.first_nonfinite)


class TrainingDiverged(RuntimeError):
    """Raised when updates keep producing NaN/inf losses or runaway KL, or leave NaN/inf in the weights, the
    optimizer state or the sampling distribution. Its message names the last good checkpoint (never overwritten
    by a diverged policy)."""


@dataclass
class UpdateSettings:
    """Knobs of :func:`ppo_update` (each algorithm's config fills them)."""

    epochs: int = 1
    minibatch_rows: int = 0
    """Rows per minibatch; 0 = the whole batch."""
    clip: float = 0.2
    value_clip: float | None = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    max_grad_norm: float = 1.0
    target_kl: float | None = None
    """Stop the epochs early, before stepping, once a minibatch's approx-KL exceeds ``1.5·target_kl`` (as SB3)."""
    train_policy: bool = True
    """False trains the value head only (value warm-up)."""
    clip_high: float | None = None
    """Upper clip ``ε_high`` (None: ``clip``); for ``cispo`` the importance weight's cap is ``1 + clip_high``."""
    loss_type: str = "bnpo"
    """Policy-loss variant (:data:`agents.core.losses.LOSS_TYPES`, table in :func:`agents.core.losses.ppo_loss`)."""
    max_tokens: int | None = None
    """The token cap, Dr. GRPO's constant normaliser."""
    kl_coef: float = 0.0
    """β of the KL in the loss (0: none; the batch then needs ``ref_logprobs``)."""
    kl_estimator: str = "k3"
    """Estimator of the KL in the loss: k1, k2 or k3."""
    kl_clamp: float | None = 10.0
    """Clamp of each token's KL-in-the-loss term to ``±kl_clamp`` (verl's ±10 for k3); None: unclamped."""

    def needs_old(self, rows: int) -> bool:
        """Whether a batch of ``rows`` rows is seen more than once or in parts: then the old log-probs need their own
        pass (:func:`score_old`); else the update's one pass gives them (a ratio of 1)."""
        return self.epochs > 1 or 0 < self.minibatch_rows < rows


def _abs_max(values: torch.Tensor) -> float:
    return float(values.abs().max()) if values.numel() else 0.0


def _take(batch: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[rows] for k, v in batch.items()}


def first_epoch_rows(n: int, settings: UpdateSettings, rng: np.random.Generator) -> list[torch.Tensor]:
    """The rows of each minibatch of :func:`ppo_update`'s first epoch with this ``rng`` (which is not advanced)."""
    size = settings.minibatch_rows or n
    order = torch.as_tensor(copy.deepcopy(rng).permutation(n))
    return [order[start : start + size] for start in range(0, n, size)]


def score_old(policy, batch: dict[str, torch.Tensor], settings: UpdateSettings, rng: np.random.Generator) -> None:
    """Fill ``old_logprobs`` (and, with a critic, ``old_values``) into ``batch`` from the policy before the update.

    The rows are scored in the minibatches of the update's first epoch (same rows, same order, same shapes), so
    the update's first minibatch sees the very numbers it computes itself: its ratio is exactly 1 (tested), not
    1 up to the rounding of a differently shaped pass.
    """
    n = next(iter(batch.values())).shape[0]
    logprobs, values = None, None
    with torch.no_grad():
        for rows in first_epoch_rows(n, settings, rng):
            out = policy.evaluate(_take(batch, rows), entropy_grad=False)
            if logprobs is None:
                logprobs = out.logprob.new_zeros((n, *out.logprob.shape[1:]))
                values = None if out.value is None else out.value.new_zeros((n, *out.value.shape[1:]))
            logprobs[rows] = out.logprob
            if values is not None:
                values[rows] = out.value
    batch["old_logprobs"] = logprobs
    if values is not None:
        batch["old_values"] = values


def ppo_update(
    policy,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    settings: UpdateSettings,
    rng: np.random.Generator,
    extra_loss: Callable[[], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Run the epochs; returns mean loss terms, ``skipped`` minibatches and ``epochs`` actually run.

    ``extra_loss()`` (e.g. the PPO-ptx pretraining loss) is added to every minibatch's loss.

    Optional batch entries: ``ref_logprobs`` (the reference's log-probs of the actions, for the KL in the loss,
    ``settings.kl_coef`` > 0) and ``sample_logprobs`` (the log-probs the actions were sampled with): then the first
    minibatch reports ``sampler_gap_max``/``sampler_gap_mean``, the largest and mean ``|log π_sample − log π_train|``
    over its valid tokens, and ``first_log_ratio_max``, the largest ``|log ρ|`` there (0 when the old log-probs come
    from :func:`score_old` or from the update's own pass).
    """
    n = next(iter(batch.values())).shape[0]
    size = settings.minibatch_rows or n
    stats: dict[str, list[float]] = defaultdict(list)
    skipped, epochs_run = 0, 0
    params = [p for p in policy.parameters() if p.requires_grad]
    critic = getattr(policy, "value_head", None) or getattr(policy, "critic", None)
    critic_only = None if settings.train_policy else set(map(id, critic.parameters()))
    for _ in range(settings.epochs):
        order = torch.as_tensor(rng.permutation(n))
        stop = False
        for start in range(0, n, size):
            mb = _take(batch, order[start : start + size])
            out = policy.evaluate(mb, entropy_grad=settings.ent_coef > 0)
            advantages = mb["advantages"] if settings.train_policy else torch.zeros_like(mb["advantages"])
            old_logprobs = mb["old_logprobs"] if "old_logprobs" in mb else out.logprob.detach()
            if epochs_run == 0 and start == 0:
                valid = mb["mask"].bool()
                with torch.no_grad():
                    stats["first_log_ratio_max"].append(_abs_max((out.logprob - old_logprobs)[valid]))
                    if "sample_logprobs" in mb:
                        gap = (mb["sample_logprobs"].to(out.logprob.dtype) - out.logprob)[valid].abs()
                        stats["sampler_gap_max"].append(_abs_max(gap))
                        stats["sampler_gap_mean"].append(float(gap.mean()) if gap.numel() else 0.0)
            terms = ppo_loss(
                out.logprob, old_logprobs, advantages, out.value, mb.get("old_values"), mb.get("returns"),
                out.entropy, mb["mask"], settings.clip, settings.value_clip, settings.vf_coef,
                settings.ent_coef if settings.train_policy else 0.0, clip_high=settings.clip_high,
                loss_type=settings.loss_type, max_tokens=settings.max_tokens,
                ref_logprobs=mb.get("ref_logprobs") if settings.train_policy else None, kl_coef=settings.kl_coef,
                kl_estimator=settings.kl_estimator, kl_clamp=settings.kl_clamp,
            )
            loss = terms.loss  # in value warm-up: the value term only (zero advantages, no entropy bonus)
            if settings.target_kl is not None and float(terms.approx_kl) > 1.5 * settings.target_kl:
                stop = True  # the policy moved far enough: no step on this minibatch, no more epochs
                break
            if extra_loss is not None and settings.train_policy:
                ptx = extra_loss()
                stats["ptx_loss"].append(ptx.item())
                loss = loss + ptx
            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                skipped += 1
                continue
            loss.backward()
            if critic_only is not None:
                for p in params:
                    if id(p) not in critic_only:
                        p.grad = None
            grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            if not torch.isfinite(grad_norm):
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                continue
            optimizer.step()
            for name in ("policy", "value", "entropy", "approx_kl", "clip_fraction"):
                stats[f"{name}_loss" if name in ("policy", "value") else name].append(float(getattr(terms, name)))
            if terms.kl is not None:
                stats["kl_loss_term"].append(float(terms.kl))
            stats["grad_norm"].append(float(grad_norm))
        epochs_run += 1
        if stop:
            break
    out = {k: float(np.mean(v)) for k, v in stats.items()}
    out.update(skipped=skipped, epochs=epochs_run)
    return out
