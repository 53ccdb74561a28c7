"""Bradley-Terry reward model training: the loss, its config, and a trainer that checkpoints and resumes.

The model is a Hugging Face ``AutoModelForSequenceClassification`` with ``num_labels=1`` initialised from a
causal LM's trunk (``base_model``: the built-in world's LM is ``textenv.world.lm_path()``; this module never imports
the world, which builds its proxy reward model with it) and scored at the last non-pad token of ``prompt + completion``,
so the result is a standard checkpoint that TRL/OpenRLHF users load and that ``reward_model=PATH`` accepts.

Loss (Bradley & Terry 1952; InstructGPT, Ouyang et al. 2022), over the ordered pairs of a batch::

    L = Σ_pairs w · −log σ(r_chosen − r_rejected − margin)  +  center_coef · Σ_pairs w · (r_chosen + r_rejected)²

with ``w`` = 1 / (pairs of its record) / (records in the batch), so every prompt weighs the same whatever its
K (a K-wise ranking contributes its C(K, 2) pairs as one group, each completion scored once). The second term
is the reward-centering penalty of Eisenstein et al. (2023) (TRL's ``center_rewards_coefficient``), which
pins the otherwise free offset of the scores near zero.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from textenv.checkpoint import CHECKPOINT, WAY_OUT, Checkpoints, atomic_write, recover, remove, write_csv
from textenv.lm import pad_batch, save_pretrained
from textenv.rm.data import PreferenceRecord, load_preferences

FORMAT = 2
"""2: ``trainer_state.pt`` loads with ``weights_only=True`` (1, earlier textenv: read with pickle, refused now)."""
_WAY_OUT = WAY_OUT


@dataclass
class BTLoss:
    """Terms of the Bradley-Terry loss of one batch (all scalars)."""

    loss: torch.Tensor
    """The total that is minimised: ``bt + center_coef · center``."""
    bt: torch.Tensor
    """Weighted mean of ``−log σ(r_c − r_r − margin)``."""
    center: torch.Tensor
    """Weighted mean of ``(r_c + r_r)²``."""
    accuracy: torch.Tensor
    """Weighted share of pairs with ``r_c > r_r``."""


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> BTLoss:
    """Bradley-Terry loss of paired scores ``(P,)``; ``weights`` (P,) default uniform, normalised to sum to 1.

    >>> out = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))
    >>> round(out.bt.item(), 4)   # (−log σ(2) − log σ(−1)) / 2 = (0.1269 + 1.3133) / 2
    0.7201
    """
    if chosen.shape != rejected.shape or chosen.dim() != 1:
        raise ValueError(f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} must both be (P,)")
    w = torch.ones_like(chosen) if weights is None else weights
    w = w / w.sum()
    diff = chosen - rejected - (0.0 if margin is None else margin)  # (P,)
    bt = -(w * F.logsigmoid(diff)).sum()
    center = (w * (chosen + rejected) ** 2).sum()
    accuracy = (w * (chosen > rejected).float()).sum()
    return BTLoss(loss=bt + center_coef * center, bt=bt, center=center, accuracy=accuracy)


@dataclass
class RewardModelConfig:
    """Configuration of :func:`train_reward_model`. Every field is validated on creation."""

    train_file: str
    """Preference JSONL to train on (pairs and/or K-wise rankings; see :mod:`textenv.rm.data`)."""
    eval_file: str | None = None
    """Held-out preference JSONL: evaluated at the end, and its scores give the normalisation statistics."""
    output_dir: str = "runs/reward_model"
    """Where the final model (``save_pretrained``), ``metrics.json``, ``log.csv``, ``report.png`` and the checkpoint go."""
    base_model: str | None = None
    """Causal LM (path or name) whose trunk initialises the reward model; required to train (the built-in base LM:
    ``str(textenv.world.lm_path())``, the default of ``textenv train-rm``). None is kept for configs that only
    describe a run (the field is resolved by the caller, never here)."""
    epochs: int = 2
    """Passes over the training records."""
    batch_size: int = 16
    """Records (prompts) per optimizer step; a K-wise record brings its K completions."""
    lr: float = 5e-4
    """Peak AdamW learning rate (linear warm-up, then cosine decay to 10%)."""
    warmup_ratio: float = 0.05
    """Share of the steps spent warming the learning rate up."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm."""
    center_coef: float = 0.01
    """Weight of the reward-centering penalty ``(r_c + r_r)²``; 0 disables it."""
    max_length: int | None = None
    """Truncate ``prompt + completion`` to this many tokens (default: the model's context length)."""
    seed: int = 0
    """Seed of the score head's initialisation and of the data order."""
    checkpoint_every: int = 100
    """Write a resumable checkpoint every this many steps (and at the end)."""
    threads: int | None = None
    """torch threads (None: leave as is). Results depend on the count, so fix it for reproducible runs."""

    def __post_init__(self):
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"RewardModelConfig.{name}={getattr(self, name)!r} must be an integer >= 1")
        if not self.lr > 0:
            raise ValueError(f"RewardModelConfig.lr={self.lr} must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"RewardModelConfig.warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if self.weight_decay < 0 or self.center_coef < 0 or not self.max_grad_norm > 0:
            raise ValueError(
                f"RewardModelConfig needs weight_decay >= 0, center_coef >= 0 and max_grad_norm > 0; got "
                f"{self.weight_decay}, {self.center_coef}, {self.max_grad_norm}"
            )
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"RewardModelConfig.max_length={self.max_length} must be >= 2 or None")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"RewardModelConfig.threads={self.threads} must be >= 1 or None")

    def resumable_fields(self) -> dict:
        """The fields a resumed run must share with the interrupted one (all but where output goes and threads)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("output_dir", "threads", "checkpoint_every")}


def _load_model(base: str, seed: int):
    """Sequence-classification model with a fresh one-score head on the causal LM's trunk; dropout off."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from textenv.lm import load_pretrained, load_tokenizer
    from textenv.rewards.hf import check_tokenizer_fits

    tokenizer = load_tokenizer(base)
    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "Some weights ... newly initialized: ['score.weight']" is the point here
    try:
        model = load_pretrained(AutoModelForSequenceClassification, base, "reward model base", num_labels=1)
    finally:
        hf_logging.set_verbosity(verbosity)
    check_tokenizer_fits(tokenizer, model.config, base)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.append_eos = False  # trained on text without EOS: HFRewardModel scores it the same way
    for module in model.modules():  # dropout off, as in TRL's RewardConfig(disable_dropout=True) and OpenRLHF
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model, tokenizer


