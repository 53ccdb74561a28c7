"""The offline-RL losses as pure functions of tensors (tested against hand-computed values).

Shapes: ``B`` transitions; critics come as an ensemble ``(n, B)``; actions live in ``[-1, 1]``.
"""

from __future__ import annotations

import math

import torch


def bc_loss(pred_actions: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Behaviour cloning: the squared error averaged over batch and action dimensions, as ``F.mse_loss`` (the
    convention of TD3+BC and d3rlpy).

    >>> bc_loss(torch.tensor([[0.5, 0.0]]), torch.tensor([[0.0, 1.0]]))
    tensor(0.6250)
    """
    return ((pred_actions - actions) ** 2).mean()


def td_target(rewards: torch.Tensor, next_values: torch.Tensor, terminals: torch.Tensor, gamma: float) -> torch.Tensor:
    """``r + γ·(1 − terminal)·V(s')``: timeouts are not terminals, so they bootstrap."""
    return rewards + gamma * (1.0 - terminals.float()) * next_values


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the ensemble of each critic's mean squared TD error (``q``: ``(n, B)``, ``target``: ``(B,)``)."""
    return ((q - target.unsqueeze(0)) ** 2).mean(dim=1).sum()


def td3_bc_actor_loss(q_pi: torch.Tensor, pi_actions: torch.Tensor, actions: torch.Tensor, alpha: float) -> torch.Tensor:
    """TD3+BC (Fujimoto & Gu 2021): ``−λ·mean Q(s, π(s)) + mean (π(s) − a)²`` with ``λ = α / mean|Q(s, π(s))|``
    (``λ`` is not differentiated)."""
    lam = alpha / q_pi.abs().mean().detach().clamp_min(1e-6)
    return -lam * q_pi.mean() + bc_loss(pi_actions, actions)


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """IQL's asymmetric L2: ``mean |τ − 1(u < 0)|·u²`` with ``u = Q − V``.

    >>> expectile_loss(torch.tensor([2.0, -1.0]), 0.7)
    tensor(1.5500)
    """
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff**2).mean()


def awr_weights(advantages: torch.Tensor, beta: float, max_weight: float = 100.0) -> torch.Tensor:
    """IQL's advantage weights ``min(exp(β·A), max_weight)`` (no gradient)."""
    return torch.exp(beta * advantages.detach()).clamp(max=max_weight)


def iql_actor_loss(logprobs: torch.Tensor, advantages: torch.Tensor, beta: float, max_weight: float = 100.0) -> torch.Tensor:
    """Advantage-weighted regression: ``−mean exp(β·A)·log π(a|s)``."""
    return -(awr_weights(advantages, beta, max_weight) * logprobs).mean()


def cql_penalty(q_data: torch.Tensor, q_random: torch.Tensor, q_policy: torch.Tensor, logp_policy: torch.Tensor,
                q_next_policy: torch.Tensor, logp_next_policy: torch.Tensor, action_dim: int,
                temperature: float = 1.0) -> torch.Tensor:
    """CQL(H) with importance sampling (Kumar et al. 2020, appendix F), summed over the ensemble.

    For each critic: ``mean_B [T·logsumexp_j(q_j / T) − Q(s, a)]`` where the ``j`` run over ``n`` uniform actions
    (density ``2^−d``), ``n`` policy actions at ``s`` and ``n`` at ``s'``, each divided by its sampling density
    (subtracting its log-density). Shapes: ``q_data`` ``(E, B)``; ``q_*`` ``(E, B, n)``; ``logp_*`` ``(B, n)``.
    """
    log_uniform = -action_dim * math.log(2.0)
    cat = torch.cat([q_random - log_uniform, q_policy - logp_policy.unsqueeze(0),
                     q_next_policy - logp_next_policy.unsqueeze(0)], dim=-1)
    ood = temperature * torch.logsumexp(cat / temperature, dim=-1)
    return (ood - q_data).mean(dim=1).sum()


def sac_actor_loss(q_pi: torch.Tensor, logp: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """``mean(α·log π(a|s) − Q(s, a))`` with ``a ~ π`` reparameterised."""
    return (alpha * logp - q_pi).mean()


def temperature_loss(log_alpha: torch.Tensor, logp: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """SAC's automatic entropy tuning: ``−mean log α·(log π + H_target)`` (``logp`` not differentiated)."""
    return -(log_alpha * (logp.detach() + target_entropy)).mean()


def dt_loss(pred_actions: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Decision Transformer: mean squared action error over the real (unpadded) steps (``mask`` ``(B, K)``)."""
    err = ((pred_actions - actions) ** 2).mean(dim=-1)
    return (err * mask).sum() / mask.sum().clamp_min(1)
