"""PPO for language models on the token env (Ziegler et al. 2019; Ouyang et al. 2022, InstructGPT).

The env pays the reward model's score on a completion's last token and ``−β·KL_t`` on every token
(:mod:`textenv.kl`, fed with the log-probs the policy sampled from, so the KL costs no second policy
forward); β is fixed or adaptive through the env's KL controller. Advantages are GAE over the tokens of each
completion with the value head of :class:`agents.policies.lm.LMPolicy`, whitened over the batch; the update is
the clipped surrogate with value clipping, entropy bonus, early stop on a target KL, and an optional
pretraining-mix loss (PPO-ptx: ``+ γ_ptx · LM loss`` on pretraining text, which keeps the policy fluent).

The text env pays a completion's score on its last token, also when ``max_new_tokens`` cut it, so the cap
ends the return: nothing is bootstrapped past it (a value there would count the score twice).
``textenv/Sentiment-v1`` says so itself (the cap's step is ``terminated``); on ``-v0`` the cap's step is
``truncated`` with ``info["capped"]``, and PPO treats such a step as terminated (same numbers on both). A text
episode truncated with ``info["capped"]`` False is refused (the LM policy has no value of a final observation
to bootstrap with); on control tasks a truncation is a time limit, bootstrapped with ``V(final obs)``.

>>> from agents import PPOConfig
>>> PPOConfig(iterations=2, prompts_per_iter=8).batch_size
8
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agents.core.advantages import gae, whiten
from agents.core.onpolicy import OnPolicyConfig, TrainResult, train
from agents.core.run import check_range
from agents.core.update import UpdateSettings
from agents.policies.lm import LoRASettings


@dataclass
class PPOConfig(LoRASettings, OnPolicyConfig):
    """PPO with a value head on the policy's trunk; the fields of :class:`agents.core.onpolicy.OnPolicyConfig`, the
    LoRA fields of :class:`agents.policies.lm.LoRASettings` (with LoRA the value head reads the adapted trunk),
    plus these."""

    gamma: float = 1.0
    """Discount over tokens (1: the completion's score counts in full at every token)."""
    lam: float = 0.95
    """GAE λ."""
    vf_coef: float = 0.1
    """Value loss coefficient."""
    value_clip: float | None = 0.2
    """Value clipping around the old values (None: unclipped)."""
    whiten_advantages: bool = True
    """Normalise advantages over the batch's tokens."""
    target_kl: float | None = None
    """Early stop: end the epochs once a minibatch's approx KL(old‖new) exceeds ``1.5·target_kl``."""
    value_warmup_iters: int = 0
    """Iterations that train only the value head before the policy moves (advantages need a sane critic)."""
    ptx_coef: float = 0.0
    """PPO-ptx: weight of the pretraining LM loss added to every minibatch (0: off)."""
    ptx_data: str | None = None
    """Text file, one document per line, for PPO-ptx; None: the built-in world's corpus."""
    ptx_batch: int = 8
    """Lines per PPO-ptx minibatch."""

    def __post_init__(self):
        super().__post_init__()
        self.check_lora(on_policy=True, text=self.is_text)
        check_range("gamma", self.gamma, 0, 1)
        check_range("lam", self.lam, 0, 1)
        check_range("vf_coef", self.vf_coef, 0)
        check_range("ptx_coef", self.ptx_coef, 0)
        check_range("ptx_batch", self.ptx_batch, 1, integer=True)
        check_range("value_warmup_iters", self.value_warmup_iters, 0, integer=True)
        if self.value_clip is not None:
            check_range("value_clip", self.value_clip, 0, low_open=True)
        if self.target_kl is not None:
            check_range("target_kl", self.target_kl, 0, low_open=True)

    def update_settings(self) -> UpdateSettings:
        return UpdateSettings(self.epochs, self.minibatch_rows, self.clip, self.value_clip, self.vf_coef, self.ent_coef,
                              self.max_grad_norm, self.target_kl, **self.kl_loss_settings())

    def advantages(self, episodes, batch, policy) -> dict[str, torch.Tensor]:
        valid = episodes.valid  # (T, N)
        text = batch["old_values"].dim() == 2
        if text:
            values = batch["old_values"].T * valid  # (T, N)
            # a capped completion ends its return, whichever flag the env's version sets there (module docstring)
            capped = torch.tensor([bool(info.get("capped", True)) for info in episodes.infos])  # (N,)
            if (episodes.truncated & ~capped).any():
                raise NotImplementedError(
                    "a text episode was truncated with info['capped']=False (a time limit before the token cap); "
                    "PPO on text cannot bootstrap it (no value of the final observation): end it as terminated"
                )
            terminated, truncated, bootstrap = episodes.terminated | episodes.truncated, torch.zeros_like(valid), None
        else:  # rows are the valid steps in (t, i) order; a truncated episode is worth V(final obs) after its cut
            values = torch.zeros(valid.shape)
            values[valid] = batch["old_values"]
            terminated, truncated = episodes.terminated, episodes.truncated
            bootstrap = torch.zeros(valid.shape)
            for t, i in truncated.nonzero().tolist():
                bootstrap[t, i] = float(policy.value(np.asarray(episodes.final_obs[i])[None])[0])
        advantages, returns = gae(episodes.rewards, values, terminated, truncated, torch.zeros(valid.shape[1]),
                                  bootstrap, self.gamma, self.lam)
        advantages, returns = (advantages.T, returns.T) if text else (advantages[valid], returns[valid])
        if self.whiten_advantages:
            advantages = whiten(advantages, batch["mask"])
        return {"advantages": advantages, "returns": returns}


def _ptx_loss_factory(config: PPOConfig):
    """``factory(policy, rng) -> () -> loss``: the LM loss on ``ptx_batch`` random lines of the pretraining text."""
    if config.ptx_data is not None:
        path = Path(config.ptx_data)
        if not path.is_file():
            raise FileNotFoundError(f"ptx_data={config.ptx_data!r} is not a file (expected one document per line)")
    else:
        from textenv import world

        path = world.build() / "corpus.txt"
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"ptx_data {path} has no non-empty lines")

    def factory(policy, rng: np.random.Generator):
        tokenizer = policy.tokenizer

        def loss() -> torch.Tensor:
            texts = [lines[j] + tokenizer.eos_token for j in rng.integers(len(lines), size=config.ptx_batch)]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
            return config.ptx_coef * policy.model(**enc, labels=labels).loss

        return loss

    return factory


def train_ppo(config: PPOConfig, run_dir: str | Path, resume: bool = True, progress: bool = True,
              callback=None) -> TrainResult:
    """Train PPO (see :func:`agents.core.onpolicy.train` for the run directory, resume and ``callback``)."""
    if not isinstance(config, PPOConfig):
        raise TypeError(f"train_ppo needs a PPOConfig, got {type(config).__name__}")
    factory = _ptx_loss_factory(config) if config.ptx_coef > 0 else None
    if factory is not None and not config.is_text:
        raise ValueError("ptx_coef > 0 (PPO-ptx) needs a text env")
    return train(config, run_dir, resume, progress, callback, value_head=True, extra_loss_factory=factory,
                 warmup_iterations=config.value_warmup_iters)
