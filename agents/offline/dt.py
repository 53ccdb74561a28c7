"""Decision Transformer (Chen et al. 2021): offline RL as return-conditioned sequence modelling.

The model reads the last ``context`` steps as tokens ``(R̂_t, s_t, a_t)`` (return-to-go, state, action, each
embedded linearly, plus an embedding of the timestep) through a causal transformer (PyTorch's
``TransformerEncoder``, pre-norm, GELU) and predicts ``a_t`` from the state token; the loss is the squared
action error over real (not padded) steps. Acting, it is told a target return and subtracts each reward from it.
Defaults are the paper's for D4RL locomotion (3 layers, 1 head, width 128, dropout 0.1, AdamW 1e-4 with weight
decay 1e-4 and 10k warm-up steps, gradient clip 0.25, batch 64, context 20, returns divided by 1000).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from agents.core.run import check_range
from agents.offline import losses
from agents.offline.algorithms import OfflineAlgorithm, OfflineConfig


class SequenceSampler:
    """Draws ``(B, K)`` windows of whole-episode data: an episode with probability proportional to its length,
    a uniform start in it, then up to ``K`` steps, left-padded (``mask`` is 1 on real steps)."""

    def __init__(self, data, context: int, return_scale: float, max_ep_len: int, seed: int = 0):
        self.context, self.max_ep_len = context, max_ep_len
        starts = np.asarray(data.episode_starts, dtype=np.int64)
        lengths = np.diff(starts)
        rtg = np.empty(len(data), dtype=np.float64)
        for k in range(len(lengths)):
            r = data.rewards[starts[k]:starts[k + 1]].astype(np.float64)
            rtg[starts[k]:starts[k + 1]] = np.cumsum(r[::-1])[::-1]
        episode_of = np.repeat(np.arange(len(lengths)), lengths)
        self.obs = torch.as_tensor(data.observations, dtype=torch.float32)
        self.actions = torch.as_tensor(data.actions, dtype=torch.float32)
        self.rtg = torch.as_tensor(rtg / return_scale, dtype=torch.float32)
        self.ep_start = torch.as_tensor(starts[:-1][episode_of])
        self.ep_end = torch.as_tensor(starts[1:][episode_of])
        # drawing a transition uniformly = an episode with probability ∝ length, then a uniform start in it
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        K = self.context
        start = torch.randint(len(self.obs), (batch_size,), generator=self.generator)
        n = torch.minimum(self.ep_end[start] - start, torch.tensor(K))
        idx = start[:, None] + torch.arange(K)[None, :] - (K - n)[:, None]
        mask = idx >= start[:, None]
        idx = torch.where(mask, idx, start[:, None])
        return {"observations": self.obs[idx], "actions": self.actions[idx], "returns_to_go": self.rtg[idx],
                "timesteps": (idx - self.ep_start[start][:, None]).clamp(0, self.max_ep_len - 1),
                "mask": mask.float()}


class DecisionTransformer(OfflineAlgorithm):
    """The model, its optimizer (AdamW, linear warm-up) and a stateful actor for evaluation."""

    def __init__(self, config: DTConfig, data):
        super().__init__(config, data)
        h = config.embed_dim
        self.embed_timestep = nn.Embedding(config.max_ep_len, h)
        nn.init.normal_(self.embed_timestep.weight, std=0.02)  # GPT-2's initialisation, as the paper's model
        self.embed_return = nn.Linear(1, h)
        self.embed_state = nn.Linear(self.obs_dim, h)
        self.embed_action = nn.Linear(self.act_dim, h)
        self.embed_ln = nn.LayerNorm(h)
        layer = nn.TransformerEncoderLayer(h, config.n_head, 4 * h, config.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.n_layer, norm=nn.LayerNorm(h), enable_nested_tensor=False)
        self.predict_action = nn.Sequential(nn.Linear(h, self.act_dim), nn.Tanh())
        self._set_up_training(data)

    def _set_up_training(self, data) -> None:
        """The return asked for when acting, and AdamW with warm-up over every parameter (the network built)."""
        c: DTConfig = self.config
        returns = data.episode_returns()
        self.target_return = float(c.target_return if c.target_return is not None else returns.max())
        self.actor_opt = torch.optim.AdamW(self.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.optimizers["actor"] = self.actor_opt
        self.schedulers["actor"] = torch.optim.lr_scheduler.LambdaLR(
            self.actor_opt, lambda s: min((s + 1) / c.warmup_steps, 1.0))

    def sampler(self, data) -> SequenceSampler:
        c: DTConfig = self.config
        return SequenceSampler(data, c.context, c.return_scale, c.max_ep_len, seed=c.seed)

    def forward(self, obs, actions, returns_to_go, timesteps, mask):
        """Action predictions ``(B, K, act_dim)`` for standardised ``obs`` and actions in ``[-1, 1]``."""
        B, K = obs.shape[:2]
        time = self.embed_timestep(timesteps)
        tokens = torch.stack([self.embed_return(returns_to_go.unsqueeze(-1)) + time, self.embed_state(obs) + time,
                              self.embed_action(actions) + time], dim=2).reshape(B, 3 * K, -1)
        keys = mask.repeat_interleave(3, dim=1)  # (B, 3K)
        causal = torch.full((3 * K, 3 * K), float("-inf")).triu(1)
        # padded keys get a large finite penalty, so a padded query (which sees only padding) stays finite
        attn = causal[None] + (1.0 - keys)[:, None, :] * -1e4
        attn = attn.repeat_interleave(self.config.n_head, dim=0)
        out = self.transformer(self.embed_ln(tokens), mask=attn)
        return self.predict_action(out.reshape(B, K, 3, -1)[:, :, 1])

    def update(self, batch):
        c: DTConfig = self.config
        self.train()
        obs = (batch["observations"] - self.obs_mean) / self.obs_std
        actions = ((batch["actions"] - self.act_mid) / self.act_half).clamp(-1.0, 1.0)
        pred = self(obs, actions, batch["returns_to_go"], batch["timesteps"], batch["mask"])
        loss = losses.dt_loss(pred, actions, batch["mask"])
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters(), c.grad_clip)
        self.actor_opt.step()
        self.schedulers["actor"].step()
        self.updates += 1
        return {"action_loss": loss.item()}

    def episode_actor(self, target_return: float | None = None) -> EpisodeActor:
        """A stateful ``act`` for :func:`robotics.evaluation.evaluate` (it calls ``reset`` and ``observe``)."""
        return EpisodeActor(self, self.target_return if target_return is None else target_return)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """A first step of an episode (no history); use :meth:`episode_actor` for whole episodes."""
        actor = self.episode_actor()
        return actor(obs)


class EpisodeActor:
    """Keeps one episode's history: ``__call__(obs) -> action``, ``observe(reward)``, ``reset()``."""

    def __init__(self, model: DecisionTransformer, target_return: float):
        self.model, self.target = model, target_return
        self.reset()

    def reset(self) -> None:
        self.obs: list[torch.Tensor] = []
        self.actions: list[torch.Tensor] = []
        self.rtg = [self.target / self.model.config.return_scale]

    def observe(self, reward: float) -> None:
        self.rtg.append(self.rtg[-1] - reward / self.model.config.return_scale)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        m, K = self.model, self.model.config.context
        m.eval()
        self.obs.append((torch.as_tensor(np.asarray(obs, dtype=np.float32)).reshape(-1) - m.obs_mean) / m.obs_std)
        self.actions.append(torch.zeros(m.act_dim))
        t = len(self.obs)
        lo = max(0, t - K)
        n = t - lo
        pad = K - n
        obs = torch.cat([torch.zeros(pad, m.obs_dim), torch.stack(self.obs[lo:])])[None]
        actions = torch.cat([torch.zeros(pad, m.act_dim), torch.stack(self.actions[lo:])])[None]
        rtg = torch.cat([torch.zeros(pad), torch.tensor(self.rtg[lo:t], dtype=torch.float32)])[None]
        steps = torch.cat([torch.zeros(pad, dtype=torch.long), torch.arange(lo, t).clamp(max=m.config.max_ep_len - 1)])[None]
        mask = torch.cat([torch.zeros(pad), torch.ones(n)])[None]
        action = m(obs, actions, rtg, steps, mask)[0, -1]
        self.actions[-1] = action
        return (action * m.act_half + m.act_mid).numpy()


