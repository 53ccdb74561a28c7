"""``ppo_update`` against a plain re-implementation of its loop (minibatch order, every loss term and setting handed to
``ppo_loss``, gradient clipping, the value warm-up, skipped minibatches, early stop, PPO-ptx), on a toy policy small
enough to check by hand: 3 actions, a logit vector and a one-weight critic. Each test names the bugs it catches."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from agents.core.losses import ppo_loss
from agents.core.update import UpdateSettings, first_epoch_rows, ppo_update, score_old
from agents.policies.base import Evaluation


class Toy(nn.Module):
    """π(a) = softmax(logits); V(obs) = w·obs + b; ``critic_name`` names the critic attribute."""

    def __init__(self, critic_name="value_head"):
        super().__init__()
        torch.manual_seed(0)
        self.logits = nn.Parameter(torch.tensor([0.3, -0.2, 0.1]))
        setattr(self, critic_name, nn.Linear(1, 1))
        self.critic_name = critic_name
        self.entropy_grads = []

    def evaluate(self, batch, entropy_grad=True):
        self.entropy_grads.append(entropy_grad)
        logp = torch.log_softmax(self.logits, -1)
        entropy = -(logp.exp() * logp).sum()
        if not entropy_grad:
            entropy = entropy.detach()
        value = getattr(self, self.critic_name)(batch["obs"][:, None]).squeeze(-1)
        return Evaluation(logp[batch["actions"]], entropy.expand(len(batch["actions"])), value)


def _batch():
    return {"obs": torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5]), "actions": torch.tensor([0, 1, 2, 0, 1]),
            "mask": torch.tensor([True, True, False, True, True]),
            "old_logprobs": torch.log(torch.tensor([0.2, 0.5, 0.3, 0.6, 0.25])),
            "advantages": torch.tensor([1.0, -0.5, 3.0, 0.7, -1.2]),
            "old_values": torch.tensor([0.1, 0.0, -0.3, 0.2, 0.4]), "returns": torch.tensor([1.0, -0.4, 0.2, 0.9, 0.0])}


SETTINGS = UpdateSettings(epochs=2, minibatch_rows=2, clip=0.1, value_clip=0.05, vf_coef=0.7, ent_coef=0.03,
                          max_grad_norm=0.5)


def _reference(policy, batch, s: UpdateSettings, seed: int, ptx=None):
    """The update's loop written out again: returns the policy after it and the number of minibatches stepped."""
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.3)
    rng = np.random.default_rng(seed)
    n, size, steps = len(batch["actions"]), s.minibatch_rows or len(batch["actions"]), 0
    critic = set(map(id, getattr(policy, policy.critic_name).parameters()))
    for _ in range(s.epochs):
        order = torch.as_tensor(rng.permutation(n))
        for start in range(0, n, size):
            mb = {k: v[order[start : start + size]] for k, v in batch.items()}
            out = Toy.evaluate(policy, mb, entropy_grad=True)
            adv = mb["advantages"] if s.train_policy else torch.zeros_like(mb["advantages"])
            terms = ppo_loss(out.logprob, mb["old_logprobs"], adv, out.value, mb["old_values"], mb["returns"],
                             out.entropy, mb["mask"], s.clip, s.value_clip, s.vf_coef, s.ent_coef if s.train_policy else 0.0)
            loss = terms.loss + (ptx() if ptx is not None and s.train_policy else 0.0)
            optimizer.zero_grad()
            loss.backward()
            if not s.train_policy:
                for p in policy.parameters():
                    if id(p) not in critic:
                        p.grad = None
            torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.grad is not None], s.max_grad_norm)
            optimizer.step()
            steps += 1
    return policy, steps


def _run(settings, critic_name="value_head", batch=None, ptx_factory=None, seed=3):
    batch = batch or _batch()
    policy = Toy(critic_name)
    reference = copy.deepcopy(policy)
    stats = ppo_update(policy, torch.optim.SGD(policy.parameters(), lr=0.3), batch, settings,
                       np.random.default_rng(seed), ptx_factory(policy) if ptx_factory else None)
    reference, steps = _reference(reference, batch, settings, seed, ptx_factory(reference) if ptx_factory else None)
    return policy, reference, stats, steps


