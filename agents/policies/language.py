"""Instruction-conditioned policies for the BabyAI tasks (:mod:`robotics.language`), on their token observations.

Both read the flat ``Box`` of ``observation="tokens"`` (the 7×7×3 grid codes, the direction, the mission's word
ids) and are actor-critics with the MLP policies' interface (``act``/``evaluate``, :mod:`agents.policies.base`),
so control PPO, BC and evaluation run them unchanged:

* :class:`RT1Policy` — RT-1 in miniature (Brohan et al. 2022): every grid cell is a token (the sum of its object,
  colour, state and position embeddings), every instruction word is a token, plus the direction and two summary
  tokens; a small bidirectional transformer reads them all and the summary tokens give the action logits (the
  discretised actions are BabyAI's own 7) and the value. As in RT-1, TokenLearner (Ryoo et al. 2021) first
  compresses the 49 cell tokens to a few learned ones (8 by default): each is a softmax-weighted sum of the cells,
  its weights computed from the cells with the instruction added (RT-1 conditions its image encoder on the
  instruction by FiLM, then applies TokenLearner), which shortens the transformer's sequence from 68 to 27 tokens.
  RT-1's EfficientNet is left out: the grid is symbolic, each cell already an object code.
* :class:`FiLMPolicy` — the BabyAI baseline (Chevalier-Boisvert et al. 2019): a GRU reads the instruction, a
  convolutional net reads the grid, FiLM layers let the instruction scale and shift the convolutional features,
  then max-pooling and actor/critic heads. BabyAI's memory LSTM is left out (the levels here are one room, fully
  within or near the 7×7 view).

The instruction encoder of both is learned at the word level over :data:`robotics.language.VOCAB` (unknown words
share the ``<unk>`` embedding).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from agents.policies.base import Act, Evaluation

_GRID = 147  # 7 × 7 cells × (object, colour, state)


def split_observation(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 147 + 1 + W) token observations → grid codes (N, 49, 3), direction (N,), word ids (N, W), all long."""
    codes = obs.round().long()
    return codes[:, :_GRID].reshape(-1, 49, 3), codes[:, _GRID], codes[:, _GRID + 1:]


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r}: expected an integer >= 1")


