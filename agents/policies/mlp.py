"""MLP actor-critic policies for small discrete (categorical) and continuous (Gaussian) action spaces.

They follow the protocol of :mod:`agents.policies.base`; ``make_mlp_policy`` picks one from the action space.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from agents.policies.base import Act, Evaluation


def _layer(n_in: int, n_out: int, gain: float) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(n_in: int, hidden: tuple[int, ...], n_out: int, out_gain: float) -> nn.Sequential:
    """``Linear → tanh`` blocks with orthogonal initialisation (√2 hidden gain), as in CleanRL and SB3."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [_layer(n_in, width, 2**0.5), nn.Tanh()]
        n_in = width
    layers.append(_layer(n_in, n_out, out_gain))
    return nn.Sequential(*layers)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``Σ_i log N(x_i; μ_i, σ_i²)`` over the last axis, ``σ = exp(log_std)``; shapes broadcast, ``(..., A) -> (...)``.

    Written out: ``torch.distributions.Normal(μ, σ).log_prob(x).sum(-1)`` is the same number but costs ~70 µs a
    call in the small-batch loops of the control agents.
    """
    return gaussian_log_prob_of_noise((x - mean) / log_std.exp(), log_std)


def gaussian_log_prob_of_noise(eps: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """:func:`gaussian_log_prob` of ``x = μ + σ·eps`` from the standard-normal noise ``eps`` itself (a
    reparameterised sample: no division, and no gradient through ``x − μ``)."""
    return (-0.5 * eps**2 - log_std - _HALF_LOG_2PI).sum(-1)


class RunningNorm(nn.Module):
    """Running mean and variance of observations (Chan et al.'s parallel update), kept as buffers so they are
    saved with the policy; ``forward`` normalises and clips to ±``clip``."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(eps, dtype=torch.float64))
        self.clip, self.eps = clip, eps

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, *self.mean.shape).double()
        n, mean, var = x.shape[0], x.mean(0), x.var(0, unbiased=False)
        delta, total = mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + var * n + delta**2 * self.count * n / total) / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.double() - self.mean) / torch.sqrt(self.var + self.eps)
        return z.clamp(-self.clip, self.clip).float()


