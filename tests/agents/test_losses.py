"""agents.core.losses against hand-computed numbers: PPO's clipped surrogate and value loss, DPO and IPO."""

import math

import pytest
import torch

from agents.core.losses import dpo_loss, masked_mean, ppo_loss

EPS = 0.2
# Six elements: ratios 0.5, 1.0, 1.5 with A = +1, then the same ratios with A = −1 (old π = 0.4 everywhere).
RATIOS = torch.tensor([0.5, 1.0, 1.5, 0.5, 1.0, 1.5])
ADV = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
OLD = torch.full((6,), math.log(0.4))
NEW = torch.log(0.4 * RATIOS)  # π = 0.2, 0.4, 0.6
# min(ρA, clip(ρ, 0.8, 1.2)·A), element by element:
#   A=+1: ρ=0.5 → min(0.5, 0.8) = 0.5;   ρ=1 → 1;   ρ=1.5 → min(1.5, 1.2) = 1.2
#   A=−1: ρ=0.5 → min(−0.5, −0.8) = −0.8; ρ=1 → −1; ρ=1.5 → min(−1.5, −1.2) = −1.5
OBJECTIVE = [0.5, 1.0, 1.2, -0.8, -1.0, -1.5]


def test_masked_mean_by_hand():
    assert masked_mean(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([True, True, False])).item() == 1.5
    assert masked_mean(torch.tensor([1.0, 2.0, 9.0])).item() == 4.0
    assert masked_mean(torch.tensor([1.0, 2.0]), torch.tensor([False, False])).item() == 0.0  # no 0/0


@pytest.mark.parametrize("i", range(6))
def test_ppo_policy_term_per_element_by_hand(i):
    out = ppo_loss(NEW[i : i + 1], OLD[i : i + 1], ADV[i : i + 1], clip=EPS)
    assert out.policy.item() == pytest.approx(-OBJECTIVE[i], abs=1e-6)


def test_ppo_policy_term_and_diagnostics_by_hand():
    out = ppo_loss(NEW, OLD, ADV, clip=EPS)
    # −(0.5 + 1 + 1.2 − 0.8 − 1 − 1.5)/6 = −(2.7 − 3.3)/6 = 0.1
    assert out.policy.item() == pytest.approx(0.1, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.1, abs=1e-6)  # no critic, no entropy: loss = policy term
    assert out.value.item() == 0.0 and out.entropy.item() == 0.0
    # |ρ − 1| > 0.2 for ρ = 0.5 and 1.5: 4 of 6
    assert out.clip_fraction.item() == pytest.approx(4 / 6)
    # k3 = (ρ − 1) − log ρ: ρ=0.5 → −0.5 + ln 2 = 0.1931472; ρ=1 → 0; ρ=1.5 → 0.5 − ln 1.5 = 0.0945349
    # each appears twice: 2·(0.1931472 + 0.0945349)/6 = 0.0958940
    k3 = (-0.5 + math.log(2.0)) + (0.5 - math.log(1.5))
    assert out.approx_kl.item() == pytest.approx(2 * k3 / 6, abs=1e-6)


def test_ppo_masked_entries_do_not_change_the_loss():
    mask = torch.tensor([True, False, True, False, True, True])
    out = ppo_loss(NEW, OLD, ADV, mask=mask, clip=EPS)
    # kept: 0.5, 1.2, −1.0, −1.5 → −(1.7 − 2.5)/4 = 0.2
    assert out.policy.item() == pytest.approx(0.2, abs=1e-6)
    # clipped among the kept: ρ = 0.5, 1.5, 1.5 → 3/4
    assert out.clip_fraction.item() == pytest.approx(0.75)
    # k3 over the kept ratios 0.5, 1.5, 1.0, 1.5 (Σ(ρ − 1) = 0.5 ≠ 0, so k3 differs from −log ρ here):
    # (0.1931472 + 0.0945349 + 0 + 0.0945349)/4 = 0.0955543
    assert out.approx_kl.item() == pytest.approx(0.0955543, abs=1e-6)
    # junk in the masked entries (huge ratios and advantages) changes nothing
    junk_new = torch.where(mask, NEW, torch.tensor(5.0))
    junk_adv = torch.where(mask, ADV, torch.tensor(1e4))
    junk = ppo_loss(junk_new, OLD, junk_adv, mask=mask, clip=EPS)
    for name in ("loss", "policy", "approx_kl", "clip_fraction"):
        assert getattr(junk, name).item() == pytest.approx(getattr(out, name).item(), abs=1e-6), name