class _InstructionActorCritic(nn.Module):
    """The shared part: checks the spaces, turns observations into tensors, samples and scores actions from the
    subclass's ``heads(obs) -> (logits (N, A), values (N,))``."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space):
        super().__init__()
        from robotics.language import GRID_HIGH, TOKEN_OBS_DIM, VOCAB

        if not isinstance(observation_space, spaces.Box) or observation_space.shape != (TOKEN_OBS_DIM,):
            raise TypeError(f"{type(self).__name__} reads the BabyAI token observation, a Box of shape "
                            f"({TOKEN_OBS_DIM},); got {observation_space} (make the env with observation='tokens')")
        if not isinstance(action_space, spaces.Discrete):
            raise TypeError(f"{type(self).__name__} needs a Discrete action space, got {action_space}")
        self.n_actions, self.vocab_size, self.grid_high = int(action_space.n), len(VOCAB), GRID_HIGH
        self.words = observation_space.shape[0] - _GRID - 1

    def _tensor(self, obs) -> torch.Tensor:
        obs = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs)
        return obs.reshape(obs.shape[0], -1).float()

    def heads(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def act(self, obs, deterministic: bool = False) -> Act:
        logits, values = self.heads(self._tensor(obs))
        logprobs = torch.log_softmax(logits, -1)  # (N, A)
        action = logprobs.argmax(-1) if deterministic else torch.distributions.Categorical(logits=logprobs).sample()
        return Act(action, logprobs.gather(1, action[:, None]).squeeze(1), values, logprobs)

    def evaluate(self, batch: dict[str, torch.Tensor], entropy_grad: bool = True) -> Evaluation:
        logits, values = self.heads(self._tensor(batch["obs"]))
        logprobs = torch.log_softmax(logits, -1)  # (B, A)
        logprob = logprobs.gather(1, batch["actions"].long().reshape(-1, 1)).squeeze(1)
        entropy = -(logprobs.exp() * logprobs).sum(-1)
        return Evaluation(logprob, entropy if entropy_grad else entropy.detach(), values)

    @torch.no_grad()
    def value(self, obs) -> torch.Tensor:
        return self.heads(self._tensor(obs))[1]

    def action_logits(self, obs) -> torch.Tensor:
        """(N, A) action logits, with gradients (behaviour cloning's cross-entropy reads them)."""
        return self.heads(self._tensor(obs))[0]


class RT1Policy(_InstructionActorCritic):
    """A transformer over grid-cell, direction and instruction-word tokens (module docstring).

    Args:
        observation_space, action_space: the BabyAI token observation and ``Discrete(7)``.
        d_model: token width.
        layers: transformer encoder layers.
        heads: attention heads.
        learned_tokens: TokenLearner's output tokens (0: feed all 49 cell tokens).
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, d_model: int = 64,
                 layers: int = 2, heads: int = 4, learned_tokens: int = 8):
        super().__init__(observation_space, action_space)
        _check_sizes(d_model=d_model, layers=layers, heads=heads)
        if learned_tokens < 0:
            raise ValueError(f"learned_tokens={learned_tokens}: expected >= 0 (0: all 49 cell tokens)")
        if d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        obj, col, state = (h + 1 for h in self.grid_high)
        self.obj, self.col = nn.Embedding(obj, d_model), nn.Embedding(col, d_model)
        self.state = nn.Embedding(state, d_model)
        self.cell_pos = nn.Parameter(torch.randn(49, d_model) * 0.02)
        self.direction = nn.Embedding(4, d_model)
        self.word = nn.Embedding(self.vocab_size, d_model)
        self.word_pos = nn.Parameter(torch.randn(self.words, d_model) * 0.02)
        self.summary = nn.Parameter(torch.randn(2, d_model) * 0.02)  # the action token and the value token
        self.learner = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, d_model), nn.GELU(),
                                     nn.Linear(d_model, learned_tokens)) if learned_tokens else None
        layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d_model)
        self.actor, self.critic = nn.Linear(d_model, self.n_actions), nn.Linear(d_model, 1)
        nn.init.orthogonal_(self.actor.weight, 0.01)
        nn.init.zeros_(self.actor.bias)

    def heads(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid, direction, words = split_observation(obs)
        n = obs.shape[0]
        cells = self.obj(grid[..., 0]) + self.col(grid[..., 1]) + self.state(grid[..., 2]) + self.cell_pos
        present = (words != 0).float()[..., None]  # (N, W, 1)
        word_tokens = self.word(words) + self.word_pos
        if self.learner is not None:  # TokenLearner: S softmax-weighted sums of the cells, instruction-conditioned
            instruction = (word_tokens * present).sum(1) / present.sum(1).clamp(min=1)  # (N, d)
            weights = torch.softmax(self.learner(cells + instruction[:, None]), 1)  # (N, 49, S)
            cells = weights.transpose(1, 2) @ cells  # (N, S, d)
        tokens = torch.cat([self.summary.expand(n, -1, -1), self.direction(direction)[:, None], cells,
                            word_tokens], 1)  # (N, 2 + 1 + cells + W, d)
        pad = torch.cat([torch.zeros(n, 3 + cells.shape[1], dtype=torch.bool), words == 0], 1)
        out = self.final_norm(self.encoder(tokens, src_key_padding_mask=pad))
        return self.actor(out[:, 0]), self.critic(out[:, 1]).squeeze(-1)


class FiLMPolicy(_InstructionActorCritic):
    """BabyAI's FiLM baseline without memory (module docstring).

    Args:
        observation_space, action_space: the BabyAI token observation and ``Discrete(7)``.
        channels: convolutional width (BabyAI: 128).
        instr_dim: GRU width (BabyAI: 128).
        film_layers: FiLM-conditioned convolutional blocks (BabyAI: 2).
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, channels: int = 64,
                 instr_dim: int = 64, film_layers: int = 2):
        super().__init__(observation_space, action_space)
        _check_sizes(channels=channels, instr_dim=instr_dim, film_layers=film_layers)
        obj, col, state = (h + 1 for h in self.grid_high)
        self.obj, self.col = nn.Embedding(obj, channels), nn.Embedding(col, channels)
        self.state = nn.Embedding(state, channels)
        self.word = nn.Embedding(self.vocab_size, instr_dim)
        self.gru = nn.GRU(instr_dim, instr_dim, batch_first=True)
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(film_layers))
        self.films = nn.ModuleList(nn.Linear(instr_dim, 2 * channels) for _ in range(film_layers))
        self.direction = nn.Embedding(4, channels)
        self.actor = nn.Sequential(nn.Linear(channels, 64), nn.Tanh(), nn.Linear(64, self.n_actions))
        self.critic = nn.Sequential(nn.Linear(channels, 64), nn.Tanh(), nn.Linear(64, 1))
        nn.init.orthogonal_(self.actor[-1].weight, 0.01)
        nn.init.zeros_(self.actor[-1].bias)

    def instruction(self, words: torch.Tensor) -> torch.Tensor:
        """(N, instr_dim) the GRU's state after the last non-pad word (the first state for an empty mission)."""
        out, _ = self.gru(self.word(words))  # (N, W, D)
        last = ((words != 0).sum(1) - 1).clamp(min=0)
        return out[torch.arange(len(words)), last]

    def heads(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid, direction, words = split_observation(obs)
        x = (self.obj(grid[..., 0]) + self.col(grid[..., 1]) + self.state(grid[..., 2]))  # (N, 49, C)
        x = x.transpose(1, 2).reshape(len(obs), -1, 7, 7)
        instr = self.instruction(words)
        for conv, film in zip(self.convs, self.films):
            gamma, beta = film(instr).chunk(2, -1)
            x = x + torch.relu(gamma[..., None, None] * conv(x) + beta[..., None, None])
        features = x.amax((2, 3)) + self.direction(direction)  # (N, C)
        return self.actor(features), self.critic(features).squeeze(-1)


LANGUAGE_POLICIES = {"rt1": RT1Policy, "film": FiLMPolicy}


def make_language_policy(name: str, observation_space: spaces.Space, action_space: spaces.Space, **kwargs):
    """``"rt1"`` (:class:`RT1Policy`) or ``"film"`` (:class:`FiLMPolicy`) for the spaces."""
    if name not in LANGUAGE_POLICIES:
        raise ValueError(f"policy={name!r}: expected one of {list(LANGUAGE_POLICIES)}")
    cls = LANGUAGE_POLICIES[name]
    options = [p for p in inspect.signature(cls).parameters if p not in ("observation_space", "action_space")]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ValueError(f"policy_kwargs {unknown} are not options of policy={name!r}; it takes {options}")
    return cls(observation_space, action_space, **kwargs)


def check_policy_options(name: str, kwargs: dict) -> None:
    """Build the policy once on the BabyAI spaces, so a bad name or size is refused when a config is made."""
    from robotics.language import token_observation_space

    make_language_policy(name, token_observation_space(), spaces.Discrete(7), **kwargs)
