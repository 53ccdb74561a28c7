"""Tests written to kill the mutants of ``agents/core/update.py`` that survived ``benchmarks/mutation.py`` (see
benchmarks/results/mutation.md). Each test names the mutation it guards against and why it catches it; expected values
are worked out by hand in the docstrings (binary fractions where the test compares exactly).

The toy policies here have log-probs ``batch["lp"]`` plus a parameter, so every ratio, gap and gradient is chosen by the
test rather than computed by a network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from agents.core.update import UpdateSettings, first_epoch_rows, ppo_update, score_old
from agents.policies.base import Evaluation


class Shift(nn.Module):
    """log π = ``batch["lp"]`` + t (t = 0 at the start), no critic, no ``value_head``/``critic`` attribute (a GRPO-style
    policy); per-token values with ``values=True``. Records every ``entropy_grad`` it is handed."""

    def __init__(self, values=False):
        super().__init__()
        self.t = nn.Parameter(torch.zeros(()))
        self.values = values
        self.entropy_grads = []

    def evaluate(self, batch, entropy_grad=True):
        self.entropy_grads.append(entropy_grad)
        logprob = batch["lp"] + self.t
        value = batch["v"] + self.t if self.values else None
        return Evaluation(logprob, torch.zeros_like(logprob), value)


class CountingSGD(torch.optim.SGD):
    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


def _update(policy, batch, lr=0.1, seed=0, **settings):
    optimizer = CountingSGD(policy.parameters(), lr=lr)
    stats = ppo_update(policy, optimizer, batch, UpdateSettings(**settings), np.random.default_rng(seed))
    return stats, optimizer


# ------------------------------------------------------------------------------------------------------- needs_old
@pytest.mark.parametrize(("epochs", "minibatch_rows", "rows", "expected"), [
    (1, 0, 8, False),  # one pass over the whole batch (kills `epochs >= 1`, `0 <= minibatch_rows`)
    (2, 0, 8, True),   # seen twice (kills `and` for `or`, `epochs > 2`)
    (1, 1, 8, True),   # eight minibatches of one row (kills `1 < minibatch_rows`)
    (1, 4, 8, True),
    (1, 8, 8, False),  # one minibatch of all eight rows (kills `minibatch_rows <= rows`)
    (1, 9, 8, False),
])
def test_needs_old_by_hand(epochs, minibatch_rows, rows, expected):
    """``needs_old`` is True when a batch is seen more than once (``epochs > 1``) or in parts (``0 < minibatch_rows <
    rows``). No test of update.py's selection called it (test_group_losses covers it, outside that selection): every
    mutant of its comparisons survived; each row of the table flips one of them."""
    assert UpdateSettings(epochs=epochs, minibatch_rows=minibatch_rows).needs_old(rows) is expected


# ------------------------------------------------------------------------------------ first_epoch_rows, score_old
def test_first_epoch_rows_leaves_the_callers_rng_where_it_was():
    """Guards ``copy.deepcopy(rng)`` (the mutant ``copy.copy`` survived): a shallow copy of a numpy Generator shares
    its bit generator, so drawing the permutation advanced the caller's rng, and the update that follows would shuffle
    differently from the minibatches score_old scored."""
    rng = np.random.default_rng(7)
    rows = first_epoch_rows(6, UpdateSettings(minibatch_rows=4), rng)
    expected = np.random.default_rng(7).permutation(6)
    assert [r.tolist() for r in rows] == [expected[:4].tolist(), expected[4:].tolist()]
    assert rng.permutation(6).tolist() == expected.tolist()  # not advanced: the same draw again


def test_score_old_fills_per_token_log_probs_and_values_with_no_entropy_graph():
    """Guards score_old's shapes and arguments for an LM-shaped policy, ``(B, T)`` log-probs and per-token values:
    ``shape[1:]`` (the mutants ``shape[2:]`` allocated ``(B,)`` buffers, which a ``(k, T)`` minibatch cannot fill)
    and ``entropy_grad=False`` (mutants: True, None, or the argument left out, i.e. the policy's default True)."""
    lp = torch.tensor([[-0.5, -1.0, -2.0], [-0.25, -4.0, -0.125], [-1.5, -3.0, -0.75]])
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    batch = {"lp": lp, "v": v, "actions": torch.zeros(3, 3, dtype=torch.long)}
    policy = Shift(values=True)
    score_old(policy, batch, UpdateSettings(epochs=2, minibatch_rows=2), np.random.default_rng(0))
    assert torch.equal(batch["old_logprobs"], lp) and torch.equal(batch["old_values"], v)  # t = 0: lp and v as given
    assert len(policy.entropy_grads) == 2 and all(g is False for g in policy.entropy_grads)  # two minibatches


def test_score_old_of_a_policy_without_a_critic_adds_no_old_values():
    """Guards ``None if out.value is None`` (the mutant ``(out.value is None) and False`` called ``new_zeros`` on
    None): a critic-less policy gets old log-probs and no ``old_values``."""
    batch = {"lp": torch.tensor([-0.5, -1.0, -2.0]), "actions": torch.zeros(3, dtype=torch.long)}
    score_old(Shift(), batch, UpdateSettings(epochs=2, minibatch_rows=2), np.random.default_rng(0))
    assert batch["old_logprobs"].tolist() == [-0.5, -1.0, -2.0] and "old_values" not in batch


# ---------------------------------------------------------------------------------------- first-minibatch diagnostics
def _diagnostic_batch():
    """Row 2 is masked out and far off on every count: it must not reach any statistic.

    log ρ = lp − old = [0.25, −0.5, 3]; sample − lp = [0.125, −0.375, 5]."""
    lp = torch.tensor([-1.0, -2.0, -0.5])
    return {"lp": lp, "old_logprobs": lp - torch.tensor([0.25, -0.5, 3.0]),
            "sample_logprobs": lp + torch.tensor([0.125, -0.375, 5.0]), "advantages": torch.tensor([1.0, -1.0, 1.0]),
            "mask": torch.tensor([True, True, False]), "actions": torch.zeros(3, dtype=torch.long)}


def test_first_minibatch_log_ratio_and_sampler_gap_over_valid_tokens_by_hand():
    """One minibatch of the three rows. Valid |log ρ| = [0.25, 0.5] → first_log_ratio_max 0.5; valid
    |log π_sample − log π| = [0.125, 0.375] → sampler_gap_max 0.375, sampler_gap_mean 0.25.

    Kills: ``valid = None`` (``x[None]`` keeps every entry: max 3 and 5), ``_abs_max`` returning 0 for a non-empty
    tensor (``numel() and False``), the ``sample_logprobs`` key misspelt (no gap reported) or the gap a sum
    (``sample + lp``: max 4.375), the gap statistics misnamed, None or of None, the mean's ``numel() and False`` (0).
    The policy has neither ``value_head`` nor ``critic`` (a GRPO policy): ``getattr(policy, "critic")`` without its
    default raised."""
    stats, _ = _update(Shift(), _diagnostic_batch(), epochs=1)
    assert stats["first_log_ratio_max"] == 0.5
    assert stats["sampler_gap_max"] == 0.375 and stats["sampler_gap_mean"] == 0.25


def test_an_empty_first_minibatch_reports_zero_gaps():
    """Every token masked: no valid token, so every first-minibatch statistic is 0.

    Kills ``_abs_max``'s ``numel() or True`` (max of an empty tensor raises) and ``else 1.0``, and the gap mean's
    ``numel() or True`` (the mean of nothing is NaN) and ``else 1.0``."""
    batch = _diagnostic_batch()
    batch["mask"] = torch.zeros(3, dtype=torch.bool)
    stats, _ = _update(Shift(), batch, epochs=1)
    assert stats["first_log_ratio_max"] == 0.0
    assert stats["sampler_gap_max"] == 0.0 and stats["sampler_gap_mean"] == 0.0


def test_the_sampler_gap_is_measured_in_the_trainers_precision():
    """A sampler that reports in float64 the very log-probs the trainer computes in float32 has a gap of exactly 0:
    the sampler's log-probs are cast to the trainer's dtype before the difference. Kills ``.to(None)`` (the
    difference then runs in float64 and reports the float32 rounding of log 0.3 and log 0.7, ≈ 1e-8, as a gap)."""
    sample = torch.tensor([math.log(0.3), math.log(0.7)], dtype=torch.float64)
    lp = sample.float()
    assert (sample - lp.double()).abs().max() > 0  # the float32 values are not the float64 ones
    batch = {"lp": lp, "sample_logprobs": sample, "advantages": torch.tensor([1.0, 1.0]),
             "mask": torch.tensor([True, True]), "actions": torch.zeros(2, dtype=torch.long)}
    stats, _ = _update(Shift(), batch, epochs=1)
    assert stats["sampler_gap_max"] == 0.0 and stats["sampler_gap_mean"] == 0.0


def test_without_old_log_probs_the_update_uses_its_own_pass():
    """No ``old_logprobs`` in the batch: the ratio is 1 (the update's own detached log-probs). Kills
    ``("old_logprobs" in mb) or True`` (KeyError). ρ = 1, A = [1, 3], two valid tokens: policy loss −2 and
    first_log_ratio_max 0."""
    batch = {"lp": torch.tensor([-1.0, -2.0]), "advantages": torch.tensor([1.0, 3.0]),
             "mask": torch.tensor([True, True]), "actions": torch.zeros(2, dtype=torch.long)}
    stats, _ = _update(Shift(), batch, epochs=1)
    assert stats["first_log_ratio_max"] == 0.0 and stats["policy_loss"] == -2.0


# ------------------------------------------------------------------------------------ settings handed to ppo_loss
def test_clip_high_loss_type_and_max_tokens_reach_the_loss():
    """One minibatch; row 0: ρ = 0.6/0.4 = 1.5, A = 1 → clipped at 1 + clip_high = 1.28: token loss −1.28; row 1:
    ρ = 1, A = 2 → −2. dr_grpo: sum ÷ (2 rows · max_tokens 4) = −3.28/8 = −0.41.

    Kills ``clip_high`` dropped or None (clip at 1.2: −3.2/8 = −0.4), ``loss_type`` dropped (bnpo: −3.28/2 = −1.64),
    ``max_tokens`` dropped or None (dr_grpo refuses it)."""
    lp = torch.log(torch.tensor([0.6, 0.5]))
    batch = {"lp": lp, "old_logprobs": torch.log(torch.tensor([0.4, 0.5])), "advantages": torch.tensor([1.0, 2.0]),
             "mask": torch.tensor([True, True]), "actions": torch.zeros(2, dtype=torch.long)}
    stats, _ = _update(Shift(), batch, epochs=1, clip=0.2, clip_high=0.28, loss_type="dr_grpo", max_tokens=4)
    assert stats["policy_loss"] == pytest.approx(-0.41, abs=1e-6)


def _kl_batch():
    """log π − log π_ref = r = [0.5, 2] (exact)."""
    lp = torch.tensor([-1.0, -1.0])
    return {"lp": lp, "ref_logprobs": lp - torch.tensor([0.5, 2.0]), "advantages": torch.tensor([1.0, 1.0]),
            "mask": torch.tensor([True, True]), "actions": torch.zeros(2, dtype=torch.long)}


def test_the_kl_in_the_loss_gets_the_reference_coefficient_estimator_and_clamp():
    """k2 = r²/2 = [0.125, 2], clamped at 0.5 → [0.125, 0.5]: the reported ``kl_loss_term`` is their mean, 0.3125.

    Kills: ``ref_logprobs`` not handed over (None, ``train_policy and False``, key None or misspelt) and ``kl_coef``
    dropped (0: no KL, no ``kl_loss_term``) or None (``None > 0`` raises); ``kl_estimator`` None (refused) or dropped
    (k3 = e^−r − 1 + r = [0.1065, 1.1353] → [0.1065, 0.5]: 0.3033); ``kl_clamp`` None or dropped (unclamped:
    1.0625); the statistic misnamed, None or of None."""
    stats, _ = _update(Shift(), _kl_batch(), epochs=1, kl_coef=0.1, kl_estimator="k2", kl_clamp=0.5)
    assert stats["kl_loss_term"] == 0.3125


class SharedCritic(nn.Module):
    """V(obs) = a·obs + b + t, log π = lp + t, entropy = ent + b: the policy's own parameter ``t`` feeds the value, and
    the critic's bias ``b`` feeds the entropy (both 0 at the start, as ``a``)."""

    def __init__(self):
        super().__init__()
        self.t = nn.Parameter(torch.zeros(()))
        self.value_head = nn.Linear(1, 1)
        with torch.no_grad():
            self.value_head.weight.zero_()
            self.value_head.bias.zero_()

    def evaluate(self, batch, entropy_grad=True):
        value = self.value_head(batch["obs"][:, None]).squeeze(-1) + self.t
        entropy = batch["ent"] + self.value_head.bias
        return Evaluation(batch["lp"] + self.t, entropy if entropy_grad else entropy.detach(), value)


def test_value_warm_up_steps_the_critic_on_the_value_loss_alone():
    """``train_policy=False`` with ent_coef 0.5 and a KL in the loss configured. V = 0 at the start, obs = [1, 2],
    R = [1, 3]: value loss ½·mean((V − R)²) = ½·(1 + 9)/2 = 2.5; ∂/∂V = (V − R)/2 = [−0.5, −1.5], so with vf_coef 1
    ∂a = −0.5·1 − 1.5·2 = −3.5, ∂b = −2, ∂t = −2 (dropped: t is no critic parameter). SGD, lr 0.1: a = 0.35,
    b = 0.2, t = 0; grad_norm = √(3.5² + 2²) = √16.25.

    Kills ``critic_only = None`` (and ``train_policy or True``): t kept its gradient and moved to 0.2; the entropy
    bonus kept in the warm-up (``train_policy or True`` / ``else 1.0``): −c·mean(entropy) adds −c to ∂b (b = 0.25 or
    0.3); ``ref_logprobs`` handed over in the warm-up (``train_policy or True``): a ``kl_loss_term`` is reported."""
    lp = torch.tensor([-1.0, -1.0])
    batch = {"obs": torch.tensor([1.0, 2.0]), "lp": lp, "old_logprobs": lp, "ent": torch.tensor([0.5, 0.5]),
             "ref_logprobs": lp - 1.0, "advantages": torch.tensor([1.0, -1.0]), "returns": torch.tensor([1.0, 3.0]),
             "old_values": torch.zeros(2), "mask": torch.tensor([True, True]), "actions": torch.zeros(2, dtype=torch.long)}
    policy = SharedCritic()
    stats, _ = _update(policy, batch, epochs=1, train_policy=False, ent_coef=0.5, vf_coef=1.0, value_clip=None,
                       max_grad_norm=100.0, kl_coef=0.1)
    assert policy.t.item() == 0.0
    assert policy.value_head.weight.item() == pytest.approx(0.35, abs=1e-6)
    assert policy.value_head.bias.item() == pytest.approx(0.2, abs=1e-6)
    assert stats["value_loss"] == 2.5 and stats["grad_norm"] == pytest.approx(math.sqrt(16.25), rel=1e-6)
    assert "kl_loss_term" not in stats


# ------------------------------------------------------------------------------------------- gradients and skipping
class TaskHeads(nn.Module):
    """log π = lp + h[task]: one head per task, run only for the tasks in the minibatch (as a multi-task policy would),
    so a minibatch without task k leaves head k out of the graph."""

    def __init__(self):
        super().__init__()
        self.heads = nn.ParameterList([nn.Parameter(torch.zeros(())) for _ in range(2)])

    def evaluate(self, batch, entropy_grad=True):
        logprob = batch["lp"]
        for k, head in enumerate(self.heads):
            rows = batch["task"] == k
            if rows.any():
                logprob = logprob + rows * head
        return Evaluation(logprob, torch.zeros_like(logprob), None)


def test_a_head_a_minibatch_does_not_use_gets_no_step():
    """Minibatches of one row each: row 0 uses head 0 (A = 1), row 1 head 1 (A = 2); ρ = 1, so ∂L/∂h = −A. SGD with
    momentum 0.9, lr 0.1: each head steps once, h = 0.1·A = [0.1, 0.2].

    Kills ``zero_grad(set_to_none=False/None)``: the head of the first minibatch keeps a zero gradient (not None) into
    the second, and SGD steps it again on its momentum: 0.1·A + 0.9·0.1·A (0.19 or 0.38)."""
    lp = torch.tensor([-1.0, -1.0])
    batch = {"lp": lp, "old_logprobs": lp, "task": torch.tensor([0, 1]), "advantages": torch.tensor([1.0, 2.0]),
             "mask": torch.tensor([True, True]), "actions": torch.zeros(2, dtype=torch.long)}
    policy = TaskHeads()
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1, momentum=0.9)
    ppo_update(policy, optimizer, batch, UpdateSettings(epochs=1, minibatch_rows=1, max_grad_norm=100.0),
               np.random.default_rng(0))
    assert [h.item() for h in policy.heads] == pytest.approx([0.1, 0.2], abs=1e-6)


def test_two_non_finite_minibatches_are_both_skipped_and_the_others_step():
    """Four minibatches of one row, rows 0 and 2 with NaN advantages: two skipped, two steps, whatever the order.

    Kills ``skipped = 1`` (reports 1) and ``break`` for ``continue`` (stops the epoch at the first NaN: one skipped)."""
    lp = torch.full((4,), -1.0)
    batch = {"lp": lp, "old_logprobs": lp, "advantages": torch.tensor([float("nan"), 1.0, float("nan"), 1.0]),
             "mask": torch.ones(4, dtype=torch.bool), "actions": torch.zeros(4, dtype=torch.long)}
    stats, optimizer = _update(Shift(), batch, epochs=1, minibatch_rows=1)
    assert stats["skipped"] == 2 and optimizer.steps == 2