def test_ppo_value_clipping_by_hand():
    # element 0: V_old = 0, V = 1, R = 1. Unclipped error 0; clipped V = 0 + clip(1, ±0.2) = 0.2, error
    #            (0.2 − 1)² = 0.64 → the clipped (larger) one is taken: 0.64
    # element 1: V_old = 0, V = 1, R = −1. Unclipped (1 + 1)² = 4; clipped (0.2 + 1)² = 1.44 → unclipped: 4
    # element 2: V_old = 0.5, V = 0.6, R = 0 (inside the clip range): both 0.36
    values = torch.tensor([1.0, 1.0, 0.6])
    old_values = torch.tensor([0.0, 0.0, 0.5])
    returns = torch.tensor([1.0, -1.0, 0.0])
    zeros = torch.zeros(3)

    def value_term(i, value_clip=0.2):
        return ppo_loss(zeros[i : i + 1], zeros[i : i + 1], zeros[i : i + 1], values[i : i + 1], old_values[i : i + 1],
                        returns[i : i + 1], value_clip=value_clip).value.item()

    assert value_term(0) == pytest.approx(0.5 * 0.64)
    assert value_term(1) == pytest.approx(0.5 * 4.0)
    assert value_term(2) == pytest.approx(0.5 * 0.36)
    # without clipping: ½(V − R)² = 0, 2, 0.18
    assert value_term(0, None) == 0.0
    assert value_term(1, None) == pytest.approx(2.0)
    both = ppo_loss(zeros, zeros, zeros, values, old_values, returns, value_clip=0.2, vf_coef=0.5)
    assert both.value.item() == pytest.approx(0.5 * (0.64 + 4.0 + 0.36) / 3)  # = 5/6
    assert both.loss.item() == pytest.approx(0.5 * 5 / 6)  # policy term 0 (A = 0) + vf_coef · value


def test_ppo_value_loss_is_masked():
    values, returns = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])
    out = ppo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), values, None, returns,
                   mask=torch.tensor([True, False]), value_clip=None)
    assert out.value.item() == pytest.approx(0.5)  # ½·1², the 3 is masked out


def test_ppo_value_arguments_are_checked():
    z = torch.zeros(2)
    with pytest.raises(ValueError, match="no returns"):
        ppo_loss(z, z, z, values=z)
    with pytest.raises(ValueError, match="needs old_values"):
        ppo_loss(z, z, z, values=z, returns=z, value_clip=0.2)


def test_ppo_entropy_bonus_lowers_the_loss():
    entropy = torch.tensor([0.5, 1.5, 100.0])
    mask = torch.tensor([True, True, False])  # masked mean entropy = 1.0
    lp = torch.tensor([-1.0, -2.0, -3.0])
    adv = torch.tensor([1.0, -2.0, 0.5])
    base = ppo_loss(lp, lp, adv, entropy=entropy, mask=mask, ent_coef=0.0)
    bonus = ppo_loss(lp, lp, adv, entropy=entropy, mask=mask, ent_coef=0.1)
    assert bonus.entropy.item() == pytest.approx(1.0)
    assert bonus.loss.item() == pytest.approx(base.loss.item() - 0.1 * 1.0)  # loss − c_e·H
    assert bonus.loss.item() < base.loss.item()
    # policy term at ratio 1: −(1 − 2)/2 = 0.5
    assert base.loss.item() == pytest.approx(0.5)


