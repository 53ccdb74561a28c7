"""Tests written to kill the mutants that survived ``benchmarks/mutation.py`` (see benchmarks/results/mutation.md).

Each test names the mutation it guards against; the arithmetic is in the comments.
"""

import math

import pytest
import torch

from agents.core.advantages import discounted_returns, gae, group_advantages, whiten
from agents.core.losses import dpo_loss, ppo_loss
from agents.offline import losses as offline


def _flags(T, N=1):
    return torch.zeros(T, N, dtype=torch.bool)


# --------------------------------------------------------------------------------------------- agents.core.advantages
def test_gae_default_gamma_is_0_99_and_lambda_0_95():
    """Guards the defaults ``gamma=0.99``, ``lam=0.95`` (mutants 1.99 / 1.95 passed every other test).

    r = [0, 1], V = 0, no ends, next_value = 1:
      t=1: δ = 1 + 0.99·1 = 1.99                 A = 1.99
      t=0: δ = 0                                  A = 0.99·0.95·1.99 = 1.871595
    """
    adv, ret = gae(torch.tensor([[0.0], [1.0]], dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64),
                   _flags(2), _flags(2), torch.tensor([1.0], dtype=torch.float64))
    assert adv.squeeze(1).tolist() == pytest.approx([1.871595, 1.99], abs=1e-12)
    torch.testing.assert_close(ret, adv)  # V = 0


def test_discounted_returns_default_gamma_is_0_99():
    """Guards ``discounted_returns(gamma=0.99)`` (a mutant 1.99 survived): r = [1, 1] → G = [1 + 0.99, 1]."""
    got = discounted_returns(torch.ones(2, 1, dtype=torch.float64), _flags(2), _flags(2))
    assert got.squeeze(1).tolist() == pytest.approx([1.99, 1.0], abs=1e-12)


def test_gae_accepts_bfloat16_values_and_returns_their_dtype():
    """Guards the float32 detour for bfloat16 values (numpy has no bfloat16: a mutant that skipped it raised) and
    the cast of the result back to the values' dtype (mutants dropping ``dtype=values.dtype`` returned float32).

    γ = 0.5, λ = 1, r = [1, 2], V = [0.5, 0.25], next_value = 1, no ends:
      t=1: δ = 2 + 0.5·1 − 0.25 = 2.25            A = 2.25
      t=0: δ = 1 + 0.5·0.25 − 0.5 = 0.625         A = 0.625 + 0.5·2.25 = 1.75
    (all exact in bfloat16); returns = A + V = [2.25, 2.5].
    """
    values = torch.tensor([[0.5], [0.25]], dtype=torch.bfloat16)
    adv, ret = gae(torch.tensor([[1.0], [2.0]]), values, _flags(2), _flags(2), torch.tensor([1.0]),
                   gamma=0.5, lam=1.0)
    assert adv.dtype == torch.bfloat16 and ret.dtype == torch.bfloat16
    assert adv.squeeze(1).tolist() == [1.75, 2.25]
    assert ret.squeeze(1).tolist() == [2.25, 2.5]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gae_returns_tensors_on_the_values_device():
    """Guards ``.to(device=values.device)`` (the recursion runs in numpy on the CPU; mutants that dropped the
    device returned CPU tensors for CUDA values). Only a CUDA machine can kill them."""
    values = torch.zeros(2, 1, device="cuda")
    adv, ret = gae(torch.ones(2, 1, device="cuda"), values, _flags(2).cuda(), _flags(2).cuda(),
                   torch.zeros(1, device="cuda"), gamma=0.5, lam=1.0)
    assert adv.device == values.device and ret.device == values.device
    assert adv.squeeze(1).tolist() == [1.5, 1.0]


def test_group_std_scale_with_groups_of_two_and_the_default_eps():
    """Guards ``group_size < 2`` in the std check (mutants ``<= 2`` / ``< 3`` refused groups of two) and the
    default ``eps=1e-6`` (a mutant 1.000001 survived).

    [1, 3]: mean 2, unbiased std √2 → ±1/(√2 + 1e-6).
    """
    got = group_advantages(torch.tensor([1.0, 3.0], dtype=torch.float64), 2, "mean", "std")
    a = 1.0 / (math.sqrt(2.0) + 1e-6)
    assert got.tolist() == pytest.approx([-a, a], rel=1e-12)  # eps = 0 would be off by 7e-7 relative


