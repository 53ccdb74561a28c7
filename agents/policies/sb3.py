"""Stable-Baselines3 on the text env: a token-embedding features extractor for its Dict observation.

SB3's default ``MultiInputPolicy`` flattens each Box of a Dict observation into floats, so a token id 1,500 is
read as the number 1500.0 (and a one-hot encoding would need ``V·L`` inputs). :class:`TokenEmbeddingExtractor`
embeds the ids instead and pools them::

    import gymnasium as gym
    from stable_baselines3 import PPO

    import textenv  # noqa: F401  (registers the ids)
    from agents.policies.sb3 import sb3_policy_kwargs

    beta = 0.05
    env = gym.make("textenv/Sentiment-v1", max_new_tokens=8, kl_coef=beta, kl_mode="reference")
    model = PPO("MultiInputPolicy", env, policy_kwargs=sb3_policy_kwargs(), ent_coef=beta)
    model.learn(4096)

``kl_mode="reference"`` with ``ent_coef=β`` approximates the KL-regularised objective ``E[R] − β·KL(π‖π_ref)``:
it is exact only for one-token episodes with ``normalize_advantage=False``, since SB3 adds each visited state's
entropy to its loss rather than to the return (:mod:`textenv.kl` says what differs). Adaptive β (``kl_target``)
is measured in ``"policy"`` mode; :class:`KLBatchCallback` ends its batch at the end of each SB3 rollout.

What SB3 does to the observation (``stable_baselines3/common/preprocessing.py``, 2.x): the rollout buffer stores
``input_ids`` as int64 (the space's dtype); ``preprocess_obs`` casts each Box to float32 and divides by 255 only
for image spaces (3-D uint8 Boxes in [0, 255]), so these 1-D int64 Boxes arrive unscaled. float32 holds integers exactly up to 2**24, hence ``round().long()`` recovers the ids, and vocabularies above 2**24 are refused.

Needs the optional extra: ``pip install "textenv[sb3]"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from textenv import KLController, kl_controller

try:
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from stable_baselines3.common.vec_env import DummyVecEnv
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError('agents.policies.sb3 needs Stable-Baselines3; install it with: pip install "textenv[sb3]"') from e

OBS_KEYS = ("input_ids", "attention_mask")
_MAX_EXACT_FLOAT32_INT = 2**24  # SB3 hands Box observations over as float32


def _vocab_size(observation_space) -> int:
    """``V`` of the text env's observation space, refusing anything that is not its Dict of two int Boxes."""
    expected = f"a Dict observation space with keys {OBS_KEYS} (textenv/Sentiment-v1's observation)"
    if not isinstance(observation_space, spaces.Dict) or set(observation_space.spaces) != set(OBS_KEYS):
        got = f"keys {list(observation_space.spaces)}" if isinstance(observation_space, spaces.Dict) else str(observation_space)
        raise ValueError(f"TokenEmbeddingExtractor needs {expected}; got {got}")
    ids, mask = observation_space["input_ids"], observation_space["attention_mask"]
    for name, box in (("input_ids", ids), ("attention_mask", mask)):
        if not isinstance(box, spaces.Box) or len(box.shape) != 1 or not np.issubdtype(box.dtype, np.integer):
            raise ValueError(f"TokenEmbeddingExtractor needs {expected}; {name!r} is {box}, expected a 1-D integer Box")
    if ids.shape != mask.shape:
        raise ValueError(f"input_ids {ids.shape} and attention_mask {mask.shape} must have the same shape (L,)")
    if np.any(ids.low < 0) or np.any(ids.high != ids.high.flat[0]):
        raise ValueError(f"input_ids must be a Box(0, V-1); got low {ids.low.min()}, high {ids.high.min()}..{ids.high.max()}")
    vocab_size = int(ids.high.flat[0]) + 1
    if vocab_size > _MAX_EXACT_FLOAT32_INT:
        raise ValueError(
            f"vocabulary of {vocab_size} tokens: SB3 casts observations to float32, which holds token ids exactly only "
            f"up to {_MAX_EXACT_FLOAT32_INT}"
        )
    return vocab_size


