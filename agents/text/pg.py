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

>>> PGConfig(estimator="grpo").baseline_and_scale
('mean', 'std')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from agents.core.advantages import BASELINES, SCALES, group_advantages
from agents.core.onpolicy import OnPolicyConfig, TrainResult, train
from agents.policies.lm import LoRASettings

PRESETS = {"reinforce": ("mean", "none"), "rloo": ("loo", "none"), "grpo": ("mean", "std")}


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

    def __post_init__(self):
        super().__post_init__()
        self.check_lora(on_policy=True, text=self.is_text)
        if self.estimator not in PRESETS:
            raise ValueError(f"estimator={self.estimator!r}; expected one of {sorted(PRESETS)}")
        if self.baseline is not None and self.baseline not in BASELINES:
            raise ValueError(f"baseline={self.baseline!r}; expected one of {BASELINES} (or None for the preset)")
        if self.scale is not None and self.scale not in SCALES:
            raise ValueError(f"scale={self.scale!r}; expected one of {SCALES} (or None for the preset)")
        baseline, scale = self.baseline_and_scale
        if (baseline != "none" or scale == "std") and self.group_size < 2:  # a group of one is its own baseline
            raise ValueError(f"group_size={self.group_size} is out of range for {self.estimator}; expected >= 2")

    @property
    def baseline_and_scale(self) -> tuple[str, str]:
        preset = PRESETS[self.estimator]
        return self.baseline or preset[0], self.scale or preset[1]

    def advantages(self, episodes, batch, policy) -> dict[str, torch.Tensor]:
        per_episode = group_advantages(episodes.returns, self.group_size, *self.baseline_and_scale)  # (N,)
        if batch["actions"].dim() == 2:  # text: every token of a completion gets its advantage
            return {"advantages": per_episode[:, None].expand_as(batch["actions"]).contiguous()}
        return {"advantages": per_episode[batch["row_episode"]]}


def train_pg(config: PGConfig, run_dir: str | Path, resume: bool = True, progress: bool = True,
             callback=None) -> TrainResult:
    """Train REINFORCE/RLOO/GRPO (see :func:`agents.core.onpolicy.train` for the run directory and resume)."""
    if not isinstance(config, PGConfig):
        raise TypeError(f"train_pg needs a PGConfig, got {type(config).__name__}")
    return train(config, run_dir, resume, progress, callback, value_head=False)
