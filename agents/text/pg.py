"""REINFORCE, RLOO and GRPO: critic-free policy gradients with a group baseline, one estimator with options.

Each prompt is completed ``group_size = K`` times; a completion's return (the reward model's score minus the
env's summed KL penalty) minus a baseline from its group is the advantage of each of its tokens
(:func:`agents.core.advantages.group_advantages`):

| ``estimator`` | baseline | scale | reference |
|---|---|---|---|
| ``"reinforce"`` | group mean | — | Williams 1992, with a baseline |
| ``"rloo"`` | mean of the *other* K−1 | — | Ahmadian et al. 2024, "Back to basics" |
| ``"grpo"`` | group mean | ÷ group std | Shao et al. 2024, DeepSeekMath |

``baseline=`` and ``scale=`` override the preset. The update is :func:`agents.core.update.ppo_update` with no
value term: with ``epochs=1`` and one minibatch (the defaults here) the ratio is 1 and the loss is the plain
policy gradient; more epochs clip as PPO does (GRPO's μ > 1). On a non-text env (``textenv/Bandit-v0``) a
group is K episodes from the env's start distribution.

``loss_type`` picks the policy loss of the 2025 group family (:func:`agents.core.losses.ppo_loss` has the maths):

| ``loss_type`` | what changes | defaults it brings (each overridable) |
|---|---|---|
| ``"bnpo"`` (default) | token-mean over the batch, symmetric clip: textenv's loss before ``loss_type`` | — |
| ``"grpo"`` | per-completion mean, then mean (DeepSeekMath: each completion weighs the same) | — |
| ``"dapo"`` | token mean, clip-higher, dynamic sampling, overlong shaping (Yu et al. 2025) | ``clip_high=0.28``, ``dynamic_sampling=True``, ``overlong="penalty"`` |
| ``"dr_grpo"`` | no std scaling, sum ÷ (rows × ``max_new_tokens``) (Liu et al. 2025) | ``scale="none"`` |
| ``"gspo"`` | sequence-level ratio (geometric mean of the token ratios), clipped per sequence (Zheng et al. 2025) | ``clip=3e-4``, ``clip_high=4e-4`` |
| ``"cispo"`` | REINFORCE on ``log π`` weighted by the stop-gradient ratio capped at ``1 + clip_high`` (MiniMax-M1) | ``clip_high=4.0`` (cap 5, ScaleRL's) |

With ``epochs=1`` and one minibatch the ratio is 1, so the clips do nothing and ``grpo``/``bnpo``/``dapo``/``cispo``
differ only in how tokens are weighted; the clips act from the second minibatch or epoch on (``epochs=2``, μ = 2).

>>> PGConfig(estimator="grpo").baseline_and_scale
('mean', 'std')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from agents.core.advantages import BASELINES, SCALES, group_advantages
from agents.core.onpolicy import OnPolicyConfig, TrainResult, train
from agents.core.run import check_range
from agents.core.update import UpdateSettings
from agents.policies.lm import LoRASettings

PRESETS = {"reinforce": ("mean", "none"), "rloo": ("loo", "none"), "grpo": ("mean", "std")}
LOSS_PRESETS = {  # loss_type -> defaults of clip, clip_high, dynamic_sampling, overlong, scale (None: the estimator's)
    "bnpo": dict(clip=0.2, clip_high=None, dynamic_sampling=False, overlong="none", scale=None),
    "grpo": dict(clip=0.2, clip_high=None, dynamic_sampling=False, overlong="none", scale=None),
    "dapo": dict(clip=0.2, clip_high=0.28, dynamic_sampling=True, overlong="penalty", scale=None),
    "dr_grpo": dict(clip=0.2, clip_high=None, dynamic_sampling=False, overlong="none", scale="none"),
    "gspo": dict(clip=3e-4, clip_high=4e-4, dynamic_sampling=False, overlong="none", scale=None),
    "cispo": dict(clip=0.2, clip_high=4.0, dynamic_sampling=False, overlong="none", scale=None),
}
OVERLONG = ("none", "mask", "penalty")


@dataclass
class PGConfig(LoRASettings, OnPolicyConfig):
    """A group-baseline policy gradient; the fields of :class:`agents.core.onpolicy.OnPolicyConfig`, the LoRA
    fields of :class:`agents.policies.lm.LoRASettings`, plus these."""

    estimator: str = "rloo"
    """``"reinforce"``, ``"rloo"`` or ``"grpo"`` (table above)."""
    baseline: str | None = None
    """Override the preset's baseline: ``"none"``, ``"mean"`` or ``"loo"``."""
    scale: str | None = None
    """Override the preset's scale: ``"none"`` or ``"std"``."""
    group_size: int = 4
    """Completions per prompt (K)."""
    prompts_per_iter: int = 16
    """Distinct prompts per iteration (batch = 16 · 4 = 64 completions)."""
    epochs: int = 1
    """Passes over each batch (1: on-policy, ratio 1)."""
    minibatch_rows: int = 0
    """Completions per minibatch (0: one step on the whole batch)."""
    loss_type: str = "bnpo"
    """Policy loss: bnpo (token mean; the default), grpo, dapo, dr_grpo, gspo or cispo (README: Choosing a loss)."""
    clip: float | None = None
    """Lower ratio clip ε (None: the loss type's: 3e-4 for gspo, else 0.2)."""
    clip_high: float | None = None
    """Upper ratio clip ε_high (None: the loss type's: dapo 0.28, gspo 4e-4, cispo 4.0, else clip); cispo caps its
    importance weight at 1 + clip_high."""
    dynamic_sampling: bool | None = None
    """Drop groups whose rewards are all equal (no signal) and sample more prompts to refill (None: on for dapo)."""
    max_rollouts: int = 3
    """With dynamic sampling: rollouts per iteration at most; the update takes the informative groups found."""
    overlong: str | None = None
    """Capped completions: none, mask (out of the loss) or penalty (DAPO's soft overlong penalty); None: the loss type's."""
    overlong_buffer: int | None = None
    """DAPO's L_cache: the penalty ramps from 0 to −1 over the last overlong_buffer tokens (None: max_new_tokens // 4)."""

    def __post_init__(self):
        super().__post_init__()
        self.check_lora(on_policy=True, text=self.is_text)
        if self.estimator not in PRESETS:
            raise ValueError(f"estimator={self.estimator!r}; expected one of {sorted(PRESETS)}")
        if self.baseline is not None and self.baseline not in BASELINES:
            raise ValueError(f"baseline={self.baseline!r}; expected one of {BASELINES} (or None for the preset)")
        if self.scale is not None and self.scale not in SCALES:
            raise ValueError(f"scale={self.scale!r}; expected one of {SCALES} (or None for the preset)")
        if self.loss_type not in LOSS_PRESETS:
            raise ValueError(f"loss_type={self.loss_type!r}; expected one of {list(LOSS_PRESETS)}")
        if self.clip_high is not None:
            check_range("clip_high", self.clip_high, 0, low_open=True)
        check_range("max_rollouts", self.max_rollouts, 1, integer=True)
        if self.overlong is not None and self.overlong not in OVERLONG:
            raise ValueError(f"overlong={self.overlong!r}; expected one of {OVERLONG} (or None for the loss type's)")
        if self.overlong_buffer is not None:
            check_range("overlong_buffer", self.overlong_buffer, 1, self.max_new_tokens, integer=True)
        if self.dynamic_sampling_on and not self.is_text:
            raise ValueError("dynamic_sampling needs a text env (it refills groups with fresh prompts)")
        if self.overlong_mode != "none" and not self.is_text:
            raise ValueError(f"overlong={self.overlong_mode!r} needs a text env (completions capped at max_new_tokens)")
        baseline, scale = self.baseline_and_scale
        if (baseline != "none" or scale == "std") and self.group_size < 2:  # a group of one is its own baseline
            raise ValueError(f"group_size={self.group_size} is out of range for {self.estimator}; expected >= 2")

    @property
    def baseline_and_scale(self) -> tuple[str, str]:
        preset = PRESETS[self.estimator]
        return self.baseline or preset[0], self.scale or LOSS_PRESETS[self.loss_type]["scale"] or preset[1]

    def _preset(self, name: str):
        value = getattr(self, name)
        return LOSS_PRESETS[self.loss_type][name] if value is None else value

    @property
    def clip_range(self) -> tuple[float, float]:
        """``(ε, ε_high)`` of the ratio clip (cispo: ε_high sets the weight's cap, 1 + ε_high)."""
        low = self._preset("clip")
        high = self._preset("clip_high")
        return low, low if high is None else high

    @property
    def dynamic_sampling_on(self) -> bool:
        return bool(self._preset("dynamic_sampling"))

    @property
    def overlong_mode(self) -> str:
        return self._preset("overlong")

    def update_settings(self) -> UpdateSettings:
        low, high = self.clip_range
        return UpdateSettings(self.epochs, self.minibatch_rows, low, None, 0.0, self.ent_coef, self.max_grad_norm,
                              clip_high=high, loss_type=self.loss_type, **self.kl_loss_settings())

    def informative_groups(self, episodes) -> torch.Tensor:
        """Indices of the groups whose shaped returns are not all equal (DAPO's dynamic sampling keeps those)."""
        grouped = self.shaped_returns(episodes).view(-1, self.group_size)
        return torch.nonzero((grouped != grouped[:, :1]).any(1)).flatten()

    def shaped_returns(self, episodes) -> torch.Tensor:
        """``(N,)`` episode returns, with DAPO's soft overlong penalty where ``overlong="penalty"``:
        ``0`` up to ``L_max − L_cache`` tokens, then ``((L_max − L_cache) − |y|)/L_cache``, down to −1 at the cap."""
        returns = episodes.returns
        if self.overlong_mode != "penalty":
            return returns
        cache = self.overlong_buffer or max(1, self.max_new_tokens // 4)
        free = self.max_new_tokens - cache
        return returns + ((free - episodes.lengths.to(returns.dtype)) / cache).clamp(max=0.0)

    def advantages(self, episodes, batch, policy) -> dict[str, torch.Tensor]:
        per_episode = group_advantages(self.shaped_returns(episodes), self.group_size, *self.baseline_and_scale)  # (N,)
        out = {}
        if batch["actions"].dim() == 2:  # text: every token of a completion gets its advantage
            out["advantages"] = per_episode[:, None].expand_as(batch["actions"]).contiguous()
            if self.overlong_mode == "mask":  # capped completions teach nothing (DAPO's overlong filtering)
                capped = torch.tensor([bool(info.get("capped", False)) for info in episodes.infos])
                out["mask"] = batch["mask"] & ~capped[:, None]
        else:
            out["advantages"] = per_episode[batch["row_episode"]]
        return out


def train_pg(config: PGConfig, run_dir: str | Path, resume: bool = True, progress: bool = True,
             callback=None) -> TrainResult:
    """Train REINFORCE/RLOO/GRPO (see :func:`agents.core.onpolicy.train` for the run directory and resume)."""
    if not isinstance(config, PGConfig):
        raise TypeError(f"train_pg needs a PGConfig, got {type(config).__name__}")
    return train(config, run_dir, resume, progress, callback, value_head=False)
