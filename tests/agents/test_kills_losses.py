"""Tests written to kill the mutants of ``agents/core/losses.py`` that survived ``benchmarks/mutation.py`` (see
benchmarks/results/mutation.md) once test_group_losses.py joined the module's selection. Each test names the mutation it
guards against and why it catches it; expected values are worked out by hand in the docstrings."""

from __future__ import annotations

import math

import pytest
import torch

from agents.core.losses import aggregate, ppo_loss, sequence_log_ratio


def _d(*rows):
    return torch.tensor(rows, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------ sequence_log_ratio
def test_sequence_log_ratio_without_a_mask_is_each_rows_mean():
    """No mask: every token counts. Rows [0.5, 1.5] and [2, 4] → means 1 and 3, broadcast to each token.

    Kills the default mask ``None`` (``None.bool()`` raises), ``ones_like(None)`` and ``ones_like(dtype=bool)`` (the
    tensor argument dropped: both raise)."""
    assert sequence_log_ratio(_d([0.5, 1.5], [2.0, 4.0]), None).tolist() == [[1.0, 1.0], [3.0, 3.0]]


def test_row_means_are_taken_over_the_last_axis_for_any_leading_shape():
    """``sequence_log_ratio`` and ``aggregate(how="sequence")`` reduce each row over its last axis (the tokens),
    whatever leads it: one completion ``(T,)``, or groups of rows ``(G, B, T)``.

    (T,): [0.5, 1.5, 9] with the 9 masked → mean 1 on every token; its sequence aggregate is 1 too.
    (2, 2, 2): rows [1, 3], [5, ·], [2, 2], [0, 8] (· masked) → row means 2, 5, 2, 4 → sequence aggregate 13/4.

    Kills ``.sum(+1)`` for ``.sum(-1)`` in either function's numerator or denominator: the same axis for a 2-D batch,
    but out of range for one completion and the wrong axis for (G, B, T)."""
    one, one_mask = _d(0.5, 1.5, 9.0), torch.tensor([1, 1, 0])
    assert sequence_log_ratio(one, one_mask).tolist() == [1.0, 1.0, 1.0]
    assert aggregate(one, one_mask, "sequence").item() == 1.0
    groups = _d([[1.0, 3.0], [5.0, 100.0]], [[2.0, 2.0], [0.0, 8.0]])
    mask = torch.tensor([[[1, 1], [1, 0]], [[1, 1], [1, 1]]])
    expected = _d([[2.0, 2.0], [5.0, 5.0]], [[2.0, 2.0], [4.0, 4.0]])
    assert torch.equal(sequence_log_ratio(groups, mask), expected)
    assert aggregate(groups, mask, "sequence").item() == 13 / 4


# ---------------------------------------------------------------------------------------------------------- aggregate
def test_aggregate_without_a_mask_counts_every_token():
    """[[1, 3], [5, 7]], no mask: sequence = mean(2, 6) = 4; constant with max_tokens 4 = 16 / (2 · 4) = 2.

    Kills the all-valid default mask built without ``dtype=torch.bool`` (``torch.where`` refuses a float condition),
    from ``None``, with its tensor argument dropped, or skipped (``(mask is None) and False``: ``None.bool()``)."""
    x = _d([1.0, 3.0], [5.0, 7.0])
    assert aggregate(x, None, "sequence").item() == 4.0
    assert aggregate(x, None, "constant", max_tokens=4).item() == 2.0


def test_a_generation_budget_of_one_token_is_accepted():
    """``max_tokens=1`` (one token per completion) is a valid Dr. GRPO constant: [[1, 3], [5, 0]] with the 0 masked
    → (1 + 3 + 5) / (2 · 1) = 4.5; 0 is refused. Kills ``max_tokens <= 1`` and ``max_tokens < 2``."""
    x, m = _d([1.0, 3.0], [5.0, 0.0]), torch.tensor([[1, 1], [1, 0]])
    assert aggregate(x, m, "constant", max_tokens=1).item() == 4.5
    with pytest.raises(ValueError, match="got 0"):
        aggregate(x, m, "constant", max_tokens=0)


# ------------------------------------------------------------------------------------------------------ KL in the loss
# π = [0.5, 0.25], π_ref = [0.25, 0.5]: r = log π − log π_ref = [ln 2, −ln 2];
# k3 = e^−r − 1 + r = [−½ + ln 2, 1 − ln 2] = [0.1931, 0.3069], mean exactly ½·(½) = 0.25.
# (B,) rows of one token; the flat case is what the last tests below are about.
LOGP, REF = torch.log(_d(0.5, 0.25)), torch.log(_d(0.25, 0.5))
ADV = _d(1.0, -1.0)


def test_the_kl_in_the_loss_is_off_by_default_and_k3_when_only_its_coefficient_is_given():
    """A reference alone adds nothing (``kl_coef`` defaults to 0: kills the default 1.0, which adds the KL); with
    ``kl_coef=0.1`` and no estimator named, the estimator is k3: kl = 0.25 and the loss rises by 0.025 (kills the
    default estimator misspelt ``"XXk3XX"``/``"K3"``, which is refused)."""
    base = ppo_loss(LOGP, LOGP, ADV)  # ρ = 1: policy loss −mean(A) = 0
    off = ppo_loss(LOGP, LOGP, ADV, ref_logprobs=REF)
    assert off.kl is None and off.loss.item() == base.loss.item() == 0.0
    on = ppo_loss(LOGP, LOGP, ADV, ref_logprobs=REF, kl_coef=0.1)
    assert on.kl.item() == pytest.approx(0.25, abs=1e-12)
    assert on.loss.item() == pytest.approx(0.025, abs=1e-12)


def test_a_zero_kl_coefficient_turns_the_kl_off_even_with_a_reference():
    """``kl_coef=0`` with a reference: no KL term, and the estimator is not even checked (``"full"`` is the reward's
    estimator, no concern of the loss). Kills ``kl_coef >= 0`` in the estimator check (refuses "full") and in the
    KL branch (computes a KL: ``kl`` is not None)."""
    terms = ppo_loss(LOGP, LOGP, ADV, ref_logprobs=REF, kl_coef=0.0, kl_estimator="full")
    assert terms.kl is None and terms.loss.item() == 0.0
    terms = ppo_loss(LOGP, LOGP, ADV, ref_logprobs=REF, kl_coef=0.0)
    assert terms.kl is None


def test_a_kl_coefficient_without_a_reference_adds_nothing():
    """``kl_coef > 0`` but no ``ref_logprobs``: no KL (kills ``ref_logprobs is not None or kl_coef > 0``, which calls
    ``None.to``)."""
    terms = ppo_loss(LOGP, LOGP, ADV, kl_coef=0.1)
    assert terms.kl is None and terms.loss.item() == 0.0


def test_the_kl_clamp_is_two_sided():
    """k1 = r can be negative: r = [−2, 0.25] clamped to ±0.5 → [−0.5, 0.25], mean −0.125 (kills ``clamp(None,
    kl_clamp)``: −2 stays, mean −0.875)."""
    logp = _d(-1.0, -1.0)
    terms = ppo_loss(logp, logp, ADV, ref_logprobs=_d(1.0, -1.25), kl_coef=0.1, kl_estimator="k1", kl_clamp=0.5)
    assert terms.kl.item() == -0.125


def test_a_float64_reference_keeps_the_loss_in_the_policys_dtype():
    """The reference's log-probs are cast to the policy's dtype: a float64 reference leaves a float32 policy's loss,
    KL and gradient in float32 (kills ``ref_logprobs.to(None)``: the KL, and with it the loss, became float64)."""
    terms = ppo_loss(LOGP.float(), LOGP.float(), ADV.float(), ref_logprobs=REF, kl_coef=0.1)
    assert terms.loss.dtype == torch.float32 and terms.kl.dtype == torch.float32
    assert terms.kl.item() == pytest.approx(0.25, abs=1e-6)


# -------------------------------------------------------------------------------------------- one token per row (B,)
def test_rows_of_one_token_are_each_their_own_sequence():
    """``(B,)`` inputs (an MLP policy: one token per row) are rows of one token, so GSPO's sequence ratio of each row is
    its token ratio: ρ = [1.5, 0.5], A = 1, clip 0.2 → −[1.2, 0.5], mean −0.85. A reference is kept too: r =
    [ln 2, −ln 2] → k3 mean 0.25 (see above).

    Kills ``flat = None`` / ``dim() != 1`` / ``dim() == 2`` (the (B,) batch read as one sequence: ρ = √0.75 for both
    rows, loss −0.866), and the (B,) reference dropped (``ref_logprobs = None``, ``or True``: no KL)."""
    old = _d(0.0, 0.0)
    terms = ppo_loss(torch.log(_d(1.5, 0.5)), old, _d(1.0, 1.0), loss_type="gspo")
    assert terms.policy.item() == pytest.approx(-0.85, abs=1e-12)
    terms = ppo_loss(LOGP, LOGP, ADV, ref_logprobs=REF, kl_coef=0.1)
    assert terms.kl.item() == pytest.approx(0.25, abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------- cispo
def test_cispos_clip_fraction_counts_the_ratios_above_the_cap():
    """ρ = [0.9, 1.2, 2, 3.5] with clip_high 0.5 (cap 1.5): two lie above → 0.5. Kills ``ratio > 1.0 − high`` (every
    one above 0.5: 1.0) and ``ratio > 2.0 + high`` (only 3.5 above 2.5: 0.25)."""
    rho = _d(0.9, 1.2, 2.0, 3.5)
    terms = ppo_loss(torch.log(rho), torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64),
                     loss_type="cispo", clip_high=0.5)
    assert terms.clip_fraction.item() == 0.5


def test_cispos_cap_itself_is_not_clipped():
    """A ratio exactly at the cap 1 + clip_high is not clipped (its weight is itself). Kills ``ratio >= 1.0 + high``.
    The cap is taken from the computed ratio so that the equality is exact in float64."""
    ratio = torch.exp(_d(0.375))
    high = ratio.item() - 1.0
    assert 1.0 + high == ratio.item()  # exact: the boundary is testable
    terms = ppo_loss(_d(0.375), _d(0.0), _d(1.0), loss_type="cispo", clip_high=high)
    assert terms.clip_fraction.item() == 0.0
