"""agents.core.advantages against hand-computed numbers (the arithmetic is in the comments) and an independent loop."""

import math

import pytest
import torch

from agents.core.advantages import discounted_returns, gae, group_advantages, whiten

F, T_ = False, True


def _bools(rows):
    return torch.tensor(rows, dtype=torch.bool)


# --------------------------------------------------------------------------------------------------- GAE by hand
# γ = 0.9, λ = 0.8, so γλ = 0.72. T = 4 steps, N = 2 envs.
#
# env 0: r = [1, 2, 3, 4], V = [0.5, 1.0, 1.5, 2.0]; terminated at t=1, then a new episode still running after
#        t=3, whose next observation is worth next_value = 3.0.
#   t=3: δ = 4 + 0.9·3.0 − 2.0 = 4.7                      A = 4.7
#   t=2: δ = 3 + 0.9·2.0 − 1.5 = 3.3                      A = 3.3 + 0.72·4.7 = 6.684
#   t=1: terminated → δ = 2 + 0 − 1.0 = 1.0               A = 1.0 (no carry from t=2)
#   t=0: δ = 1 + 0.9·1.0 − 0.5 = 1.4                      A = 1.4 + 0.72·1.0 = 2.12
#   returns = A + V = [2.62, 2.0, 8.184, 6.7]
#
# env 1: r = [1, 0, 2, 1], V = [1.0, 2.0, 1.0, 0.5]; truncated at t=1 with bootstrap 5.0 (V of the final obs),
#        terminated at t=3 (so next_value = 100 must be ignored).
#   t=3: terminated → δ = 1 − 0.5 = 0.5                   A = 0.5
#   t=2: δ = 2 + 0.9·0.5 − 1.0 = 1.45                     A = 1.45 + 0.72·0.5 = 1.81
#   t=1: truncated → δ = 0 + 0.9·5.0 − 2.0 = 2.5          A = 2.5 (no carry from t=2)
#   t=0: δ = 1 + 0.9·2.0 − 1.0 = 1.8                      A = 1.8 + 0.72·2.5 = 3.6
#   returns = [4.6, 4.5, 2.81, 1.0]
GAMMA, LAM = 0.9, 0.8
REWARDS = torch.tensor([[1.0, 1.0], [2.0, 0.0], [3.0, 2.0], [4.0, 1.0]])
VALUES = torch.tensor([[0.5, 1.0], [1.0, 2.0], [1.5, 1.0], [2.0, 0.5]])
TERMINATED = _bools([[F, F], [T_, F], [F, F], [F, T_]])
TRUNCATED = _bools([[F, F], [F, T_], [F, F], [F, F]])
NEXT_VALUE = torch.tensor([3.0, 100.0])
# bootstrap is only read where truncated: the other entries hold junk that must not leak in
BOOTSTRAP = torch.tensor([[-7.0, -7.0], [-7.0, 5.0], [-7.0, -7.0], [-7.0, -7.0]])
EXPECTED_ADV = torch.tensor([[2.12, 3.6], [1.0, 2.5], [6.684, 1.81], [4.7, 0.5]])
EXPECTED_RET = torch.tensor([[2.62, 4.6], [2.0, 4.5], [8.184, 2.81], [6.7, 1.0]])


def test_gae_by_hand_with_termination_truncation_and_running_episode():
    adv, ret = gae(REWARDS, VALUES, TERMINATED, TRUNCATED, NEXT_VALUE, BOOTSTRAP, gamma=GAMMA, lam=LAM)
    torch.testing.assert_close(adv, EXPECTED_ADV)
    torch.testing.assert_close(ret, EXPECTED_RET)


def test_gae_without_bootstrap_treats_the_truncated_future_as_zero():
    # env 1, t=1 without a bootstrap: δ = 0 + 0.9·0 − 2.0 = −2.0 = A; t=0: δ = 1.8, A = 1.8 + 0.72·(−2.0) = 0.36
    adv, _ = gae(REWARDS, VALUES, TERMINATED, TRUNCATED, NEXT_VALUE, None, gamma=GAMMA, lam=LAM)
    torch.testing.assert_close(adv[:, 1], torch.tensor([0.36, -2.0, 1.81, 0.5]))
    torch.testing.assert_close(adv[:, 0], EXPECTED_ADV[:, 0])  # env 0 never truncates: unchanged