def test_group_std_scale_refuses_a_group_of_one_with_the_exact_message():
    """Guards the message text (a mutant wrapped it in ``XX…XX``, which an unanchored ``match`` still accepts)."""
    with pytest.raises(ValueError) as info:
        group_advantages(torch.tensor([1.0, 2.0]), 1, "none", "std")
    assert str(info.value) == "scale='std' needs group_size >= 2 (a group of one has no spread)"


def test_whiten_adds_eps_to_the_std():
    """Guards ``std + eps`` in both branches (mutants ``std − eps`` survived: the tests used eps = 0 or 1e-8).

    [1, 3]: mean 2, biased std 1; eps = 1 → (x − 2)/2 = [−0.5, 0.5]; shift_mean=False adds 2 back: [1.5, 2.5].
    (``std − eps`` divides by 0.)
    """
    x = torch.tensor([1.0, 3.0])
    assert whiten(x, eps=1.0).tolist() == [-0.5, 0.5]
    assert whiten(x, shift_mean=False, eps=1.0).tolist() == [1.5, 2.5]


# ------------------------------------------------------------------------------------------------- agents.core.losses
def _d(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_ppo_default_value_clip_vf_coef_and_ent_coef():
    """Guards the defaults ``value_clip=0.2``, ``vf_coef=0.5``, ``ent_coef=0.0`` (mutants 1.2 / 1.5 / 1.0 survived).

    ρ = 1, A = 1 → policy = −1. V = 1, V_old = 0, R = 2: unclipped (1 − 2)² = 1; clipped V = 0 + clip(1, ±0.2)
    = 0.2, (0.2 − 2)² = 3.24; max = 3.24 → value = ½·3.24 = 1.62. Entropy 1 with weight 0.
    loss = −1 + 0.5·1.62 − 0·1 = −0.19.
    """
    out = ppo_loss(_d(0.0), _d(0.0), _d(1.0), values=_d(1.0), old_values=_d(0.0), returns=_d(2.0), entropy=_d(1.0))
    assert out.policy.item() == -1.0
    assert out.value.item() == pytest.approx(1.62, abs=1e-12)
    assert out.entropy.item() == 1.0
    assert out.loss.item() == pytest.approx(-0.19, abs=1e-12)


@pytest.mark.parametrize(
    ("ratio", "adv", "objective"),
    [
        (1.5, 2.0, 2.4),  # min(1.5·2, 1.2·2) = min(3, 2.4)
        (0.5, 2.0, 1.0),  # min(0.5·2, 0.8·2) = min(1, 1.6)
        (0.5, -0.5, -0.4),  # min(0.5·−0.5, 0.8·−0.5) = min(−0.25, −0.4)
        (1.5, -0.5, -0.75),  # min(1.5·−0.5, 1.2·−0.5) = min(−0.75, −0.6)
    ],
)
def test_ppo_policy_term_with_advantages_other_than_plus_minus_one(ratio, adv, objective):
    """Guards ``ratio * advantages`` in both surrogate terms (mutants ``ratio / advantages`` survived because every
    test used A = ±1, where ×A and ÷A agree)."""
    out = ppo_loss(_d(math.log(ratio)), _d(0.0), _d(adv), clip=0.2)
    assert out.policy.item() == pytest.approx(-objective, abs=1e-12)


def test_ppo_value_clipping_bounds_a_fall_below_the_old_value():
    """Guards the lower bound of ``clamp(-value_clip, value_clip)`` (a mutant ``clamp(None, value_clip)`` survived:
    the tests only moved V above V_old).

    V = 0, V_old = 1, R = −1: unclipped (0 + 1)² = 1; clipped V = 1 + clip(−1, ±0.2) = 0.8, (0.8 + 1)² = 3.24;
    max = 3.24 → value = 1.62 (without the lower bound: clipped V = 0, value = 0.5).
    """
    out = ppo_loss(_d(0.0), _d(0.0), _d(0.0), values=_d(0.0), old_values=_d(1.0), returns=_d(-1.0), value_clip=0.2)
    assert out.value.item() == pytest.approx(1.62, abs=1e-12)


def test_ppo_clip_fraction_does_not_count_a_ratio_on_the_boundary():
    """Guards ``|ρ − 1| > clip`` (a mutant ``>=`` survived). With clip = 0 and ρ = 1 exactly, the clamp changes
    nothing (and passes the gradient), so no entry is clipped: fraction 0, not 1."""
    out = ppo_loss(_d(-0.5, -0.7), _d(-0.5, -0.7), _d(1.0, -1.0), clip=0.0)
    assert out.clip_fraction.item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": _d(0.0)}, "ppo_loss got values but no returns to regress them on"),
        ({"values": _d(0.0), "returns": _d(0.0)}, "value clipping needs old_values (or pass value_clip=None)"),
    ],
)
def test_ppo_value_argument_errors_have_the_exact_message(kwargs, message):
    """Guards the messages (mutants wrapped them in ``XX…XX`` or lower-cased ``None``, which the unanchored
    ``match`` of test_losses still accepts)."""
    z = _d(0.0)
    with pytest.raises(ValueError) as info:
        ppo_loss(z, z, z, **kwargs)
    assert str(info.value) == message