def test_ppo_policy_gradient_by_hand():
    # d(−min(ρA, clip(ρ)A)/n)/d log π = −ρA/n where the unclipped term is the min, 0 where the clipped one is:
    #   A=+1: ρ=0.5 → −0.5/6; ρ=1 → −1/6; ρ=1.5 (clipped, 1.2 < 1.5) → 0
    #   A=−1: ρ=0.5 (clipped, −0.8 < −0.5) → 0; ρ=1 → +1/6; ρ=1.5 → +1.5/6
    logprobs = NEW.clone().requires_grad_(True)
    ppo_loss(logprobs, OLD, ADV, clip=EPS).loss.backward()
    expected = torch.tensor([-0.5, -1.0, 0.0, 0.0, 1.0, 1.5]) / 6
    torch.testing.assert_close(logprobs.grad, expected)
    assert logprobs.grad[2].item() == 0.0  # positive advantage, ratio above 1 + ε: no push further up


def test_ppo_value_gradient_is_zero_when_the_clipped_error_wins():
    # element 0 of the value-clipping case: the clipped error wins and does not depend on V (clamp saturated)
    values = torch.tensor([1.0, 1.0], requires_grad=True)
    out = ppo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), values, torch.zeros(2), torch.tensor([1.0, -1.0]),
                   value_clip=0.2, vf_coef=1.0)
    out.loss.backward()
    # element 1: d(½·(V − R)²/2)/dV = (V − R)/2 = 1
    torch.testing.assert_close(values.grad, torch.tensor([0.0, 1.0]))


# ------------------------------------------------------------------------------------------------------ DPO
# β = 0.5. Pair 0: π(y_w) = −1, π(y_l) = −3, ref = −2, −2 → chosen = 1, rejected = −1, h = 2, βh = 1.
# Pair 1: π(y_w) = −2, π(y_l) = −1, ref = −1, −1 → chosen = −1, rejected = 0, h = −1, βh = −0.5.
PC, PR = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
RC, RR = torch.tensor([-2.0, -1.0]), torch.tensor([-2.0, -1.0])
BETA = 0.5


def _softplus(x):
    return math.log1p(math.exp(x))  # −log σ(−x)


def test_dpo_sigmoid_by_hand():
    out = dpo_loss(PC, PR, RC, RR, beta=BETA)
    # −log σ(z) = log(1 + e^−z): z = 1 → 0.3132617, z = −0.5 → 0.9740770
    assert out.loss.item() == pytest.approx((_softplus(-1.0) + _softplus(0.5)) / 2, abs=1e-6)
    assert out.loss.item() == pytest.approx((0.3132617 + 0.9740770) / 2, abs=1e-6)
    # implicit rewards β·chosen = 0.5, −0.5 (mean 0); β·rejected = −0.5, 0 (mean −0.25)
    assert out.chosen_reward.item() == pytest.approx(0.0)
    assert out.rejected_reward.item() == pytest.approx(-0.25)
    # pair 0 ranks chosen first (0.5 > −0.5), pair 1 does not (−0.5 < 0)
    assert out.accuracy.item() == 0.5
    # margin = mean β·h = (1 − 0.5)/2
    assert out.margin.item() == pytest.approx(0.25)


