"""Adaptive β (Ziegler et al. 2019): one update per batch of rollouts, with the batch-mean episode KL."""

import io
import math

import pytest
import torch

from textenv.kl import KLController


def test_one_update_per_batch_with_the_batch_mean_kl():
    """Guards against β updated once per group of envs that finished on the same step: 32 episodes at KL 0.5 and
    32 at KL 30 (target 6) left β at 0.09999996 (−0.2 then +0.2); the batch mean 15.25 is above the target."""
    c = KLController(0.1, target=6.0, horizon=10_000)
    for kl in [0.5] * 32 + [30.0] * 32:
        c.observe(kl)
        assert c.value == 0.1  # never within a batch
    # mean 15.25 → error clip(15.25/6 − 1, ±0.2) = 0.2 → 0.1·(1 + 0.2·64/10000) = 0.100128
    assert c.end_batch() == pytest.approx(0.100128, abs=1e-12)
    assert c.pending == []
    assert c.end_batch() == pytest.approx(0.100128, abs=1e-12)  # an empty batch changes nothing


def test_the_mean_not_the_sum_of_episode_kls():
    """Guards against adaptive β driven by the sum of the batch's episode KLs instead of their mean (issue 20):
    KLs 5 and 6.4 have mean 5.7 (below the target 6: β falls) but sum 11.4 (above it: β would rise)."""
    c = KLController(0.1, target=6.0, horizon=10_000)
    c.observe(5.0)
    c.observe(6.4)
    # error 5.7/6 − 1 = −0.05 → 0.1·(1 − 0.05·2/10000) = 0.099999
    assert c.end_batch() == pytest.approx(0.099999, abs=1e-12)


def test_fixed_beta_records_nothing_and_never_moves():
    c = KLController(0.1)
    c.observe(100.0)
    assert c.pending == [] and c.end_batch() == 0.1


def test_state_round_trips_with_pending_episodes_as_plain_values():
    """Guards against a checkpoint taken mid-batch losing the recorded episodes, or holding objects that
    ``torch.load(weights_only=True)`` refuses."""
    c = KLController(0.1, target=6.0, horizon=100)
    c.observe(9.0)
    buffer = io.BytesIO()
    torch.save(c.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state == {"value": 0.1, "target": 6.0, "horizon": 100, "pending": [9.0]}
    restored = KLController(1.0)
    restored.load_state_dict(state)
    assert restored == c
    assert restored.end_batch() == pytest.approx(0.1 * (1 + 0.2 / 100)) == c.end_batch()
    restored.load_state_dict({"value": 0.2, "target": 6.0, "horizon": 100})  # saved before `pending` existed
    assert restored.pending == [] and restored.value == 0.2


@pytest.mark.parametrize("bad, match", [
    ({"value": -1.0}, "kl_coef=-1.0"), ({"value": float("nan")}, "kl_coef=nan"), ({"value": "0.1"}, "kl_coef='0.1'"),
    ({"value": 0.1, "target": 0.0}, "kl_target=0.0"), ({"value": 0.1, "target": math.inf}, "kl_target=inf"),
    ({"value": 0.1, "horizon": 0}, "kl_horizon=0"), ({"value": 0.1, "horizon": 2.5}, "kl_horizon=2.5"),
])
def test_bad_settings_are_refused_by_name(bad, match):
    with pytest.raises(ValueError, match=match):
        KLController(**bad)


def test_a_bad_state_is_refused_without_changing_the_controller():
    c = KLController(0.1, target=6.0)
    with pytest.raises(ValueError, match="unknown keys"):
        c.load_state_dict({"value": 0.2, "beta": 1.0})
    with pytest.raises(ValueError, match="kl_coef=-0.2"):
        c.load_state_dict({"value": -0.2, "target": 6.0, "horizon": 10})
    assert c == KLController(0.1, target=6.0)