class _MLPActorCritic(nn.Module):
    """What both MLP policies share: a flat ``Box`` observation, optionally normalised by a :class:`RunningNorm`
    whose statistics the trainer updates and the checkpoint keeps, an actor MLP and an optional critic MLP."""

    def __init__(self, observation_space: spaces.Space, n_out: int, hidden: tuple[int, ...], value: bool,
                 normalize_obs: bool, log_std_init: float | None = None):
        super().__init__()
        if not isinstance(observation_space, spaces.Box):
            raise TypeError(
                f"{type(self).__name__} needs a Box observation space, got {type(observation_space).__name__}; "
                f"for the text envs use agents.LMPolicy"
            )
        n_obs = int(np.prod(observation_space.shape))
        self.actor = mlp(n_obs, hidden, n_out, out_gain=0.01)
        if log_std_init is not None:  # the Gaussian's state-independent log-std (registered here: parameter order)
            self.log_std = nn.Parameter(torch.full((n_out,), float(log_std_init)))
        self.critic = mlp(n_obs, hidden, 1, out_gain=1.0) if value else None
        self.norm = RunningNorm((n_obs,)) if normalize_obs else None

    def _flat(self, obs) -> torch.Tensor:
        obs = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs)
        obs = obs.reshape(obs.shape[0], -1)  # (N, obs_dim)
        return self.norm(obs) if self.norm is not None else obs.float()

    def _value(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.critic(x).squeeze(-1) if self.critic is not None else None

    @torch.no_grad()
    def value(self, obs) -> torch.Tensor:
        if self.critic is None:
            raise RuntimeError("this policy was built with value=False and has no critic")
        return self._value(self._flat(obs))


class MLPCategoricalPolicy(_MLPActorCritic):
    """Categorical policy and value function, two separate MLPs over a flat ``Box`` observation.

    Args:
        observation_space: a ``Box`` (flattened to a vector).
        action_space: a ``Discrete(A)``.
        hidden: hidden widths of each MLP (default ``(64, 64)``).
        value: give the policy a critic (PPO); ``False`` for critic-free algorithms (REINFORCE, RLOO, GRPO).
        normalize_obs: running observation normalisation inside the policy.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, hidden: tuple[int, ...] = (64, 64),
                 value: bool = True, normalize_obs: bool = False):
        if not isinstance(action_space, spaces.Discrete):
            raise TypeError(f"MLPCategoricalPolicy needs a Discrete action space, got {action_space}")
        super().__init__(observation_space, int(action_space.n), hidden, value, normalize_obs)

    @torch.no_grad()
    def act(self, obs, deterministic: bool = False) -> Act:
        x = self._flat(obs)
        logprobs = torch.log_softmax(self.actor(x), -1)  # (N, A)
        action = logprobs.argmax(-1) if deterministic else torch.distributions.Categorical(logits=logprobs).sample()
        return Act(action, logprobs.gather(1, action[:, None]).squeeze(1), self._value(x), logprobs)

    def evaluate(self, batch: dict[str, torch.Tensor], entropy_grad: bool = True) -> Evaluation:
        x = self._flat(batch["obs"])
        logprobs = torch.log_softmax(self.actor(x), -1)  # (B, A)
        logprob = logprobs.gather(1, batch["actions"].long()[:, None]).squeeze(1)
        entropy = -(logprobs.exp() * logprobs).sum(-1)
        return Evaluation(logprob, entropy, self._value(x))

    def probs(self, obs) -> torch.Tensor:
        """(N, A) action probabilities (for inspection and tests)."""
        with torch.no_grad():
            return torch.softmax(self.actor(self._flat(obs)), -1)


class MLPGaussianPolicy(_MLPActorCritic):
    """Diagonal Gaussian policy with a state-independent log-std, and a value MLP, over a flat ``Box`` observation.

    Actions are sampled unbounded from ``N(μ(s), σ²)``; the env clips them to its bounds
    (:func:`robotics.make_env` adds ``ClipAction``), so log-probabilities stay those of the sampled action, as in
    SB3 and CleanRL. ``normalize_obs`` as for :class:`MLPCategoricalPolicy`.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, hidden: tuple[int, ...] = (64, 64),
                 value: bool = True, log_std_init: float = 0.0, normalize_obs: bool = False):
        if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
            raise TypeError(f"MLPGaussianPolicy needs a 1-D Box action space, got {action_space}")
        super().__init__(observation_space, int(action_space.shape[0]), hidden, value, normalize_obs, log_std_init)

    @torch.no_grad()
    def act(self, obs, deterministic: bool = False) -> Act:
        x = self._flat(obs)
        mean = self.actor(x)  # (N, A)
        action = mean if deterministic else mean + self.log_std.exp() * torch.randn_like(mean)
        return Act(action, gaussian_log_prob(action, mean, self.log_std), self._value(x))

    def evaluate(self, batch: dict[str, torch.Tensor], entropy_grad: bool = True) -> Evaluation:
        x = self._flat(batch["obs"])
        mean = self.actor(x)
        entropy = (0.5 + _HALF_LOG_2PI + self.log_std).sum().expand(mean.shape[0])  # (B,) the same for every state
        return Evaluation(gaussian_log_prob(batch["actions"], mean, self.log_std), entropy, self._value(x))


def make_mlp_policy(observation_space: spaces.Space, action_space: spaces.Space, value: bool = True, **kwargs):
    """The MLP policy for the spaces: categorical for ``Discrete`` actions, Gaussian for ``Box`` ones."""
    if isinstance(action_space, spaces.Discrete):
        kwargs.pop("log_std_init", None)  # Gaussian only
        return MLPCategoricalPolicy(observation_space, action_space, value=value, **kwargs)
    if isinstance(action_space, spaces.Box):
        return MLPGaussianPolicy(observation_space, action_space, value=value, **kwargs)
    raise TypeError(f"no MLP policy for action space {action_space}; expected Discrete or a 1-D Box")
