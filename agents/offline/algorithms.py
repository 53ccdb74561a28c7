"""BC, TD3+BC, CQL and IQL: a config dataclass each, whose ``create(data)`` builds the algorithm.

Every algorithm is an ``nn.Module`` with ``update(batch) -> metrics`` (one gradient step on a batch of
transitions, see :class:`agents.offline.data.TransitionSampler`) and ``act(obs) -> action`` (deterministic,
numpy in, numpy out, the env's action bounds), so the shared evaluation (:func:`robotics.evaluation.evaluate`)
and trainer (:func:`agents.offline.train.train_offline`) serve them all. Observations are standardised with the
dataset's mean and std and actions scaled to ``[-1, 1]``; both are buffers, so a checkpoint carries them.

Defaults follow the papers' D4RL settings as CORL implements them (256×256 ReLU networks, batch 256, γ 0.99,
τ 0.005). The losses are the pure functions of :mod:`agents.offline.losses`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from agents.core.run import check_range
from agents.offline import losses
from agents.offline.networks import (
    DeterministicActor,
    GaussianActor,
    QEnsemble,
    TanhGaussianActor,
    mlp,
    soft_update,
)


@dataclass
class OfflineConfig:
    """What every offline algorithm shares: the data, the budget, evaluation and checkpoints."""

    name: ClassVar[str] = "offline"
    dataset: str = "robotics/hopper/medium-v0"
    """A local Minari dataset id (``textenv datasets list``)."""
    steps: int = 100_000
    """Gradient steps."""
    batch_size: int = 256
    """Transitions per gradient step."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of every network."""
    gamma: float = 0.99
    """Discount."""
    normalize_obs: bool = True
    """Standardise observations with the dataset's mean and std."""
    eval_every: int = 10_000
    """Gradient steps between evaluations (0: only at the end)."""
    eval_episodes: int = 10
    """Episodes per evaluation (:func:`robotics.evaluation.evaluate`, deterministic actions)."""
    log_every: int = 1_000
    """Gradient steps between metrics rows."""
    seed: int = 0
    """Seeds the networks, the batches and the evaluation episodes."""
    threads: int = 1
    """torch threads."""
    checkpoint_every: int = 10_000
    """Gradient steps between checkpoints."""

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_episodes", "log_every", "threads", "checkpoint_every"):
            check_range(name, getattr(self, name), 1, integer=True)
        check_range("eval_every", self.eval_every, 0, integer=True)
        check_range("gamma", self.gamma, 0, 1)
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden={self.hidden!r}: expected positive layer widths")
        for name in self._positive:
            check_range(name, getattr(self, name), 0, low_open=True)

    _positive: ClassVar[tuple[str, ...]] = ()
    schedule_spans_steps: ClassVar[bool] = False
    """Whether a learning-rate schedule spans ``steps`` (then a resumed run may not change ``steps``)."""

    def create(self, data) -> OfflineAlgorithm:
        """The algorithm for ``data`` (an :class:`robotics.datasets.OfflineData`), seeded with ``seed``."""
        torch.manual_seed(self.seed)
        return self.algorithm(self, data)

    algorithm: ClassVar[type]


