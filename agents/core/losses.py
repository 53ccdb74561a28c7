"""Losses as pure functions: PPO's clipped surrogate and clipped value loss, and the DPO family.

Each takes tensors of one shape (any: ``(B,)`` timesteps of an MLP policy, ``(B, T)`` tokens of an LM) and a
``mask`` of valid entries, and returns a small dataclass of named terms, so trainers log them without
re-deriving anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DPO_LOSSES = ("sigmoid", "ipo")


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the entries where ``mask`` is set (every entry if None).

    >>> masked_mean(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([1, 1, 0])).item()
    1.5
    """
    if mask is None:
        return values.mean()
    mask = mask.bool()
    total = torch.where(mask, values, torch.zeros_like(values)).sum()  # a NaN/inf in a masked entry stays out
    return total / mask.sum().clamp(min=1).to(values.dtype)


@dataclass
class PPOLoss:
    """Terms of :func:`ppo_loss`; ``loss`` is what is minimised."""

    loss: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    """``E[(ratio − 1) − log ratio]`` (k3 estimate of KL(old‖new)), for early stopping."""
    clip_fraction: torch.Tensor


def ppo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor | None = None,
    old_values: torch.Tensor | None = None,
    returns: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    clip: float = 0.2,
    value_clip: float | None = 0.2,
    vf_coef: float = 0.5,
    ent_coef: float = 0.0,
) -> PPOLoss:
    """PPO (Schulman et al. 2017): ``L = −E[min(ρA, clip(ρ, 1±ε)A)] + c_v·L_V − c_e·H``, ``ρ = π/π_old``.

    The value loss is ``½·E[max((V − R)², (V_old + clip(V − V_old, ±ε_v) − R)²)]`` (value clipping as in
    OpenAI baselines; ``value_clip=None`` gives the plain ``½·E[(V − R)²]``). Without ``values`` (a policy with
    no critic, e.g. GRPO) the value term is 0. Advantages are used as given: whiten them before if wanted.

    >>> t = ppo_loss(torch.log(torch.tensor([0.6])), torch.log(torch.tensor([0.4])), torch.tensor([1.0]))
    >>> round(t.policy.item(), 4)   # ratio 1.5 is clipped to 1.2 for a positive advantage
    -1.2
    """
    log_ratio = logprobs - old_logprobs
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * advantages
    policy = -masked_mean(torch.min(unclipped, clipped), mask)
    zero = logprobs.new_zeros(())
    if values is not None:
        if returns is None:
            raise ValueError("ppo_loss got values but no returns to regress them on")
        error = (values - returns) ** 2
        if value_clip is not None:
            if old_values is None:
                raise ValueError("value clipping needs old_values (or pass value_clip=None)")
            clipped_values = old_values + (values - old_values).clamp(-value_clip, value_clip)
            error = torch.max(error, (clipped_values - returns) ** 2)
        value = 0.5 * masked_mean(error, mask)
    else:
        value = zero
    ent = masked_mean(entropy, mask) if entropy is not None else zero
    with torch.no_grad():
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
        clip_fraction = masked_mean(((ratio - 1.0).abs() > clip).to(ratio.dtype), mask)
    loss = policy + vf_coef * value - ent_coef * ent
    return PPOLoss(loss, policy.detach(), value.detach(), ent.detach(), approx_kl, clip_fraction)


@dataclass
class DPOLoss:
    """Terms of :func:`dpo_loss`; ``loss`` is minimised, the rest are logged."""

    loss: torch.Tensor
    chosen_reward: torch.Tensor
    """Mean implicit reward ``β·(log π(y_w) − log π_ref(y_w))``."""
    rejected_reward: torch.Tensor
    accuracy: torch.Tensor
    """Fraction of pairs whose implicit reward ranks the chosen completion first."""
    margin: torch.Tensor


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> DPOLoss:
    """DPO (Rafailov et al. 2023) and IPO (Azar et al. 2023) from sequence log-probs, each ``(B,)``.

    With ``h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))``:

    * ``"sigmoid"`` (DPO): ``−log σ(β·h)``; with ``label_smoothing = ε`` (conservative DPO, labels flipped with
      probability ε): ``−(1−ε)·log σ(βh) − ε·log σ(−βh)``.
    * ``"ipo"``: ``(h − 1/(2β))²`` (IPO's regression target; β plays the role of τ).

    >>> t = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]), beta=1.0)
    >>> round(t.loss.item(), 4)   # h = 1: -log σ(1)
    0.3133
    """
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"loss_type={loss_type!r}; expected one of {DPO_LOSSES}")
    if not beta > 0:
        raise ValueError(f"beta={beta} must be > 0")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 0.5)")
    chosen = policy_chosen - ref_chosen  # (B,)
    rejected = policy_rejected - ref_rejected  # (B,)
    h = chosen - rejected
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    else:
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    with torch.no_grad():
        chosen_reward, rejected_reward = beta * chosen, beta * rejected
        accuracy = (chosen_reward > rejected_reward).float().mean()
    return DPOLoss(losses.mean(), chosen_reward.mean(), rejected_reward.mean(), accuracy,
                   (chosen_reward - rejected_reward).mean())