def test_gae_next_value_only_matters_for_a_running_last_step():
    changed = NEXT_VALUE + torch.tensor([1.0, 1.0])
    adv, _ = gae(REWARDS, VALUES, TERMINATED, TRUNCATED, changed, BOOTSTRAP, gamma=GAMMA, lam=LAM)
    # env 1 terminated at t=3: nothing changes. env 0: +0.9 at t=3, +0.72·0.9 = 0.648 at t=2, nothing before
    # the termination at t=1.
    torch.testing.assert_close(adv[:, 1], EXPECTED_ADV[:, 1])
    torch.testing.assert_close(adv[:, 0], EXPECTED_ADV[:, 0] + torch.tensor([0.0, 0.0, 0.648, 0.9]))


def test_gae_with_lambda_one_gives_discounted_returns():
    # λ = 1, γ = 0.5, one env, no ends, next_value = 8: G = [1 + .5·(2 + .5·(3 + .5·8)), 2 + .5·(3 + 4), 3 + 4]
    #                                                      = [1 + .5·5.5, 5.5, 7] = [3.75, 5.5, 7.0]
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.3], [-1.0], [2.0]])
    no = torch.zeros(3, 1, dtype=torch.bool)
    adv, ret = gae(rewards, values, no, no, torch.tensor([8.0]), gamma=0.5, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[3.75], [5.5], [7.0]]))
    torch.testing.assert_close(adv, ret - values)


def _reference_gae(rewards, values, terminated, truncated, next_value, bootstrap, gamma, lam):
    """Forward-sum form, one env at a time: A_t = Σ_k (γλ)^k δ_{t+k} over the rest of t's episode."""
    T, N = len(rewards), len(rewards[0])
    adv = [[0.0] * N for _ in range(T)]
    for n in range(N):
        deltas, ends = [], []
        for t in range(T):
            if terminated[t][n]:
                future = 0.0
            elif truncated[t][n]:
                future = bootstrap[t][n]
            elif t == T - 1:
                future = next_value[n]
            else:
                future = values[t + 1][n]
            deltas.append(rewards[t][n] + gamma * future - values[t][n])
            ends.append(terminated[t][n] or truncated[t][n])
        for t in range(T):
            total, k = 0.0, 0
            while t + k < T:
                total += (gamma * lam) ** k * deltas[t + k]
                if ends[t + k]:
                    break
                k += 1
            adv[t][n] = total
    return adv


def _random_case(seed, dtype):
    g = torch.Generator().manual_seed(seed)
    T, N = 13, 5
    rewards = torch.randn(T, N, generator=g, dtype=dtype)
    values = torch.randn(T, N, generator=g, dtype=dtype)
    u = torch.rand(T, N, generator=g)
    terminated, truncated = u < 0.15, (u >= 0.15) & (u < 0.3)
    assert terminated.any() and truncated.any()  # the random case really exercises both ends
    next_value = torch.randn(N, generator=g, dtype=dtype)
    bootstrap = torch.randn(T, N, generator=g, dtype=dtype)
    return rewards, values, terminated, truncated, next_value, bootstrap


