"""Advantage estimators: GAE and discounted returns over time, and one group baseline over episodes.

All functions are pure and work on torch tensors laid out ``(T, N)`` (time first, one column per env or per
completion), the layout of :mod:`agents.core.rollout`. ``terminated`` and ``truncated`` are kept apart: a terminated
step has no future; a truncated one is cut by a time limit, and its future is worth ``bootstrap`` (the value of
the observation the env would have continued from, ``info["final_obs"]``).

The group estimator (:func:`group_advantages`) gives REINFORCE-with-baseline, RLOO and GRPO as options of one
function: episodes are scored once (their return), grouped (the K completions of one prompt), and each
episode's advantage is its return minus a baseline from its group, optionally divided by the group's spread.
"""

from __future__ import annotations

import numpy as np
import torch

BASELINES = ("none", "mean", "loo")
SCALES = ("none", "std")


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    next_value: torch.Tensor,
    bootstrap: torch.Tensor | None = None,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) → ``(advantages, returns)``, each ``(T, N)``.

    Args:
        rewards, values: ``(T, N)``; ``values[t]`` = V(s_t), the state the action of step ``t`` was taken in.
        terminated, truncated: ``(T, N)`` bools, the env's flags of step ``t``; where both are set (an episode that
            terminates on the last step its time limit allows) it counts as terminated: no bootstrap.
        next_value: ``(N,)``, V of the observation after the last step (used where step ``T-1`` did not end).
        bootstrap: ``(T, N)``, V of the final observation where ``truncated`` (ignored elsewhere); None = 0.
        gamma, lam: discount and GAE λ.

    ``δ_t = r_t + γ·V_{t+1}·[not terminated_t] − V_t``, where ``V_{t+1}`` is ``bootstrap_t`` if the episode was
    truncated at ``t`` and the next row's value otherwise, and ``A_t = δ_t + γλ·[not done_t]·A_{t+1}``.
    ``returns = advantages + values`` (the value target). With ``lam=1`` the returns are the discounted returns.

    >>> r = torch.tensor([[1.0], [1.0], [1.0]]); v = torch.zeros(3, 1); f = torch.zeros(3, 1, dtype=torch.bool)
    >>> term = f.clone(); term[2] = True
    >>> gae(r, v, term, f, torch.zeros(1), gamma=0.5, lam=1.0)[0].squeeze(1).tolist()   # 1 + .5 + .25, 1 + .5, 1
    [1.75, 1.5, 1.0]
    """
    T = rewards.shape[0]
    _check_shapes(rewards, values=values, terminated=terminated, truncated=truncated)
    truncated = truncated & ~terminated  # both set (a fall on the time limit's last step): the episode terminated
    # the recursion runs in numpy: a per-step torch op costs ~20 µs, which at N = 1 env dominates a 2048-step rollout
    work = values.detach().cpu()
    v = (work if work.dtype in (torch.float32, torch.float64) else work.float()).numpy()  # numpy has no bfloat16
    r, nv = rewards.detach().cpu().numpy().astype(v.dtype), next_value.detach().cpu().numpy().astype(v.dtype)
    boot = np.zeros_like(v) if bootstrap is None else bootstrap.detach().cpu().numpy().astype(v.dtype)
    alive = (~terminated).cpu().numpy().astype(v.dtype)  # casts keep float64 inputs in float64
    cont = (~(terminated | truncated)).cpu().numpy().astype(v.dtype)
    cut = truncated.cpu().numpy()
    adv = np.zeros_like(v)
    last = np.zeros(v.shape[1], dtype=v.dtype)  # (N,) A_{t+1}
    gl = v.dtype.type(gamma * lam)
    for t in reversed(range(T)):
        following = np.where(cut[t], boot[t], nv if t == T - 1 else v[t + 1])  # (N,)
        delta = r[t] + v.dtype.type(gamma) * following * alive[t] - v[t]
        last = delta + gl * last * cont[t]
        adv[t] = last
    advantages = torch.from_numpy(adv).to(device=values.device, dtype=values.dtype)
    return advantages, advantages + values


def discounted_returns(rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
                       next_value: torch.Tensor | None = None, bootstrap: torch.Tensor | None = None,
                       gamma: float = 0.99) -> torch.Tensor:
    """``G_t = r_t + γ·G_{t+1}`` (reset at episode ends, bootstrapped on truncation), ``(T, N)``; GAE with λ=1, V=0.

    >>> r = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    >>> discounted_returns(r, torch.tensor([[False], [True]]), torch.zeros(2, 1, dtype=torch.bool), gamma=0.9).squeeze(1).tolist()
    [2.8, 2.0]
    """
    N = rewards.shape[1]
    zeros = torch.zeros_like(rewards)
    next_value = torch.zeros(N, dtype=rewards.dtype) if next_value is None else next_value
    return gae(rewards, zeros, terminated, truncated, next_value, bootstrap, gamma, lam=1.0)[1]


def group_advantages(returns: torch.Tensor, group_size: int, baseline: str = "loo", scale: str = "none",
                     eps: float = 1e-6) -> torch.Tensor:
    """Advantages of ``(G·K,)`` episode returns laid out as ``G`` consecutive groups of ``K = group_size``.

    ``baseline``:
      * ``"none"``: ``A_i = R_i`` (plain REINFORCE).
      * ``"mean"``: ``A_i = R_i − mean(group)`` (REINFORCE with a baseline; GRPO, Shao et al. 2024).
      * ``"loo"``: ``A_i = R_i − mean(group without i) = K/(K−1)·(R_i − mean)`` (RLOO, Ahmadian et al. 2024;
        unbiased, since the baseline does not depend on episode ``i``).

    ``scale="std"`` divides by the group's standard deviation (unbiased, plus ``eps``): GRPO's normalisation.

    >>> group_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]), 2, "loo").tolist()   # (1-2, 2-1), (3-6, 6-3)
    [-1.0, 1.0, -3.0, 3.0]
    >>> group_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]), 2, "mean").tolist()
    [-0.5, 0.5, -1.5, 1.5]
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline={baseline!r}; expected one of {BASELINES}")
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r}; expected one of {SCALES}")
    if returns.dim() != 1 or group_size < 1 or returns.numel() % group_size:
        raise ValueError(f"returns of shape {tuple(returns.shape)} cannot be split into groups of {group_size}")
    if baseline != "none" and group_size < 2:
        raise ValueError(f"the {baseline!r} baseline needs group_size >= 2 (a group of one is its own baseline: every advantage would be 0)")
    if scale == "std" and group_size < 2:
        raise ValueError("scale='std' needs group_size >= 2 (a group of one has no spread)")
    grouped = returns.view(-1, group_size)  # (G, K)
    mean = grouped.mean(1, keepdim=True)  # (G, 1)
    if baseline == "none":
        advantages = grouped.clone()
    elif baseline == "mean":
        advantages = grouped - mean
    else:
        advantages = (grouped - mean) * group_size / (group_size - 1)
    if scale == "std":
        advantages = advantages / (grouped.std(1, keepdim=True) + eps)
    return advantages.reshape(-1)


def whiten(values: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(x − mean)/std`` over the entries where ``mask`` is set (all if None); masked entries come back 0.

    >>> whiten(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([True, True, False])).tolist()
    [-1.0, 1.0, 0.0]
    """
    mask = torch.ones_like(values, dtype=torch.bool) if mask is None else mask.bool()
    n = mask.sum()
    if n < 2:
        raise ValueError(f"whitening needs at least 2 entries, got {int(n)} (a batch of one one-token episode? "
                         f"use more episodes per iteration, or turn whitening off)")
    mean = values[mask].mean()
    std = values[mask].std(unbiased=False)
    out = (values - mean) / (std + eps) if shift_mean else (values - mean) / (std + eps) + mean
    return torch.where(mask, out, torch.zeros_like(out))


def _check_shapes(reference: torch.Tensor, **tensors: torch.Tensor) -> None:
    if reference.dim() != 2:
        raise ValueError(f"rewards must be (T, N), got shape {tuple(reference.shape)}")
    for name, tensor in tensors.items():
        if tensor.shape != reference.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected {tuple(reference.shape)} like rewards")
