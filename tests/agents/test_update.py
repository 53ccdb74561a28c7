"""agents.core.update.ppo_update: how many epochs and optimizer steps run, early stopping on KL, and skipped minibatches."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.policies.mlp import MLPCategoricalPolicy
from agents.core.update import UpdateSettings, ppo_update

N, ROWS = 16, 4  # 16 rows in minibatches of 4: four minibatches per epoch


def _policy_and_batch(seed=0):
    torch.manual_seed(seed)
    policy = MLPCategoricalPolicy(spaces.Box(-1.0, 1.0, (3,)), spaces.Discrete(2), hidden=(8,), value=True)
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(N, 3, generator=g) * 2 - 1
    actions = torch.randint(0, 2, (N,), generator=g)
    with torch.no_grad():
        old = policy.evaluate({"obs": obs, "actions": actions})
    batch = {"obs": obs, "actions": actions, "old_logprobs": old.logprob, "old_values": old.value,
             "advantages": torch.randn(N, generator=g), "returns": torch.randn(N, generator=g),
             "mask": torch.ones(N, dtype=torch.bool)}
    return policy, batch


class CountingAdam(torch.optim.Adam):
    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


def _run(target_kl, epochs=3, extra_loss=None, lr=1e-3):
    policy, batch = _policy_and_batch()
    optimizer = CountingAdam(policy.parameters(), lr=lr)
    settings = UpdateSettings(epochs=epochs, minibatch_rows=ROWS, target_kl=target_kl)
    out = ppo_update(policy, optimizer, batch, settings, np.random.default_rng(0), extra_loss)
    return policy, optimizer, out


@pytest.mark.parametrize("target_kl", [None, 1e9])
def test_without_a_kl_stop_every_epoch_and_minibatch_steps(target_kl):
    """Guards against an update that stops after the first epoch (or minibatch) when ``target_kl`` is None or never
    reached: 3 epochs × 4 minibatches must give 12 optimizer steps."""
    _, optimizer, out = _run(target_kl, epochs=3)
    assert out["epochs"] == 3 and out["skipped"] == 0
    assert optimizer.steps == 3 * (N // ROWS)


def test_a_tiny_target_kl_stops_before_the_second_minibatch_steps():
    """Early stop (SB3's rule: approx-KL > 1.5·target_kl): the first minibatch has ratio 1 (KL 0) and steps; the
    second sees the moved policy, exceeds 1.5e-12 and stops all epochs without stepping."""
    _, optimizer, out = _run(1e-12, epochs=3, lr=1e-2)
    assert out["epochs"] == 1
    assert optimizer.steps == 1


class _InfiniteGradient(torch.autograd.Function):
    """Forward: 0 (a finite loss term). Backward: an infinite gradient for its input."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.sum() * 0.0

    @staticmethod
    def backward(ctx, grad):
        return torch.full(ctx.shape, float("inf")) * grad  # d(0·Σx)/dx is 0; make it inf, as an overflow would


def _infinite_gradient(policy):
    weight = next(policy.parameters())
    return lambda: _InfiniteGradient.apply(weight)


def test_a_non_finite_gradient_skips_the_minibatch_and_leaves_the_weights_alone():
    """Guards the docstring's "a non-finite loss or gradient skips that minibatch": the loss is finite (the extra
    term is 0) but its gradient is infinite. Without the gradient check, clipping turns inf into NaN and Adam
    writes NaN into the weights; with it, every minibatch is skipped, counted, and nothing moves."""
    policy, batch = _policy_and_batch()
    before = [p.detach().clone() for p in policy.parameters()]
    optimizer = CountingAdam(policy.parameters(), lr=1e-2)
    extra = _infinite_gradient(policy)
    assert torch.isfinite(extra())  # the loss stays finite: only the gradient is bad
    out = ppo_update(policy, optimizer, batch, UpdateSettings(epochs=2, minibatch_rows=ROWS), np.random.default_rng(0),
                     extra)
    assert out["skipped"] == 2 * (N // ROWS) and optimizer.steps == 0
    for p, q in zip(policy.parameters(), before):
        assert torch.equal(p, q)
        assert p.grad is None  # the bad gradient is not left behind for a later step
    # a positive control: the same update without the bad term moves the weights
    out = ppo_update(policy, optimizer, batch, UpdateSettings(epochs=1, minibatch_rows=ROWS), np.random.default_rng(0))
    assert out["skipped"] == 0 and optimizer.steps == N // ROWS
    assert any(not torch.equal(p, q) for p, q in zip(policy.parameters(), before))