class OfflineAlgorithm(nn.Module):
    """Shared plumbing: normalisation buffers, ``act``, optimizer state for checkpoints."""

    def __init__(self, config: OfflineConfig, data):
        super().__init__()
        self.config = config
        obs, act_space = data.observations, data.action_space
        self.obs_dim, self.act_dim = int(np.prod(obs.shape[1:])), int(np.prod(act_space.shape))
        mean, std = (obs.mean(0), obs.std(0) + 1e-3) if config.normalize_obs else (np.zeros(self.obs_dim), np.ones(self.obs_dim))
        self.register_buffer("obs_mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.as_tensor(std, dtype=torch.float32))
        low, high = np.asarray(act_space.low, dtype=np.float64), np.asarray(act_space.high, dtype=np.float64)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError(f"offline agents need a bounded Box action space; got {act_space}")
        self.register_buffer("act_mid", torch.as_tensor((high + low) / 2, dtype=torch.float32))
        self.register_buffer("act_half", torch.as_tensor((high - low) / 2, dtype=torch.float32))
        self.register_buffer("reward_scale", torch.tensor(1.0))
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.updates = 0

    def prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw dataset tensors → what the losses see (standardised observations, actions in [-1, 1])."""
        return {"obs": (batch["observations"] - self.obs_mean) / self.obs_std,
                "next_obs": (batch["next_observations"] - self.obs_mean) / self.obs_std,
                "actions": ((batch["actions"] - self.act_mid) / self.act_half).clamp(-1.0, 1.0),
                "rewards": batch["rewards"] * self.reward_scale, "terminals": batch["terminals"]}

    def policy(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action in ``[-1, 1]`` for standardised observations."""
        raise NotImplementedError

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic action for one observation (or a batch), in the env's bounds."""
        return self._in_env(self.policy, obs)

    @torch.no_grad()
    def _in_env(self, policy, obs: np.ndarray) -> np.ndarray:
        """``policy`` (standardised observations → actions in [-1, 1]) applied to raw observations, in the env's
        bounds; one observation or a batch."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        single = x.dim() == 1
        x = (x.reshape(-1, self.obs_dim) - self.obs_mean) / self.obs_std
        a = policy(x) * self.act_half + self.act_mid
        return (a[0] if single else a).numpy()

    def _adam(self, name: str, params, lr: float) -> torch.optim.Optimizer:
        self.optimizers[name] = torch.optim.Adam(params, lr=lr, fused=True)
        return self.optimizers[name]

    @staticmethod
    def _frozen_q(critic: nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``critic(obs, actions)`` differentiable in the actions only (the actor's loss; saves the critic's weight
        gradients)."""
        params = list(critic.parameters())
        for p in params:
            p.requires_grad_(False)
        try:
            return critic(obs, actions)
        finally:
            for p in params:
                p.requires_grad_(True)

    @staticmethod
    def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def trainer_state(self) -> dict:
        return {"optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()}, "updates": self.updates}

    def load_trainer_state(self, state: dict) -> None:
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.updates = state["updates"]


# ---------------------------------------------------------------- BC
class BC(OfflineAlgorithm):
    """Behaviour cloning: a deterministic tanh policy regressed onto the dataset's actions."""

    def __init__(self, config: BCConfig, data):
        super().__init__(config, data)
        self.actor = DeterministicActor(self.obs_dim, self.act_dim, config.hidden)
        self.actor_opt = self._adam("actor", self.actor.parameters(), config.lr)

    def policy(self, obs):
        return self.actor(obs)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        b = self.prepare(batch)
        loss = losses.bc_loss(self.actor(b["obs"]), b["actions"])
        self._step(self.actor_opt, loss)
        self.updates += 1
        return {"bc_loss": loss.item()}


@dataclass
class BCConfig(OfflineConfig):
    """Behaviour cloning (d3rlpy's ``BC`` defaults: lr 1e-3)."""

    name: ClassVar[str] = "bc"
    algorithm: ClassVar[type] = BC
    _positive: ClassVar[tuple[str, ...]] = ("lr",)
    lr: float = 1e-3
    """Adam learning rate."""


# ---------------------------------------------------------------- TD3+BC
class TD3BC(OfflineAlgorithm):
    """TD3+BC (Fujimoto & Gu 2021): TD3 with a behaviour-cloning term and a Q-scale-free weight λ."""

    def __init__(self, config: TD3BCConfig, data):
        super().__init__(config, data)
        self.actor = DeterministicActor(self.obs_dim, self.act_dim, config.hidden)
        self.critic = QEnsemble(self.obs_dim, self.act_dim, config.hidden, n=2)
        self.actor_target, self.critic_target = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        for p in [*self.actor_target.parameters(), *self.critic_target.parameters()]:
            p.requires_grad_(False)
        self.actor_opt = self._adam("actor", self.actor.parameters(), config.actor_lr)
        self.critic_opt = self._adam("critic", self.critic.parameters(), config.critic_lr)

    def policy(self, obs):
        return self.actor(obs)

    def update(self, batch):
        c: TD3BCConfig = self.config
        b = self.prepare(batch)
        with torch.no_grad():
            noise = (torch.randn_like(b["actions"]) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            next_a = (self.actor_target(b["next_obs"]) + noise).clamp(-1.0, 1.0)
            target = losses.td_target(b["rewards"], self.critic_target(b["next_obs"], next_a).min(0).values,
                                      b["terminals"], c.gamma)
        q = self.critic(b["obs"], b["actions"])
        critic_loss = losses.critic_loss(q, target)
        self._step(self.critic_opt, critic_loss)
        metrics = {"critic_loss": critic_loss.item(), "q_mean": q.mean().item()}
        self.updates += 1
        if self.updates % c.policy_freq == 0:
            pi = self.actor(b["obs"])
            q_pi = self._frozen_q(self.critic, b["obs"], pi)[0]
            actor_loss = losses.td3_bc_actor_loss(q_pi, pi, b["actions"], c.alpha)
            self._step(self.actor_opt, actor_loss)
            soft_update(self.actor_target, self.actor, c.tau)
            soft_update(self.critic_target, self.critic, c.tau)
            metrics["actor_loss"] = actor_loss.item()
        return metrics


@dataclass
class TD3BCConfig(OfflineConfig):
    """TD3+BC with the paper's settings (α 2.5, policy noise 0.2 clipped at 0.5, actor every 2nd step)."""

    name: ClassVar[str] = "td3bc"
    algorithm: ClassVar[type] = TD3BC
    _positive: ClassVar[tuple[str, ...]] = ("actor_lr", "critic_lr", "tau", "alpha")
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the twin critics."""
    tau: float = 0.005
    """Target-network averaging rate."""
    alpha: float = 2.5
    """Weight of Q against BC: λ = α / mean|Q|."""
    policy_noise: float = 0.2
    """Std of the target-policy smoothing noise."""
    noise_clip: float = 0.5
    """The smoothing noise is clipped to ±this."""
    policy_freq: int = 2
    """Critic steps per actor step."""


# ---------------------------------------------------------------- IQL
class IQL(OfflineAlgorithm):
    """Implicit Q-learning (Kostrikov et al. 2021): an expectile value, TD on it, advantage-weighted policy.

    Rewards are multiplied by ``1000 / (max − min episode return)`` of the dataset when ``normalize_reward`` (the
    paper's locomotion setting); the actor's learning rate follows a cosine decay over ``steps``.
    """

    def __init__(self, config: IQLConfig, data):
        super().__init__(config, data)
        if config.normalize_reward:
            returns = data.episode_returns()
            spread = float(returns.max() - returns.min())
            if spread > 0:
                self.reward_scale.fill_(1000.0 / spread)
        self.actor = (DeterministicActor if config.deterministic else GaussianActor)(self.obs_dim, self.act_dim, config.hidden)
        self.critic = QEnsemble(self.obs_dim, self.act_dim, config.hidden, n=2)
        self.value = mlp(self.obs_dim, config.hidden, 1)
        self.critic_target = copy.deepcopy(self.critic)
        for p in self.critic_target.parameters():
            p.requires_grad_(False)
        self.actor_opt = self._adam("actor", self.actor.parameters(), config.actor_lr)
        self.critic_opt = self._adam("critic", self.critic.parameters(), config.critic_lr)
        self.value_opt = self._adam("value", self.value.parameters(), config.value_lr)
        self.schedulers["actor"] = torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_opt, config.steps)

    def policy(self, obs):
        return self.actor(obs)

    def update(self, batch):
        c: IQLConfig = self.config
        b = self.prepare(batch)
        with torch.no_grad():
            target_q = self.critic_target(b["obs"], b["actions"]).min(0).values
            next_v = self.value(b["next_obs"]).squeeze(-1)
        v = self.value(b["obs"]).squeeze(-1)
        adv = target_q - v
        value_loss = losses.expectile_loss(adv, c.expectile)
        self._step(self.value_opt, value_loss)
        q = self.critic(b["obs"], b["actions"])
        critic_loss = losses.critic_loss(q, losses.td_target(b["rewards"], next_v, b["terminals"], c.gamma)) / 2
        self._step(self.critic_opt, critic_loss)
        if c.deterministic:
            per_sample = ((self.actor(b["obs"]) - b["actions"]) ** 2).sum(-1)
            actor_loss = (losses.awr_weights(adv, c.beta, c.max_weight) * per_sample).mean()
        else:
            actor_loss = losses.iql_actor_loss(self.actor.log_prob(b["obs"], b["actions"]), adv, c.beta, c.max_weight)
        self._step(self.actor_opt, actor_loss)
        for scheduler in self.schedulers.values():  # none online
            scheduler.step()
        soft_update(self.critic_target, self.critic, c.tau)
        self.updates += 1
        return {"value_loss": value_loss.item(), "critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(),
                "q_mean": q.mean().item(), "adv_mean": adv.mean().item()}

    def explore(self, obs: np.ndarray) -> np.ndarray:
        """A sampled action (online fine-tuning's exploration), in the env's bounds."""
        return self._in_env(self.actor.sample if isinstance(self.actor, GaussianActor) else self.actor, obs)


@dataclass
class IQLConfig(OfflineConfig):
    """IQL with the paper's locomotion settings (expectile 0.7, β 3, weights capped at 100)."""

    name: ClassVar[str] = "iql"
    schedule_spans_steps: ClassVar[bool] = True
    algorithm: ClassVar[type] = IQL
    _positive: ClassVar[tuple[str, ...]] = ("actor_lr", "critic_lr", "value_lr", "tau", "beta", "max_weight")
    actor_lr: float = 3e-4
    """Adam learning rate of the actor (cosine-decayed over the run)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the twin Q critics."""
    value_lr: float = 3e-4
    """Adam learning rate of the value function V."""
    tau: float = 0.005
    """Target-network averaging rate."""
    expectile: float = 0.7
    """τ of the expectile value loss (0.5 is the mean: SARSA)."""
    beta: float = 3.0
    """Inverse temperature of the advantage weights."""
    max_weight: float = 100.0
    """Cap of ``exp(β·A)``."""
    normalize_reward: bool = True
    """Scale rewards by ``1000 / (max − min episode return)``."""
    deterministic: bool = False
    """A deterministic actor with weighted squared error instead of a Gaussian with weighted log-likelihood."""

    def __post_init__(self):
        super().__post_init__()
        check_range("expectile", self.expectile, 0, 1, low_open=True)
        if self.expectile >= 1:
            raise ValueError(f"expectile={self.expectile} must be < 1")


# ---------------------------------------------------------------- CQL
class CQL(OfflineAlgorithm):
    """Conservative Q-learning (Kumar et al. 2020): SAC with the CQL(H) penalty, importance-sampled.

    The penalty pushes down a soft maximum of Q over ``n_actions`` uniform and ``2·n_actions`` policy actions
    and pushes up Q on the dataset's actions (:func:`agents.offline.losses.cql_penalty`), weighted by
    ``conservative_weight``; the entropy temperature is tuned to ``−action_dim``.
    """

    def __init__(self, config: CQLConfig, data):
        super().__init__(config, data)
        self.actor = TanhGaussianActor(self.obs_dim, self.act_dim, config.hidden)
        self.critic = QEnsemble(self.obs_dim, self.act_dim, config.hidden, n=2)
        self.critic_target = copy.deepcopy(self.critic)
        for p in self.critic_target.parameters():
            p.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(float(np.log(config.initial_temperature))))
        self.actor_opt = self._adam("actor", self.actor.parameters(), config.actor_lr)
        self.critic_opt = self._adam("critic", self.critic.parameters(), config.critic_lr)
        self.alpha_opt = self._adam("alpha", [self.log_alpha], config.temperature_lr)

    def policy(self, obs):
        return self.actor(obs)

    def update(self, batch):
        c: CQLConfig = self.config
        b = self.prepare(batch)
        obs, B, n = b["obs"], b["obs"].shape[0], c.n_actions
        # temperature and actor (SAC)
        pi, logp = self.actor.sample(obs)
        alpha_loss = losses.temperature_loss(self.log_alpha, logp, -float(self.act_dim))
        self._step(self.alpha_opt, alpha_loss)
        alpha = self.log_alpha.exp().detach()
        q_pi = self._frozen_q(self.critic, obs, pi).min(0).values
        actor_loss = losses.sac_actor_loss(q_pi, logp, alpha)
        self._step(self.actor_opt, actor_loss)
        # critic: TD + conservative penalty
        with torch.no_grad():
            next_a, next_logp = self.actor.sample(b["next_obs"])
            next_q = self.critic_target(b["next_obs"], next_a).min(0).values
            if c.backup_entropy:
                next_q = next_q - alpha * next_logp
            target = losses.td_target(b["rewards"], next_q, b["terminals"], c.gamma)
            sampled, sampled_logp = self.actor.sample(torch.cat([obs, b["next_obs"]]), n=n)  # (2B, n, ·)
            random = torch.empty(B, n, self.act_dim).uniform_(-1.0, 1.0)
        q = self.critic(obs, b["actions"])
        q_ood = self.critic(obs, torch.cat([random, sampled[:B], sampled[B:]], dim=1))  # (2, B, 3n)
        penalty = losses.cql_penalty(q, q_ood[..., :n], q_ood[..., n:2 * n], sampled_logp[:B], q_ood[..., 2 * n:],
                                     sampled_logp[B:], self.act_dim, c.cql_temperature)
        td = losses.critic_loss(q, target)
        critic_loss = td + c.conservative_weight * penalty
        self._step(self.critic_opt, critic_loss)
        soft_update(self.critic_target, self.critic, c.tau)
        self.updates += 1
        return {"critic_loss": critic_loss.item(), "td_loss": td.item(), "cql_penalty": penalty.item(),
                "actor_loss": actor_loss.item(), "alpha": alpha.item(), "q_mean": q.mean().item()}


@dataclass
class CQLConfig(OfflineConfig):
    """CQL(H) with d3rlpy's defaults (actor lr 1e-4, critic lr 3e-4, weight 5, 10 sampled actions)."""

    name: ClassVar[str] = "cql"
    algorithm: ClassVar[type] = CQL
    _positive: ClassVar[tuple[str, ...]] = ("actor_lr", "critic_lr", "temperature_lr", "tau", "initial_temperature",
                                            "cql_temperature")
    actor_lr: float = 1e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the twin critics."""
    temperature_lr: float = 1e-4
    """Learning rate of the entropy temperature."""
    initial_temperature: float = 1.0
    """Starting entropy temperature α (learned afterwards)."""
    tau: float = 0.005
    """Target-network averaging rate."""
    conservative_weight: float = 5.0
    """Weight of the CQL penalty."""
    n_actions: int = 10
    """Uniform actions, and policy actions at s and at s', per state in the penalty."""
    cql_temperature: float = 1.0
    """Temperature of the penalty's log-sum-exp."""
    backup_entropy: bool = False
    """Subtract α·log π in the TD target (SAC's soft backup)."""

    def __post_init__(self):
        super().__post_init__()
        check_range("conservative_weight", self.conservative_weight, 0)
        check_range("n_actions", self.n_actions, 1, integer=True)


