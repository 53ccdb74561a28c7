"""What SFT and DPO share: their optimisation settings (:class:`SupervisedConfig`) and the loop (seeded epochs
of minibatches, AdamW with linear decay, atomic checkpoints, resume)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from agents.core.run import Run, check_range, set_rng_state
from agents.policies.lm import LoRASettings


@dataclass
class SupervisedConfig(LoRASettings):
    """The fields SFT and DPO share (their configs add the model and the data), the LoRA fields of
    :class:`agents.policies.lm.LoRASettings` included (``lora_r > 0``: only the adapter trains, and DPO's reference,
    unless ``ref_model`` is given, is the policy's base with the adapter off)."""

    data_kind: ClassVar[str] = "JSONL"
    """What ``data`` must hold (for the error when it is not a file)."""
    epochs: int = 1
    """Passes over the data."""
    batch_size: int = 32
    """Examples per step (demonstrations, or preference pairs)."""
    lr: float = 3e-4
    """AdamW learning rate (linear decay to 0)."""
    max_length: int = 96
    """Longest prompt + completion in tokens (completions are cut to fit)."""
    seed: int = 0
    """Seeds the data drawn (demonstrations, the pair subset), its order, and a LoRA adapter's initialisation."""
    threads: int = 1
    """torch threads."""
    checkpoint_every: int = 100
    """Steps between checkpoints."""

    def __post_init__(self):
        for name in ("epochs", "batch_size", "max_length", "threads", "checkpoint_every"):
            check_range(name, getattr(self, name), 1, integer=True)
        check_range("lr", self.lr, 0, low_open=True)
        self.check_lora()
        data = getattr(self, "data", None)
        if data is not None and not Path(data).is_file():
            raise FileNotFoundError(f"data={data!r} is not a file (expected {self.data_kind})")


def start_run(config: SupervisedConfig, run_dir: str | Path, resume: bool) -> tuple[Run, dict | None]:
    """Set the threads and open the run (resume as :meth:`agents.core.run.Run.start` does)."""
    torch.set_num_threads(config.threads)
    run = Run(run_dir, config, ignore=("threads", "checkpoint_every"))
    return run, run.start(resume)


def supervised_loop(run: Run, policy, n_items: int, config: SupervisedConfig, state: dict | None,
                    batch_loss: Callable[[list[int]], tuple[torch.Tensor, dict[str, float]]], desc: str,
                    progress: bool = True) -> Path:
    """Minimise ``batch_loss(rows)`` over ``config.epochs`` seeded passes of ``n_items`` in batches; resumes from
    ``state`` (what :meth:`agents.core.run.Run.load` returned); saves the policy in ``run.path / "policy"``.

    The caller loads its data and ``policy`` first: only here does a ``start(resume=False)`` run remove the old
    checkpoint (:meth:`agents.core.run.Run.begin`)."""
    from tqdm.auto import tqdm

    batch_size, epochs, lr, seed = config.batch_size, config.epochs, config.lr, config.seed
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    steps_per_epoch = -(-n_items // batch_size)
    total = steps_per_epoch * epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / total)
    step, elapsed = 0, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, elapsed = state["step"], state["elapsed"]
        set_rng_state(state["rng"])  # again: loading the policy (a LoRA adapter's init) may have drawn from it
    run.begin()
    policy.train(config.lora_dropout > 0)  # LoRA's dropout acts in train mode (the model's own dropout is off)
    bar = tqdm(total=total, initial=step, desc=desc, unit="step", disable=not progress)
    try:
        while step < total:
            epoch, k = divmod(step, steps_per_epoch)
            order = np.random.default_rng([seed, epoch]).permutation(n_items)
            rows = order[k * batch_size : (k + 1) * batch_size].tolist()
            tick = time.perf_counter()
            loss, metrics = batch_loss(rows)
            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc} loss is {float(loss)} at step {step + 1}; lower lr (now {lr})")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            elapsed += time.perf_counter() - tick
            run.log({"iteration": step, "loss": loss.item(), **metrics, "lr": scheduler.get_last_lr()[0], "time_s": elapsed})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % config.checkpoint_every == 0 or step == total:
                run.save(policy, {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                  "step": step, "total": total, "elapsed": elapsed})
    finally:
        policy.eval()
        bar.close()
        run.close()
    return policy.save_pretrained(run.path / "policy")


def finished(run: Run, state: dict | None) -> bool:
    """True when ``state`` is the checkpoint of a completed run whose policy was saved (a model, or a LoRA adapter)."""
    saved = run.path / "policy"
    return (state is not None and state["step"] == state["total"]
            and ((saved / "config.json").exists() or (saved / "adapter_config.json").exists()))