def _check_against_reference(seed, dtype):
    gamma, lam = 0.97, 0.9
    case = _random_case(seed, dtype)
    adv, ret = gae(*case, gamma=gamma, lam=lam)
    assert adv.dtype == dtype and ret.dtype == dtype
    expected = _reference_gae(*(x.tolist() for x in case), gamma, lam)
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=dtype))  # dtype-appropriate tolerances
    torch.testing.assert_close(ret, adv + case[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_an_independent_per_env_loop(seed):
    _check_against_reference(seed, torch.float32)


# float64 inputs stay float64 throughout (a Python float times a bool mask would silently round γλ to float32)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_keeps_float64_precision(seed):
    _check_against_reference(seed, torch.float64)


def test_gae_treats_terminated_and_truncated_together_as_terminated():
    # an episode that falls on the last step its time limit allows: Gymnasium sets both flags; nothing is bootstrapped
    both = _bools([[F, F], [T_, F], [F, F], [F, F]])
    big = torch.full_like(VALUES, 1000.0)
    adv_both, _ = gae(REWARDS, VALUES, both, both, NEXT_VALUE, bootstrap=big, gamma=0.9, lam=0.8)
    adv_term, _ = gae(REWARDS, VALUES, both, torch.zeros_like(both), NEXT_VALUE, bootstrap=big, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv_both, adv_term)


@pytest.mark.parametrize("name", ["values", "terminated", "truncated"])
def test_gae_refuses_mismatched_shapes(name):
    args = {"values": VALUES, "terminated": TERMINATED, "truncated": TRUNCATED}
    args[name] = args[name][:, :1]  # (4, 1) instead of (4, 2)
    with pytest.raises(ValueError, match=f"{name} has shape \\(4, 1\\)"):
        gae(REWARDS, args["values"], args["terminated"], args["truncated"], NEXT_VALUE)


def test_gae_refuses_one_dimensional_rewards():
    with pytest.raises(ValueError, match=r"rewards must be \(T, N\)"):
        gae(REWARDS[:, 0], VALUES[:, 0], TERMINATED[:, 0], TRUNCATED[:, 0], NEXT_VALUE[:1])


# ----------------------------------------------------------------------------------------- discounted returns
def test_discounted_returns_by_hand():
    # γ = 0.5. env 0: r = [1, 2, 3], terminated at t=1, running at the end with next_value 10.
    #   G2 = 3 + .5·10 = 8; G1 = 2 (terminated); G0 = 1 + .5·2 = 2
    # env 1: r = [1, 0, 5], truncated at t=0 with bootstrap 4, running at the end with next_value 2.
    #   G2 = 5 + .5·2 = 6; G1 = 0 + .5·6 = 3; G0 = 1 + .5·4 = 3 (no carry of G1 across the truncation)
    rewards = torch.tensor([[1.0, 1.0], [2.0, 0.0], [3.0, 5.0]])
    terminated = _bools([[F, F], [T_, F], [F, F]])
    truncated = _bools([[F, T_], [F, F], [F, F]])
    bootstrap = torch.tensor([[0.0, 4.0], [0.0, 0.0], [0.0, 0.0]])
    got = discounted_returns(rewards, terminated, truncated, torch.tensor([10.0, 2.0]), bootstrap, gamma=0.5)
    torch.testing.assert_close(got, torch.tensor([[2.0, 3.0], [2.0, 3.0], [8.0, 6.0]]))
    # no next_value and no bootstrap: the futures are 0. env 0: G2 = 3. env 1: G2 = 5, G1 = 2.5, G0 = 1
    got = discounted_returns(rewards, terminated, truncated, gamma=0.5)
    torch.testing.assert_close(got, torch.tensor([[2.0, 1.0], [2.0, 2.5], [3.0, 5.0]]))


# ------------------------------------------------------------------------------------------ group advantages
# Two groups of K = 3: (1, 2, 6) with mean 3, and (0, 4, 8) with mean 4.
RETURNS = torch.tensor([1.0, 2.0, 6.0, 0.0, 4.0, 8.0])
# unbiased std: group 1: ((−2)² + (−1)² + 3²)/2 = 14/2 = 7 → √7; group 2: (16 + 0 + 16)/2 = 16 → 4
S7 = math.sqrt(7.0)


@pytest.mark.parametrize(
    ("baseline", "scale", "expected"),
    [
        ("none", "none", [1.0, 2.0, 6.0, 0.0, 4.0, 8.0]),
        ("mean", "none", [-2.0, -1.0, 3.0, -4.0, 0.0, 4.0]),
        # leave-one-out baselines: (2+6)/2 = 4, (1+6)/2 = 3.5, (1+2)/2 = 1.5 | (4+8)/2 = 6, (0+8)/2 = 4, (0+4)/2 = 2
        ("loo", "none", [1 - 4.0, 2 - 3.5, 6 - 1.5, 0 - 6.0, 4 - 4.0, 8 - 2.0]),
        ("none", "std", [1 / S7, 2 / S7, 6 / S7, 0.0, 1.0, 2.0]),
        ("mean", "std", [-2 / S7, -1 / S7, 3 / S7, -1.0, 0.0, 1.0]),
        ("loo", "std", [-3 / S7, -1.5 / S7, 4.5 / S7, -1.5, 0.0, 1.5]),
    ],
)
def test_group_advantages_by_hand(baseline, scale, expected):
    got = group_advantages(RETURNS, 3, baseline, scale, eps=0.0)
    torch.testing.assert_close(got, torch.tensor(expected))


def test_group_std_scale_adds_eps_to_the_std():
    # group 2 has std 4: (8 − 4)/(4 + 1) = 0.8
    got = group_advantages(RETURNS, 3, "mean", "std", eps=1.0)
    torch.testing.assert_close(got[3:], torch.tensor([-0.8, 0.0, 0.8]))


def test_loo_is_k_over_k_minus_1_times_the_mean_baseline():
    # (1-2, 2-1) etc. are in the doctest; here K = 3: 3/2 · [−2, −1, 3, −4, 0, 4]
    loo = group_advantages(RETURNS, 3, "loo")
    mean = group_advantages(RETURNS, 3, "mean")
    torch.testing.assert_close(loo, 1.5 * mean)
    torch.testing.assert_close(loo, torch.tensor([-3.0, -1.5, 4.5, -6.0, 0.0, 6.0]))


@pytest.mark.parametrize("K", [2, 3, 5])
def test_loo_baseline_is_the_mean_of_the_other_members(K):
    g = torch.Generator().manual_seed(K)
    returns = torch.randn(4 * K, generator=g, dtype=torch.float64)
    got = group_advantages(returns, K, "loo")
    values = returns.tolist()
    for i, r in enumerate(values):
        start = (i // K) * K
        others = [values[j] for j in range(start, start + K) if j != i]
        assert got[i].item() == pytest.approx(r - sum(others) / len(others), abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"returns": RETURNS, "group_size": 3, "baseline": "median"}, "baseline='median'"),
        ({"returns": RETURNS, "group_size": 3, "scale": "var"}, "scale='var'"),
        ({"returns": RETURNS, "group_size": 4}, "cannot be split into groups of 4"),
        ({"returns": RETURNS, "group_size": 0}, "cannot be split into groups of 0"),
        ({"returns": RETURNS.view(2, 3), "group_size": 3}, "cannot be split"),
        ({"returns": RETURNS, "group_size": 1, "baseline": "loo"}, "'loo' baseline needs group_size >= 2"),
        ({"returns": RETURNS, "group_size": 1, "baseline": "mean"}, "'mean' baseline needs group_size >= 2"),
        ({"returns": RETURNS, "group_size": 1, "baseline": "none", "scale": "std"}, "scale='std' needs group_size >= 2"),
    ],
)
def test_group_advantages_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(**kwargs)