class TokenEmbeddingExtractor(BaseFeaturesExtractor):
    """``[masked mean of the token embeddings, embedding of the last real token]``, then an optional MLP.

    Args:
        observation_space: the text env's ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))``;
            ``V`` is read from ``input_ids.high + 1``.
        embed_dim: width ``E`` of ``nn.Embedding(V, E)``; without an MLP, ``features_dim = 2·E``.
        mlp_dims: hidden sizes of a ReLU MLP on the pooled features (``()``: none); ``features_dim`` is the last one.

    Parameters: ``V·E`` (+ the MLP), against ``V·L·h`` for a one-hot input into a first layer of width ``h``.
    """

    def __init__(self, observation_space: spaces.Dict, embed_dim: int = 64, mlp_dims: Sequence[int] = ()):
        vocab_size = _vocab_size(observation_space)
        if embed_dim < 1 or any(d < 1 for d in mlp_dims):
            raise ValueError(f"embed_dim={embed_dim} and mlp_dims={tuple(mlp_dims)} must be positive")
        super().__init__(observation_space, features_dim=mlp_dims[-1] if mlp_dims else 2 * embed_dim)
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, embed_dim)
        layers, width = [], 2 * embed_dim
        for d in mlp_dims:
            layers += [nn.Linear(width, d), nn.ReLU()]
            width = d
        self.mlp = nn.Sequential(*layers)  # empty: the identity

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = observations["input_ids"].round().long()  # (B, L), float32 from SB3's preprocessing
        mask = observations["attention_mask"].round().to(self.embed.weight.dtype)  # (B, L)
        emb = self.embed(ids)  # (B, L, E)
        count = mask.sum(1, keepdim=True).clamp(min=1.0)  # (B, 1)
        mean = (emb * mask.unsqueeze(-1)).sum(1) / count  # (B, E)
        positions = torch.arange(1, ids.shape[1] + 1, device=ids.device, dtype=mask.dtype)  # (L,)
        last = (mask * positions).argmax(1)  # (B,) index of the last real token (0 when the mask is empty)
        last_emb = emb[torch.arange(ids.shape[0], device=ids.device), last]  # (B, E)
        return self.mlp(torch.cat([mean, last_emb], dim=1))  # (B, 2E) or (B, mlp_dims[-1])


def sb3_policy_kwargs(embed_dim: int = 64, mlp_dims: Sequence[int] = (), net_arch=None) -> dict:
    """``policy_kwargs`` for ``PPO("MultiInputPolicy", env, policy_kwargs=...)`` (or A2C) on a text env.

    ``net_arch`` is passed through when given (SB3's default for PPO: ``dict(pi=[64, 64], vf=[64, 64])``).

    >>> kwargs = sb3_policy_kwargs(embed_dim=32)
    >>> kwargs["features_extractor_class"].__name__, kwargs["features_extractor_kwargs"]
    ('TokenEmbeddingExtractor', {'embed_dim': 32, 'mlp_dims': ()})
    """
    kwargs = {
        "features_extractor_class": TokenEmbeddingExtractor,
        "features_extractor_kwargs": {"embed_dim": embed_dim, "mlp_dims": tuple(mlp_dims)},
    }
    if net_arch is not None:
        kwargs["net_arch"] = net_arch
    return kwargs


class KLBatchCallback(BaseCallback):
    """Ends the env's KL batch at the end of every SB3 rollout: an adaptive β (``kl_target``) takes one step with
    the mean summed KL of the episodes that finished in the rollout (:meth:`textenv.KLController.end_batch`), and
    never changes within one. ``model.learn(n, callback=KLBatchCallback())``.

    The KL-shaped envs must live in this process (SB3's default ``DummyVecEnv``, under any ``VecEnvWrapper``);
    the episodes of its sub-envs are pooled into one update and every sub-env gets the same β. Without
    ``kl_target`` it changes nothing. The env measures the KL only in ``kl_mode="policy"``, where the agent
    must hand over its log-probs before each step (:func:`textenv.supply_policy_logprobs`).
    """

    def _init_callback(self) -> None:
        self.controllers = _kl_controllers(self.training_env)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        lead, *rest = self.controllers
        for controller in rest:  # pool every sub-env's episodes into one batch
            lead.pending, controller.pending = lead.pending + controller.pending, []
        lead.end_batch()
        for controller in rest:
            controller.value = lead.value


def _kl_controllers(venv) -> list[KLController]:
    """The KL controller of each sub-env of an SB3 ``VecEnv`` (refusing envs it cannot reach or that differ)."""
    while hasattr(venv, "venv"):  # VecEnvWrapper (VecNormalize, VecMonitor, ...)
        venv = venv.venv
    if not isinstance(venv, DummyVecEnv):
        raise TypeError(
            f"KLBatchCallback needs the KL-shaped envs in this process (a DummyVecEnv), got {type(venv).__name__}; "
            f"its sub-envs' β cannot be reached"
        )
    controllers = [c for c in (kl_controller(env) for env in venv.envs) if c is not None]
    if not controllers:
        raise ValueError("KLBatchCallback: the training env has no KL shaping (make it with kl_coef > 0)")
    settings = {(c.value, c.target, c.horizon) for c in controllers}
    if len(settings) > 1:
        raise ValueError(f"KLBatchCallback: the sub-envs' KL controllers differ (β, target, horizon: {sorted(settings, key=str)}); "
                         f"make every sub-env with the same kl_coef, kl_target and kl_horizon")
    return controllers
