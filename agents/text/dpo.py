"""DPO and IPO: learning from preference pairs directly, against a frozen reference (no reward model, no sampling).

Data: the preference JSONL of :mod:`textenv.rm.data` (pairs or K-wise rankings, expanded into C(K, 2)
ordered pairs); by default the built-in world's training preferences. The reference's sequence log-probs are
computed once before training; each step then needs one teacher-forced forward of the policy over the
chosen and rejected completions of its pairs. Losses: :func:`agents.core.losses.dpo_loss`.

No EOS is appended to the completions: preference records store text, and a completion cut at the sampler's
token cap never had one (15% of the built-in pairs), so DPO learns from the completion tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from agents.core.losses import DPO_LOSSES, dpo_loss
from agents.core.run import check_range
from agents.policies.lm import LMPolicy, LoRASettings, load_policy, sequence_batch, sequence_logprobs
from agents.text.supervised import (
    SupervisedConfig,
    finished,
    start_run,
    supervised_loop,
)


@dataclass
class DPOConfig(SupervisedConfig):
    """Direct preference optimisation (and the optimisation fields of
    :class:`agents.text.supervised.SupervisedConfig`)."""

    data_kind: ClassVar[str] = "preference JSONL"
    model: str | None = None
    """Policy to start from (name or path); None: the built-in world's base LM."""
    ref_model: str | None = None
    """Frozen reference; None: the same weights as model (with LoRA: the policy's base with the adapter off, no copy)."""
    data: str | None = None
    """Preference JSONL; None: the built-in world's training preferences."""
    max_pairs: int | None = 8000
    """Use at most this many pairs (a seeded random subset); None: all."""
    beta: float = 0.1
    """β of DPO (IPO: its τ)."""
    loss_type: str = "sigmoid"
    """``"sigmoid"`` (DPO) or ``"ipo"``."""
    label_smoothing: float = 0.0
    """Conservative DPO's label-flip probability ε (sigmoid loss only)."""

    def __post_init__(self):
        super().__post_init__()
        if self.max_pairs is not None:
            check_range("max_pairs", self.max_pairs, 1, integer=True)
        check_range("beta", self.beta, 0, low_open=True)
        check_range("label_smoothing", self.label_smoothing, 0, 0.49)
        if self.loss_type not in DPO_LOSSES:
            raise ValueError(f"loss_type={self.loss_type!r}; expected one of {DPO_LOSSES}")
        if self.label_smoothing and self.loss_type != "sigmoid":
            raise ValueError("label_smoothing applies to loss_type='sigmoid' only")


def _pairs(config: DPOConfig) -> list[tuple[str, str, str]]:
    from textenv import world
    from textenv.rm import expand_pairs, load_preferences

    pairs = [(p, w, l) for p, w, l, _ in expand_pairs(load_preferences(config.data or world.preferences_path("train")))]
    if config.max_pairs is not None and len(pairs) > config.max_pairs:
        keep = np.random.default_rng([config.seed, 7]).choice(len(pairs), config.max_pairs, replace=False)
        pairs = [pairs[j] for j in sorted(keep)]
    return pairs


def _logprobs(model, tokenizer, pairs, rows, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs under ``model`` of the chosen and of the rejected completions of ``pairs[rows]``, each ``(B,)``."""
    prompts = [pairs[j][0] for j in rows]
    batch = sequence_batch(tokenizer, prompts * 2, [pairs[j][1] for j in rows] + [pairs[j][2] for j in rows],
                           add_eos=False, max_length=max_length)
    logprobs = sequence_logprobs(model, batch)
    return logprobs[: len(rows)], logprobs[len(rows):]


def train_dpo(config: DPOConfig, run_dir: str | Path, resume: bool = True, progress: bool = True) -> Path:
    """Train; returns the directory of the trained policy (``run_dir/policy``).

    With LoRA and no ``ref_model`` the policy is loaded first and the reference is its base with the adapter off
    (:meth:`agents.policies.lm.LMPolicy.reference_model`): no second copy of the weights."""
    from tqdm.auto import tqdm

    from textenv import world

    run, state = start_run(config, run_dir, resume)
    if finished(run, state):
        return run.path / "policy"
    pairs = _pairs(config)
    base = str(config.model or world.lm_path())

    def load():
        return load_policy(run.policy_path() if state else base, config.lora, checkpoint=state is not None,
                           seed=config.seed, gradient_checkpointing=config.gradient_checkpointing)

    policy = None
    if config.lora is not None and config.ref_model is None:
        policy = load()
        reference, tokenizer = policy.reference_model(), policy.tokenizer
    else:
        reference = LMPolicy.from_pretrained(config.ref_model or base, lora=LoRASettings()).eval()  # adapters merged
        tokenizer = reference.tokenizer
    if config.ref_model is not None:
        from textenv.lm import load_config

        policy_vocab = load_config(base).get_text_config().vocab_size
        if reference.vocab_size != policy_vocab:
            raise ValueError(f"reference vocabulary {reference.vocab_size} ({config.ref_model}) differs from the "
                             f"policy's {policy_vocab} ({base}); they must share a tokenizer")
    ref_chosen, ref_rejected = torch.zeros(len(pairs)), torch.zeros(len(pairs))
    with torch.no_grad():
        for start in tqdm(range(0, len(pairs), 128), desc="DPO reference log-probs", unit="batch", disable=not progress):
            rows = list(range(start, min(start + 128, len(pairs))))
            ref_chosen[rows], ref_rejected[rows] = _logprobs(reference, tokenizer, pairs, rows, config.max_length)
    del reference
    if policy is None:
        policy = load()

    def batch_loss(rows):
        chosen, rejected = _logprobs(policy, policy.tokenizer, pairs, rows, config.max_length)
        terms = dpo_loss(chosen, rejected, ref_chosen[rows], ref_rejected[rows], config.beta, config.loss_type,
                         config.label_smoothing)
        return terms.loss, {"accuracy": float(terms.accuracy), "chosen_reward": float(terms.chosen_reward),
                            "rejected_reward": float(terms.rejected_reward), "margin": float(terms.margin)}

    return supervised_loop(run, policy, len(pairs), config, state, batch_loss,
                           config.loss_type.upper() if config.loss_type == "ipo" else "DPO", progress)