def _encode(records: list[PreferenceRecord], tokenizer, max_length: int) -> list[list[list[int]]]:
    """Token ids of ``prompt + completion`` per record and completion, truncated to ``max_length``."""
    texts = [r.prompt + c for r in records for c in r.completions]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    out, i = [], 0
    for r in records:
        out.append([row[:max_length] for row in ids[i : i + r.k]])
        i += r.k
    return out


def _batch_loss(model, records, encoded, rows, pad_id, center_coef) -> BTLoss:
    ids, mask = pad_batch([seq for j in rows for seq in encoded[j]], pad_id, "right")  # (N, T)
    scores = model(input_ids=ids, attention_mask=mask).logits[:, 0]  # (N,)
    chosen, rejected, margins, weights = [], [], [], []
    offset = 0
    for j in rows:
        r = records[j]
        for w, l in r.pairs:
            chosen.append(offset + w)
            rejected.append(offset + l)
            margins.append(r.margin)
            weights.append(1.0 / len(r.pairs))
        offset += r.k
    return bradley_terry_loss(
        scores[chosen], scores[rejected], torch.tensor(margins), torch.tensor(weights), center_coef
    )


def _order(n: int, epoch: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def _checkpoints(out: Path, config: RewardModelConfig) -> Checkpoints:
    return Checkpoints(out, config.resumable_fields(), FORMAT)


def _save_checkpoint(out: Path, model, tokenizer, optimizer, scheduler, step: int, log: list[dict], config) -> None:
    """Write ``out/checkpoint`` atomically (:meth:`textenv.checkpoint.Checkpoints.save`). Weights or optimizer
    moments holding NaN/inf raise ``FloatingPointError`` and write nothing."""

    def write(folder: Path) -> None:
        save_pretrained(model, folder)
        tokenizer.save_pretrained(folder)

    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
             "torch_rng": torch.get_rng_state(), "log": log}
    tensors = {"reward model weight": model.state_dict(), "optimizer state": optimizer.state_dict()["state"]}
    _checkpoints(out, config).save(write, state, f"step {step}", tensors, FloatingPointError, config.lr, {"step": step})


