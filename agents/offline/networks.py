"""Networks of the offline agents: ReLU MLPs, critic ensembles evaluated in one batched matmul, three actors.

Actions are handled in ``[-1, 1]``; the algorithms scale to and from the env's bounds.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from agents.policies.mlp import gaussian_log_prob, gaussian_log_prob_of_noise


def mlp(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    """``Linear → ReLU`` blocks and a linear output (PyTorch's default initialisation, as CORL and d3rlpy)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class Ensemble(nn.Module):
    """``n`` MLPs of the same shape run as one: each layer is a single ``baddbmm`` over the members.

    ``forward(x)`` takes ``(B, n_in)`` (shared by all members) or ``(n, B, n_in)`` and returns ``(n, B)`` when
    ``n_out == 1``, else ``(n, B, n_out)``. Members are initialised independently like ``nn.Linear``.
    """

    def __init__(self, n_in: int, hidden: tuple[int, ...], n_out: int = 1, n: int = 2):
        super().__init__()
        self.n, self.n_out = n, n_out
        dims = [n_in, *hidden, n_out]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in itertools.pairwise(dims):
            w, bias = torch.empty(n, b, a), torch.empty(n, 1, b)
            for k in range(n):
                nn.init.kaiming_uniform_(w[k], a=math.sqrt(5))
                nn.init.uniform_(bias[k], -1 / math.sqrt(a), 1 / math.sqrt(a))
            self.weights.append(nn.Parameter(w.transpose(1, 2).contiguous()))
            self.biases.append(nn.Parameter(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(0).expand(self.n, *x.shape) if x.dim() == 2 else x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = F.relu(h)
        return h.squeeze(-1) if self.n_out == 1 else h


class QEnsemble(Ensemble):
    """``Q_k(s, a)`` for ``k < n``: ``forward(obs, actions) -> (n, ...)`` for any leading batch shape."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], n: int = 2):
        super().__init__(obs_dim + act_dim, hidden, 1, n)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if actions.dim() == obs.dim() + 1:  # several actions per state: (B, m, act_dim)
            obs = obs.unsqueeze(-2)
        lead = actions.shape[:-1]
        x = torch.cat([obs.expand(*lead, obs.shape[-1]), actions], dim=-1).reshape(-1, obs.shape[-1] + actions.shape[-1])
        return super().forward(x).reshape(self.n, *lead)


class DeterministicActor(nn.Module):
    """``a = tanh(MLP(s))`` (BC, TD3+BC)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))


class GaussianActor(nn.Module):
    """``N(tanh(MLP(s)), diag σ²)`` with a state-independent ``log σ`` (IQL's policy, as in CORL)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], log_std_min: float = -5.0,
                 log_std_max: float = 2.0):
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.bounds = (log_std_min, log_std_max)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))

    def std(self) -> torch.Tensor:
        return self.log_std.clamp(*self.bounds).exp()

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(actions, self(obs), self.log_std.clamp(*self.bounds))

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        mean = self(obs)
        return (mean + self.std() * torch.randn_like(mean)).clamp(-1.0, 1.0)


class TanhGaussianActor(nn.Module):
    """SAC's ``a = tanh(u)``, ``u ~ N(μ(s), σ(s)²)`` with its change-of-variables log-density (CQL)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], log_std_min: float = -5.0,
                 log_std_max: float = 2.0):
        super().__init__()
        self.net = mlp(obs_dim, hidden, 2 * act_dim)
        self.bounds = (log_std_min, log_std_max)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action ``tanh(μ(s))``."""
        return torch.tanh(self.net(obs).chunk(2, dim=-1)[0])

    def sample(self, obs: torch.Tensor, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action and its log-density; ``n`` draws per state (shape ``(..., n, act_dim)``) from
        one forward pass."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(*self.bounds)
        if n is not None:
            mean, log_std = (x.unsqueeze(-2).expand(*x.shape[:-1], n, x.shape[-1]) for x in (mean, log_std))
        eps = torch.randn_like(mean)
        u = mean + log_std.exp() * eps
        # log N(u) − Σ log(1 − tanh(u)²), the latter written stably as 2·(log 2 − u − softplus(−2u))
        logp = gaussian_log_prob_of_noise(eps, log_std)
        logp = logp - (2 * (math.log(2.0) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), logp


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging ``θ' ← (1 − τ)·θ' + τ·θ``."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
