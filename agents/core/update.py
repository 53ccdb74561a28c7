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


def _take(batch: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[rows] for k, v in batch.items()}


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
            terms = ppo_loss(
                out.logprob, old_logprobs, advantages, out.value, mb.get("old_values"), mb.get("returns"),
                out.entropy, mb["mask"], settings.clip, settings.value_clip, settings.vf_coef,
                settings.ent_coef if settings.train_policy else 0.0,
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
            stats["grad_norm"].append(float(grad_norm))
        epochs_run += 1
        if stop:
            break
    out = {k: float(np.mean(v)) for k, v in stats.items()}
    out.update(skipped=skipped, epochs=epochs_run)
    return out