def test_dpo_default_beta_is_0_1():
    """Guards the default ``beta=0.1`` (a mutant 1.1 survived).

    h = (−1 + 1.5) − (−2 + 1.5) = 1: loss = −log σ(0.1) = log(1 + e^−0.1);
    rewards β·0.5 = 0.05 and β·(−0.5) = −0.05.
    """
    out = dpo_loss(_d(-1.0), _d(-2.0), _d(-1.5), _d(-1.5))
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-0.1)), abs=1e-12)
    assert out.chosen_reward.item() == pytest.approx(0.05, abs=1e-12)
    assert out.rejected_reward.item() == pytest.approx(-0.05, abs=1e-12)


# ----------------------------------------------------------------------------------------- agents.offline.losses
def test_bc_loss_subtracts_the_target():
    """Guards ``pred − actions`` (a mutant ``pred + actions`` survived: the by-hand cases happened to give the same
    sum for both). pred 0.5, target 1: (−0.5)² = 0.25 (the mutant gives 1.5² = 2.25)."""
    assert offline.bc_loss(torch.tensor([[0.5]]), torch.tensor([[1.0]])).item() == 0.25


def test_td3_bc_lambda_uses_mean_abs_q_below_one():
    """Guards the ``clamp_min(1e-6)`` floor of mean|Q| (a mutant floor of 1.000001 survived: the tests had
    mean|Q| ≥ 1). Q = [0.5, −0.25]: mean|Q| = 0.375, λ = 1.5/0.375 = 4, −λ·mean Q = −4·0.125 = −0.5;
    π = a: BC 0.
    With Q = 0 the floor keeps the loss finite: 0."""
    a = torch.zeros(2, 1)
    assert offline.td3_bc_actor_loss(torch.tensor([0.5, -0.25]), a, a, alpha=1.5).item() == pytest.approx(-0.5)
    assert offline.td3_bc_actor_loss(torch.zeros(2), a, a, alpha=1.5).item() == 0.0


def test_awr_default_max_weight_is_100():
    """Guards the default ``max_weight=100`` of awr_weights and iql_actor_loss (mutants 101 survived).
    exp(1·5) ≈ 148 is capped at 100; −mean(100·(−1)) = 100."""
    assert offline.awr_weights(torch.tensor([5.0]), 1.0).item() == 100.0
    assert offline.iql_actor_loss(torch.tensor([-1.0]), torch.tensor([5.0]), 1.0).item() == 100.0


def test_dt_loss_with_one_real_step_is_that_steps_error():
    """Guards ``mask.sum().clamp_min(1)`` (a mutant ``clamp_min(2)`` survived: no test had exactly one real step).
    Errors 1² = 1 (real) and 5² = 25 (padding): loss = 1/1 = 1."""
    pred, actions = torch.tensor([[[1.0], [5.0]]]), torch.zeros(1, 2, 1)
    assert offline.dt_loss(pred, actions, torch.tensor([[1.0, 0.0]])).item() == 1.0