@dataclass
class DTConfig(OfflineConfig):
    """Decision Transformer with the paper's D4RL settings."""

    name: ClassVar[str] = "dt"
    algorithm: ClassVar[type] = DecisionTransformer
    _positive: ClassVar[tuple[str, ...]] = ("lr", "return_scale", "grad_clip")
    batch_size: int = 64
    """Windows per gradient step."""
    context: int = 20
    """K, the steps the model sees."""
    n_layer: int = 3
    """Transformer blocks."""
    n_head: int = 1
    """Attention heads per block."""
    embed_dim: int = 128
    """Width of the token embeddings (return, state and action tokens)."""
    dropout: float = 0.1
    """Dropout on embeddings, attention and residuals."""
    lr: float = 1e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay (on every parameter)."""
    warmup_steps: int = 10_000
    """Linear learning-rate warm-up."""
    grad_clip: float = 0.25
    """Gradient-norm clip."""
    return_scale: float = 1000.0
    """Returns-to-go are divided by this."""
    target_return: float | None = None
    """The return asked for when acting (None: the dataset's best episode return)."""
    max_ep_len: int = 1000
    """Timesteps embedded (later ones share the last embedding)."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("context", "n_layer", "n_head", "embed_dim", "warmup_steps", "max_ep_len"):
            check_range(name, getattr(self, name), 1, integer=True)
        check_range("dropout", self.dropout, 0, 1)
        check_range("weight_decay", self.weight_decay, 0)
        if self.embed_dim % self.n_head:
            raise ValueError(f"embed_dim={self.embed_dim} must be divisible by n_head={self.n_head}")