def _same(a, b):
    return all(torch.allclose(p, q, atol=1e-7) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("critic_name", ["value_head", "critic"])
def test_two_epochs_of_minibatches_equal_the_written_out_loop(critic_name):
    """Catches: a minibatch left out (range(1, n, size), range(0, size)); any of logprob, old log-probs, advantages,
    values, old values, returns, entropy, mask, clip, value clip, vf_coef, ent_coef not handed to the loss; the
    wrong gradient clip; the wrong critic attribute (value warm-up below)."""
    policy, reference, stats, steps = _run(SETTINGS, critic_name)
    assert _same(policy, reference) and stats["epochs"] == 2 and steps == 6
    assert set(stats) >= {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm", "skipped"}
    assert policy.entropy_grads[0] is True  # ent_coef > 0: the entropy term needs its gradient
    assert not _same(policy, Toy(critic_name))  # it did move


def test_the_entropy_keeps_out_of_the_graph_without_a_bonus():
    """Catches: ``entropy_grad=ent_coef >= 0`` / ``> 1`` / None / left out."""
    policy, *_ = _run(dataclasses.replace(SETTINGS, ent_coef=0.0))
    assert set(policy.entropy_grads) == {False}
    policy, *_ = _run(dataclasses.replace(SETTINGS, ent_coef=0.5))
    assert set(policy.entropy_grads) == {True}


@pytest.mark.parametrize("critic_name", ["value_head", "critic"])
def test_value_warm_up_moves_the_critic_only(critic_name):
    """``train_policy=False``: zero advantages, no entropy bonus, no ptx, the policy's gradient dropped. Catches a
    critic not found (``value_head``/``critic`` misspelled), the policy's gradients kept, advantages kept."""
    settings = dataclasses.replace(SETTINGS, train_policy=False)
    ptx_calls = []

    def ptx_factory(policy):
        return lambda: (ptx_calls.append(1), policy.logits.sum() * 0.0)[1]

    policy, reference, stats, _ = _run(settings, critic_name, ptx_factory=ptx_factory)
    assert torch.equal(policy.logits, Toy(critic_name).logits) and _same(policy, reference)
    assert not torch.equal(getattr(policy, critic_name).weight, getattr(Toy(critic_name), critic_name).weight)
    assert stats["policy_loss"] == 0.0 and not ptx_calls and "ptx_loss" not in stats


def test_the_ptx_loss_is_added_and_logged():
    """Catches ``loss − ptx`` and a misnamed ``ptx_loss`` statistic: the ptx term pulls logit 2 up."""
    def ptx_factory(policy):
        return lambda: -3.0 * torch.log_softmax(policy.logits, -1)[2]

    policy, reference, stats, _ = _run(SETTINGS, ptx_factory=ptx_factory)
    assert _same(policy, reference) and stats["ptx_loss"] > 0


def test_non_finite_minibatches_are_skipped_counted_and_the_rest_still_step():
    """Catches ``skipped = 1``/``-= 1``/``+= 2`` and ``break`` instead of ``continue``: with the advantages of rows
    1 and 3 NaN, the minibatches holding them are skipped, and every other one steps."""
    batch = _batch()
    batch["advantages"] = torch.tensor([1.0, float("nan"), 3.0, float("nan"), -1.2])
    settings = dataclasses.replace(SETTINGS, epochs=1)
    rows = first_epoch_rows(5, settings, np.random.default_rng(3))
    bad = sum(bool(set(r.tolist()) & {1, 3}) for r in rows)
    policy, _, stats, _ = _run(settings, batch=batch)
    assert stats["skipped"] == bad >= 1 and bad < len(rows)
    assert not torch.equal(policy.logits, Toy().logits)  # the clean minibatch stepped


def test_target_kl_stops_above_one_and_a_half_times_the_target_not_at_it():
    """Catches ``>=`` for ``>`` and a factor other than 1.5: the first minibatch's approx-KL is measured, then the
    target is put just below, at, and just above approx_kl / 1.5 and at approx_kl / 2.5 + ε."""
    one = dataclasses.replace(SETTINGS, epochs=1, minibatch_rows=0)
    rows = first_epoch_rows(5, one, np.random.default_rng(0))[0]  # the update's own order, so the same float sums
    mb = {k: v[rows] for k, v in _batch().items()}
    kl = float(ppo_loss(Toy.evaluate(Toy(), mb).logprob, mb["old_logprobs"], mb["advantages"], mask=mb["mask"]).approx_kl)
    target = kl / 1.5
    assert 1.5 * target == kl  # equality is exact for this value: the boundary is testable
    for t, steps in [(target * 0.99, False), (target, True), (kl / 2.0, False), (target * 1.01, True)]:
        stats = ppo_update(Toy(), torch.optim.SGD(Toy().parameters(), lr=0.1), _batch(),
                           dataclasses.replace(one, target_kl=t), np.random.default_rng(0))
        assert ("policy_loss" in stats) is steps, (t, kl, stats)  # stopped before its one step, or stepped


def test_score_old_scores_in_the_first_epochs_minibatches_and_the_first_ratio_is_one():
    batch = {k: v for k, v in _batch().items() if k not in ("old_logprobs", "old_values")}
    policy = Toy()
    score_old(policy, batch, SETTINGS, np.random.default_rng(3))
    with torch.no_grad():
        full = Toy.evaluate(policy, batch)
    assert torch.allclose(batch["old_logprobs"], full.logprob) and torch.allclose(batch["old_values"], full.value)
    stats = ppo_update(policy, torch.optim.SGD(policy.parameters(), lr=0.3), batch, SETTINGS, np.random.default_rng(3))
    assert stats["first_log_ratio_max"] == 0.0
    rows = first_epoch_rows(5, SETTINGS, np.random.default_rng(3))
    assert sorted(torch.cat(rows).tolist()) == list(range(5)) and [len(r) for r in rows] == [2, 2, 1]