def train_reward_model(config: RewardModelConfig, resume: bool = True, progress: bool = True, gold=None) -> Path:
    """Train, evaluate and save a reward model; returns ``config.output_dir``.

    With ``resume=True`` an interrupted run continues from ``output_dir/checkpoint`` (the same config is
    required; a save interrupted between its renames is recovered) and ends with the same weights as an
    uninterrupted one; a finished run (``metrics.json`` present) is returned as is. The checkpoint's trainer
    state is read as data (``weights_only=True``): a legacy or crafted one is refused. With ``resume=False`` an
    old checkpoint is removed only once the data and the base model have loaded. ``gold`` (a reward callable)
    adds gold metrics to the evaluation.
    """
    from tqdm.auto import tqdm

    from textenv.lm import context_length

    if config.base_model is None:
        raise ValueError("RewardModelConfig.base_model is None: name the causal LM whose trunk starts the reward model "
                         "(the built-in one: base_model=str(textenv.world.lm_path()))")
    out = Path(config.output_dir)
    checkpoints = _checkpoints(out, config)
    if resume and recover(out) is None and (out / "metrics.json").exists() and not (out / CHECKPOINT).exists():
        return out
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        records = load_preferences(config.train_file)
        eval_records = load_preferences(config.eval_file) if config.eval_file else None
        state = checkpoints.load() if resume else None
        model, tokenizer = _load_model(str(checkpoints.dir) if state is not None else config.base_model, config.seed)
        max_length = config.max_length or context_length(model) or 512
        encoded = _encode(records, tokenizer, max_length)
        steps_per_epoch = math.ceil(len(records) / config.batch_size)
        total = steps_per_epoch * config.epochs
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr
        )
        warmup = max(1, int(config.warmup_ratio * total))
        scheduler = torch.optim.lr_scheduler.SequentialLR(
            optimizer,
            [
                torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup),
                torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=0.1 * config.lr),
            ],
            milestones=[warmup],
        )
        step, log = 0, []
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            step, log = state["step"], state["log"]
        else:  # data and base model loaded: only now is an old checkpoint removed (a failed start keeps it)
            checkpoints.clear()
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter() - (log[-1]["seconds"] if log else 0.0)
        model.train()
        bar = tqdm(total=total, initial=step, desc="training reward model", unit="step", disable=not progress, mininterval=1.0)
        while step < total:
            epoch, within = divmod(step, steps_per_epoch)
            rows = _order(len(records), epoch, config.seed)[within * config.batch_size : (within + 1) * config.batch_size]
            terms = _batch_loss(model, records, encoded, rows.tolist(), tokenizer.pad_token_id, config.center_coef)
            if not torch.isfinite(terms.loss):
                raise FloatingPointError(f"reward model loss is {terms.loss.item()} at step {step}; lower lr={config.lr}")
            optimizer.zero_grad(set_to_none=True)
            terms.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            log.append({"step": step, "loss": terms.loss.item(), "bt": terms.bt.item(), "center": terms.center.item(),
                        "accuracy": terms.accuracy.item(), "lr": scheduler.get_last_lr()[0],
                        "seconds": round(time.perf_counter() - started, 3)})
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{np.mean([r['bt'] for r in log[-10:]]):.3f}", acc=f"{np.mean([r['accuracy'] for r in log[-10:]]):.2f}")
            if step % config.checkpoint_every == 0 or step == total:
                _save_checkpoint(out, model, tokenizer, optimizer, scheduler, step, log, config)
        bar.close()
        train_seconds = log[-1]["seconds"] if log else 0.0
        model.eval()
        _finish(out, model, tokenizer, config, records, eval_records, log, train_seconds, max_length, gold)
    finally:
        torch.set_num_threads(threads)
    return out


def _finish(out, model, tokenizer, config, records, eval_records, log, train_seconds, max_length, gold) -> None:
    """Evaluate, store normalisation statistics in the config, save the final model, the log and the report."""
    from textenv import __version__
    from textenv.rewards.hf import NORMALIZATION_KEY, HFRewardModel
    from textenv.rm.evaluate import evaluate_reward_model, plot_report, public_metrics

    scorer = HFRewardModel.from_loaded(model, tokenizer, str(out), max_length=max_length, normalize=False)
    held_out = eval_records if eval_records is not None else records
    metrics = evaluate_reward_model(scorer, held_out, tokenizer, gold=gold)
    model.config.update({NORMALIZATION_KEY: {
        "mean": metrics["score_mean"], "std": max(metrics["score_std"], 1e-6), "count": metrics["completions"],
        "data": "held-out preference completions" if eval_records is not None else "training completions",
    }})
    plot_report(metrics, out / "report.png", [row["bt"] for row in log], title=f"reward model {out.name}")
    write_csv(out / "log.csv", log)
    summary = {
        "held_out": "eval_file" if eval_records is not None else "train_file (no eval_file given)",
        "train_records": len(records),
        "train_pairs": sum(len(r.pairs) for r in records),
        "steps": len(log),
        "train_seconds": round(train_seconds, 1),
        "threads": torch.get_num_threads(),
        "final_train_loss": round(float(np.mean([r["bt"] for r in log[-20:]])), 4),
        **public_metrics(metrics),
        "config": dataclasses.asdict(config),
        "version": __version__,
    }
    staging = out / "final.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    save_pretrained(model, staging)
    tokenizer.save_pretrained(staging)
    # Move the files into place with config.json last and metrics.json after it: until then the folder holds no
    # loadable model and the checkpoint is still there, so a crash here loses nothing.
    for file in sorted(staging.iterdir(), key=lambda f: f.name == "config.json"):
        os.replace(file, out / file.name)
    staging.rmdir()
    with atomic_write(out / "metrics.json") as f:
        f.write(json.dumps(summary, indent=2) + "\n")
    remove(out / CHECKPOINT)
