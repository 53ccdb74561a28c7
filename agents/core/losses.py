"""Losses as pure functions: PPO's clipped surrogate (with the group-loss family: GRPO, DAPO, Dr. GRPO, GSPO, CISPO;
and KL in the loss) and clipped value loss, and the DPO family.

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


LOSS_TYPES = ("bnpo", "grpo", "dapo", "dr_grpo", "gspo", "cispo")
"""Policy-loss variants of :func:`ppo_loss` (table there)."""
KL_LOSS_ESTIMATORS = ("k1", "k2", "k3")


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
    """Fraction of (valid) tokens whose ratio lies outside the clip range (for ``cispo``: above its cap)."""
    kl: torch.Tensor | None = None
    """With ``ref_logprobs``: the mean per-token KL to the reference (the estimator's, clamped) that the loss holds."""


def sequence_log_ratio(log_ratio: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """GSPO's sequence log-ratio, the mean of a row's token log-ratios, broadcast to every token: ``(B, T)``.

    ``exp`` of it is ``(π(y|x)/π_old(y|x))^(1/|y|)``, the geometric mean of the token ratios (Zheng et al. 2025).

    >>> sequence_log_ratio(torch.tensor([[0.5, 1.5, 9.0]]), torch.tensor([[1, 1, 0]])).tolist()
    [[1.0, 1.0, 1.0]]
    """
    if mask is None:
        mask = torch.ones_like(log_ratio, dtype=torch.bool)
    mask = mask.bool()
    total = torch.where(mask, log_ratio, torch.zeros_like(log_ratio)).sum(-1, keepdim=True)
    return (total / mask.sum(-1, keepdim=True).clamp(min=1).to(log_ratio.dtype)).expand_as(log_ratio)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor | None, how: str, max_tokens: int | None = None) -> torch.Tensor:
    """Reduce ``(B, T)`` per-token losses to one number, as the group-loss family does.

    * ``"token"``: the mean over every valid token of the batch (DAPO; TRL's ``bnpo``/``dapo``): long completions
      weigh more, in proportion to their tokens.
    * ``"sequence"``: each row's mean over its valid tokens, then the mean over rows (GRPO, Shao et al. 2024).
    * ``"constant"``: the sum over valid tokens divided by ``B · max_tokens``, a constant (Dr. GRPO, Liu et al. 2025).

    >>> x, m = torch.tensor([[1.0, 3.0], [5.0, 0.0]]), torch.tensor([[1, 1], [1, 0]])
    >>> [aggregate(x, m, how, max_tokens=4).item() for how in ("token", "sequence", "constant")]
    [3.0, 3.5, 1.125]
    """
    if how == "token":
        return masked_mean(per_token, mask)
    mask = torch.ones_like(per_token, dtype=torch.bool) if mask is None else mask.bool()
    kept = torch.where(mask, per_token, torch.zeros_like(per_token))
    if how == "sequence":
        return (kept.sum(-1) / mask.sum(-1).clamp(min=1).to(per_token.dtype)).mean()
    if how == "constant":
        if max_tokens is None or max_tokens < 1:
            raise ValueError(f"aggregate='constant' needs max_tokens >= 1 (the generation budget), got {max_tokens}")
        return kept.sum() / (per_token.shape[0] * max_tokens)
    raise ValueError(f"aggregate how={how!r}; expected token, sequence or constant")


AGGREGATION = {"bnpo": "token", "grpo": "sequence", "dapo": "token", "dr_grpo": "constant", "gspo": "sequence",
               "cispo": "token"}


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
    *,
    clip_high: float | None = None,
    loss_type: str = "bnpo",
    max_tokens: int | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    kl_clamp: float | None = None,
) -> PPOLoss:
    """PPO (Schulman et al. 2017): ``L = −E[min(ρA, clip(ρ, 1−ε, 1+ε_high)A)] + c_v·L_V − c_e·H``, ``ρ = π/π_old``,
    and the group-loss family of 2025 as ``loss_type``:

    | ``loss_type`` | ratio ``ρ`` | per-token policy loss | aggregated over the batch | source |
    |---|---|---|---|---|
    | ``"bnpo"`` (default) | token | clipped | mean over all valid tokens | textenv's loss before loss_type; TRL's ``bnpo`` |
    | ``"grpo"`` | token | clipped | mean per completion, then over completions | Shao et al. 2024 (DeepSeekMath) |
    | ``"dapo"`` | token | clipped, ``clip_high`` apart ("clip-higher") | mean over all valid tokens | Yu et al. 2025 |
    | ``"dr_grpo"`` | token | clipped | sum ÷ (rows × ``max_tokens``) | Liu et al. 2025 ("Dr. GRPO") |
    | ``"gspo"`` | sequence: ``exp(mean_t log ρ_t)`` | clipped per sequence | mean over completions | Zheng et al. 2025 |
    | ``"cispo"`` | token | ``−sg(min(ρ, 1 + clip_high))·A·log π`` | mean over all valid tokens | MiniMax-M1, 2025 |

    ``clip_high`` (None: ``clip``) is the upper clip ``ε_high``; for ``cispo`` the importance weight's cap is
    ``1 + clip_high`` (TRL's ``epsilon_high`` is that cap itself: ε_max = 5 there is ``clip_high=4`` here). The
    clipping is the two-sided PPO one. The value loss is ``½·E[max((V − R)², (V_old + clip(V − V_old, ±ε_v) − R)²)]``
    (value clipping as in OpenAI baselines; ``value_clip=None`` gives the plain ``½·E[(V − R)²]``). Without
    ``values`` (a policy with no critic, e.g. GRPO) the value term is 0. Advantages are used as given: whiten them
    before if wanted.

    **KL in the loss** (``ref_logprobs`` given and ``kl_coef`` > 0): ``β·KL_t`` is added to every token's policy loss
    before aggregation (as TRL, verl and OpenRLHF do), ``KL_t`` the estimator ``kl_estimator`` (k1, k2, k3; see
    :func:`textenv.kl.kl_estimate`) of ``log π(a_t) − log π_ref(a_t)`` at the current parameters, clamped to
    ``±kl_clamp`` if given (verl clamps k3 at ±10). Its gradient flows through ``log π``.

    Inputs are ``(B, T)`` (or ``(B,)``: one token per row). ``max_tokens`` is Dr. GRPO's constant (the token cap).

    >>> t = ppo_loss(torch.log(torch.tensor([0.6])), torch.log(torch.tensor([0.4])), torch.tensor([1.0]))
    >>> round(t.policy.item(), 4)   # ratio 1.5 is clipped to 1.2 for a positive advantage
    -1.2
    >>> t = ppo_loss(torch.log(torch.tensor([0.6])), torch.log(torch.tensor([0.4])), torch.tensor([1.0]), loss_type="dapo", clip_high=0.28)
    >>> round(t.policy.item(), 4)   # clip-higher: clipped to 1.28
    -1.28
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}; expected one of {LOSS_TYPES}")
    if ref_logprobs is not None and kl_coef > 0 and kl_estimator not in KL_LOSS_ESTIMATORS:
        raise ValueError(f"kl_estimator={kl_estimator!r} for the KL in the loss; expected one of {KL_LOSS_ESTIMATORS}")
    high = clip if clip_high is None else clip_high
    entry_mask = mask  # values and entropies keep the inputs' shape
    flat = logprobs.dim() == 1  # (B,) rows of an MLP policy: one token per row
    if flat:
        logprobs, old_logprobs, advantages = logprobs[:, None], old_logprobs[:, None], advantages[:, None]
        mask = None if mask is None else mask[:, None]
        ref_logprobs = None if ref_logprobs is None else ref_logprobs[:, None]
    token_log_ratio = logprobs - old_logprobs
    log_ratio = sequence_log_ratio(token_log_ratio, mask) if loss_type == "gspo" else token_log_ratio
    ratio = log_ratio.exp()
    if loss_type == "cispo":
        weight = ratio.clamp(max=1.0 + high).detach()
        per_token = -weight * advantages * logprobs
        clipped_out = ratio > 1.0 + high
    else:
        unclipped = ratio * advantages
        clipped = ratio.clamp(1.0 - clip, 1.0 + high) * advantages
        per_token = -torch.min(unclipped, clipped)
        clipped_out = (ratio < 1.0 - clip) | (ratio > 1.0 + high)
    how = AGGREGATION[loss_type]
    policy = aggregate(per_token, mask, how, max_tokens)
    kl = None
    if ref_logprobs is not None and kl_coef > 0:
        from textenv.kl import kl_estimate

        per_token_kl = kl_estimate(logprobs, ref_logprobs.to(logprobs.dtype), kl_estimator)
        if kl_clamp is not None:
            per_token_kl = per_token_kl.clamp(-kl_clamp, kl_clamp)
        kl_term = aggregate(kl_coef * per_token_kl, mask, how, max_tokens)
        kl = masked_mean(per_token_kl.detach(), mask)
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
        value = 0.5 * masked_mean(error, entry_mask)
    else:
        value = zero
    ent = masked_mean(entropy, entry_mask) if entropy is not None else zero
    with torch.no_grad():
        approx_kl = masked_mean((token_log_ratio.exp() - 1.0) - token_log_ratio, mask)
        clip_fraction = masked_mean(clipped_out.to(ratio.dtype), mask)
    loss = policy + vf_coef * value - ent_coef * ent
    if kl is not None:
        loss = loss + kl_term
    return PPOLoss(loss, policy.detach(), value.detach(), ent.detach(), approx_kl, clip_fraction, kl)


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
