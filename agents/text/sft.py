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

import torch

from agents.policies.lm import LMPolicy, sequence_batch
from agents.core.losses import masked_mean
from agents.core.run import Run, check_range
from agents.text.supervised import finished, supervised_loop
from textenv.jsonl import read_jsonl


@dataclass
class SFTConfig:
    """Supervised fine-tuning."""

    model: str | None = None
    """Name or path of the causal LM to fine-tune; None: the built-in world's base LM."""
    data: str | None = None
    """JSONL of ``{"prompt", "completion"}`` records; None: ``num_demos`` built-in demonstrations."""
    num_demos: int = 2000
    """Built-in demonstrations to draw when ``data`` is None."""
    mood: str = "positive"
    """Mood of the built-in demonstrations."""
    epochs: int = 2
    """Passes over the data."""
    batch_size: int = 32
    """Demonstrations per step."""
    lr: float = 3e-4
    """AdamW learning rate (linear decay to 0)."""
    max_length: int = 96
    """Longest prompt + completion in tokens (completions are cut to fit)."""
    seed: int = 0
    """Seeds data order (and demonstrations)."""
    threads: int = 1
    """torch threads."""
    checkpoint_every: int = 100
    """Steps between checkpoints."""

    def __post_init__(self):
        for name in ("num_demos", "epochs", "batch_size", "max_length", "threads", "checkpoint_every"):
            check_range(name, getattr(self, name), 1, integer=True)
        check_range("lr", self.lr, 0, low_open=True)
        if self.data is not None and not Path(self.data).is_file():
            raise FileNotFoundError(f"data={self.data!r} is not a file (expected JSONL of prompt/completion records)")


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

    torch.set_num_threads(config.threads)
    run = Run(run_dir, config, ignore=("threads", "checkpoint_every"))
    state = run.start(resume)
    if finished(run, state):
        return run.path / "policy"
    records = load_demonstrations(config.data) if config.data else sample_demonstrations(config.num_demos, config.seed, config.mood)
    policy = LMPolicy.from_pretrained(run.policy_path() if state else str(config.model or world.lm_path()))

    def batch_loss(rows):
        batch = sequence_batch(policy.tokenizer, [records[j]["prompt"] for j in rows],
                               [records[j]["completion"] for j in rows], add_eos=True, max_length=config.max_length)
        return -masked_mean(policy.evaluate(batch, with_values=False).logprob, batch["mask"]), {}

    return supervised_loop(run, policy, len(records), config.batch_size, config.epochs, config.lr, config.seed, state,
                           batch_loss, "SFT", config.checkpoint_every, progress)