def test_group_of_one_without_baseline_is_plain_reinforce():
    torch.testing.assert_close(group_advantages(RETURNS, 1, "none"), RETURNS)


# ------------------------------------------------------------------------------------------------- whitening
def test_whiten_by_hand_over_the_masked_entries():
    # entries 1, 3, 5 (100 is masked): mean 3, biased std √((4 + 0 + 4)/3) = √(8/3); (±2)/√(8/3) = ±√1.5
    values = torch.tensor([1.0, 3.0, 100.0, 5.0])
    mask = torch.tensor([True, True, False, True])
    got = whiten(values, mask, eps=0.0)
    r = math.sqrt(1.5)
    torch.testing.assert_close(got, torch.tensor([-r, 0.0, 0.0, r]))
    kept = got[mask]
    assert abs(kept.mean().item()) < 1e-6 and kept.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    assert got[2] == 0.0
    # shift_mean=False adds the mean back: 3 ± √1.5, masked entries still 0
    torch.testing.assert_close(whiten(values, mask, shift_mean=False, eps=0.0), torch.tensor([3 - r, 3.0, 0.0, 3 + r]))


def test_whiten_on_random_input_has_masked_mean_0_and_std_1():
    g = torch.Generator().manual_seed(0)
    values = 5.0 + 3.0 * torch.randn(6, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(6, 7, generator=g) < 0.6
    got = whiten(values, mask)
    assert got[mask].mean().item() == pytest.approx(0.0, abs=1e-9)
    assert got[mask].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    assert (got[~mask] == 0).all()
    # the masked-out entries do not influence the result
    torch.testing.assert_close(whiten(torch.where(mask, values, torch.full_like(values, 1e6)), mask), got)


def test_whiten_without_mask_uses_every_entry():
    # [0, 2]: mean 1, biased std 1 → [−1, 1]
    torch.testing.assert_close(whiten(torch.tensor([0.0, 2.0]), eps=0.0), torch.tensor([-1.0, 1.0]))


@pytest.mark.parametrize("mask", [[True, False, False], [False, False, False]])
def test_whiten_needs_two_entries(mask):
    with pytest.raises(ValueError, match="at least 2 entries"):
        whiten(torch.tensor([1.0, 2.0, 3.0]), torch.tensor(mask))
