"""The policy protocol: what every agent's policy provides, with no base class to inherit.

A policy is anything with two methods:

* ``act(obs) -> Act``: sample actions for a batch of observations (numpy, as a vector env returns them), with
  their log-probabilities, the critic's values (None for a policy without one) and, optionally, the whole
  log-softmax the actions were drawn from (a text env's KL shaping uses it; see :mod:`textenv.kl`).
* ``evaluate(batch, entropy_grad=True) -> Evaluation``: log-probabilities, entropies and values of
  ``batch["actions"]`` under the current parameters, with gradients (for the entropy only when
  ``entropy_grad``), the shape of ``batch["actions"]``: ``(B,)`` steps of an MLP policy, ``(B, T)`` tokens of an
  LM policy (:class:`agents.policies.lm.LMPolicy`).

A policy that keeps state while acting (the LM's KV cache) also has ``start(env)`` (called after every reset
of all envs) and ``advance(actions)`` (after every step); :mod:`agents.core.rollout` calls them when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class Act:
    """What ``Policy.act`` returns for a batch of N observations."""

    action: torch.Tensor
    """(N,) sampled actions."""
    logprob: torch.Tensor
    """(N,) their log-probabilities."""
    value: torch.Tensor | None = None
    """(N,) V(obs), or None for a policy without a critic (or one that computes values later)."""
    dist_logprobs: torch.Tensor | None = None
    """(N, A) the log-softmax the actions were sampled from, when cheap to give."""


@dataclass
class Evaluation:
    """What ``Policy.evaluate`` returns, each the shape of ``batch["actions"]``."""

    logprob: torch.Tensor
    entropy: torch.Tensor
    value: torch.Tensor | None


@runtime_checkable
class Policy(Protocol):
    def act(self, obs) -> Act: ...

    def evaluate(self, batch: dict[str, torch.Tensor], entropy_grad: bool = True) -> Evaluation: ...
