"""Supervised fine-tuning on prompt/completion demonstrations (the first stage of InstructGPT's pipeline).

The loss is the mean negative log-likelihood of the completion tokens (and EOS), prompt tokens masked out,
from one teacher-forced forward per batch (:meth:`agents.policies.lm.LMPolicy.evaluate`). Data: a JSONL file of
``{"prompt": ..., "completion": ...}`` lines, or by default positive-mood demonstrations drawn from the
built-in world's grammar (:func:`textenv.world.demos.sample_demonstrations`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from agents.core.losses import masked_mean
from agents.core.run import check_range
from agents.policies.lm import load_policy, sequence_batch
from agents.text.supervised import (
    SupervisedConfig,
    finished,
    start_run,
    supervised_loop,
)
from textenv.jsonl import read_jsonl


@dataclass
class SFTConfig(SupervisedConfig):
    """Supervised fine-tuning (and the optimisation fields of :class:`agents.text.supervised.SupervisedConfig`)."""

    data_kind: ClassVar[str] = "JSONL of prompt/completion records"
    model: str | None = None
    """Name or path of the causal LM to fine-tune; None: the built-in world's base LM."""
    data: str | None = None
    """JSONL of ``{"prompt", "completion"}`` records; None: ``num_demos`` built-in demonstrations."""
    num_demos: int = 2000
    """Built-in demonstrations to draw when ``data`` is None."""
    mood: str = "positive"
    """Mood of the built-in demonstrations."""
    epochs: int = 2
    """Passes over the demonstrations."""

    def __post_init__(self):
        super().__post_init__()
        check_range("num_demos", self.num_demos, 1, integer=True)


def load_demonstrations(path: str | Path) -> list[dict[str, str]]:
    """``{"prompt", "completion"}`` records of a JSONL file; a bad line is reported as ``file:line``."""
    records = []
    for where, record in read_jsonl(path, "demonstrations file"):
        if not (isinstance(record, dict) and isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str)):
            raise ValueError(f"{where}: expected {{\"prompt\": str, \"completion\": str}}, got {json.dumps(record)[:80]!r}")
        records.append({"prompt": record["prompt"], "completion": record["completion"]})
    if not records:
        raise ValueError(f"{path} has no records")
    return records


def train_sft(config: SFTConfig, run_dir: str | Path, resume: bool = True, progress: bool = True) -> Path:
    """Fine-tune; returns the directory of the fine-tuned model (``run_dir/policy``, loadable by path)."""
    from textenv import world
    from textenv.world.demos import sample_demonstrations

    run, state = start_run(config, run_dir, resume)
    if finished(run, state):
        return run.path / "policy"
    records = load_demonstrations(config.data) if config.data else sample_demonstrations(config.num_demos, config.seed, config.mood)
    policy = load_policy(run.policy_path() if state else str(config.model or world.lm_path()), config.lora,
                         checkpoint=state is not None, seed=config.seed,
                         gradient_checkpointing=config.gradient_checkpointing)

    def batch_loss(rows):
        batch = sequence_batch(policy.tokenizer, [records[j]["prompt"] for j in rows],
                               [records[j]["completion"] for j in rows], add_eos=True, max_length=config.max_length)
        return -masked_mean(policy.evaluate(batch, with_values=False).logprob, batch["mask"]), {}

    return supervised_loop(run, policy, len(records), config, state, batch_loss, "SFT", progress)