def test_dpo_subtracts_the_reference_log_probs():
    """Guards against a DPO loss that ignores the reference model. The other cases give chosen and rejected the same
    reference log-prob, so the reference cancels in h; here it does not.

    β = 1. Pair 0: π(y_w) = π(y_l) = −1, ref = −2, −1 → h = (−1 + 2) − (−1 + 1) = 1 (without the reference: 0).
    Pair 1: π(y_w) = −1, π(y_l) = −2, ref = −1, −3 → h = 0 − 1 = −1 (without the reference: +1)."""
    pc, pr = torch.tensor([-1.0, -1.0]), torch.tensor([-1.0, -2.0])
    rc, rr = torch.tensor([-2.0, -1.0]), torch.tensor([-1.0, -3.0])
    out = dpo_loss(pc, pr, rc, rr, beta=1.0)
    # −log σ(1) = 0.3132617, −log σ(−1) = 1.3132617
    assert out.loss.item() == pytest.approx((0.3132617 + 1.3132617) / 2, abs=1e-6)
    assert out.chosen_reward.item() == pytest.approx((1.0 + 0.0) / 2)  # mean β·(π(y_w) − ref(y_w))
    assert out.rejected_reward.item() == pytest.approx((0.0 + 1.0) / 2)
    assert out.accuracy.item() == 0.5 and out.margin.item() == pytest.approx(0.0)
    # IPO: (h − 1/(2β))² = (1 − 0.5)², (−1 − 0.5)² → mean (0.25 + 2.25)/2
    assert dpo_loss(pc, pr, rc, rr, beta=1.0, loss_type="ipo").loss.item() == pytest.approx(1.25)


def test_dpo_accuracy_counts_a_tie_as_wrong():
    # pair 0 as above (right), pair 1 with equal implicit rewards (h = 0): 1 of 2, as TRL counts it
    out = dpo_loss(torch.tensor([-1.0, -1.0]), torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -1.0]),
                   torch.tensor([-2.0, -1.0]), beta=BETA)
    assert out.accuracy.item() == 0.5
    # h = 0 → −log σ(0) = log 2
    assert out.loss.item() == pytest.approx((0.3132617 + math.log(2.0)) / 2, abs=1e-6)


def test_dpo_label_smoothing_by_hand():
    # −(1 − ε)·log σ(z) − ε·log σ(−z), ε = 0.1:
    #   z = 1:    0.9·0.3132617 + 0.1·1.3132617 = 0.4132617
    #   z = −0.5: 0.9·0.9740770 + 0.1·0.4740770 = 0.9240770
    out = dpo_loss(PC, PR, RC, RR, beta=BETA, label_smoothing=0.1)
    assert out.loss.item() == pytest.approx((0.4132617 + 0.9240770) / 2, abs=1e-6)


def test_ipo_by_hand():
    # (h − 1/(2β))² with 1/(2·0.5) = 1: (2 − 1)² = 1, (−1 − 1)² = 4 → mean 2.5
    out = dpo_loss(PC, PR, RC, RR, beta=BETA, loss_type="ipo")
    assert out.loss.item() == pytest.approx(2.5)
    assert out.margin.item() == pytest.approx(0.25)  # the logged terms do not depend on the loss type


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc = PC.clone().requires_grad_(True)
    pr = PR.clone().requires_grad_(True)
    dpo_loss(pc, pr, RC, RR, beta=BETA).loss.backward()
    # d(−log σ(βh))/dπ(y_w) = −β·σ(−βh)/B: pair 0: −0.5·σ(−1)/2 = −0.0672146; pair 1: −0.5·σ(0.5)/2 = −0.1556148
    sig = lambda x: 1 / (1 + math.exp(-x))
    torch.testing.assert_close(pc.grad, torch.tensor([-0.25 * sig(-1.0), -0.25 * sig(0.5)]))
    torch.testing.assert_close(pr.grad, -pc.grad)
    assert (pc.grad < 0).all() and (pr.grad > 0).all()
    # and so a step up on π(y_w) lowers the loss
    before = dpo_loss(PC, PR, RC, RR, beta=BETA).loss.item()
    after = dpo_loss(PC + 0.1, PR, RC, RR, beta=BETA).loss.item()
    assert after < before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss_type": "hinge"}, "loss_type='hinge'"),
        ({"beta": 0.0}, "beta=0.0 must be > 0"),
        ({"beta": -1.0}, "beta=-1.0 must be > 0"),
        ({"beta": float("nan")}, "must be > 0"),
        ({"label_smoothing": 0.5}, r"label_smoothing=0.5 must be in \[0, 0.5\)"),
        ({"label_smoothing": -0.1}, "label_smoothing=-0.1"),
    ],
)
def test_dpo_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dpo_loss(PC, PR, RC, RR, **kwargs)
