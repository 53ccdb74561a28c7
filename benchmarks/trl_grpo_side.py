"""TRL half of the GRPO side-by-side benchmark: TRL's ``GRPOTrainer`` on the built-in world.

Same model (the built-in tiny GPT-2), same prompts (train split), same reward (the learned proxy reward model,
normalised as the env normalises it), same batch (``prompts_per_step`` prompts × ``group_size`` completions per
optimizer step, every completion freshly sampled, one optimizer step per generation batch), and the gold sentiment
of every step's completions logged beside the proxy (a second reward function with weight 0: logged, not trained
on). Per optimizer step it records the wall time since the start of training (model, reward model and trainer
construction excluded), mean proxy and gold reward, mean completion length and the other TRL metrics.

Run it in a separate venv with TRL (the dev venv has none)::

    python3 -m venv /work/venv-trl && /work/venv-trl/bin/pip install torch==2.13.0
    /work/venv-trl/bin/pip install "transformers==5.23.0" trl && /work/venv-trl/bin/pip install -e .
    OMP_NUM_THREADS=1 /work/venv-trl/bin/python benchmarks/trl_grpo_side.py --steps 30 --out-dir runs/trl_grpo

How TRL (checked on trl 1.16.0) counts batches: ``per_device_train_batch_size`` counts *completions*, not
prompts; ``generation_batch_size = per_device_train_batch_size × processes × steps_per_generation`` completions
are sampled at once (``generation_batch_size / num_generations`` distinct prompts) and then consumed in
``steps_per_generation`` micro-batches; ``steps_per_generation`` defaults to ``gradient_accumulation_steps``.
So ``per_device_train_batch_size = P·G``, ``gradient_accumulation_steps = 1``, ``steps_per_generation = 1`` on
one process gives exactly one optimizer step per generation batch of ``P·G`` fresh completions (``P`` prompts,
``G`` each), and with ``num_iterations = 1`` the update is on-policy (TRL then skips the old-log-prob forward).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

PROXY_NAME = "proxy"
GOLD_NAME = "gold"


def _metric(logs: dict, *keys: str):
    for key in keys:
        if key in logs and logs[key] is not None:
            return float(logs[key])
    return None


CPU_SETTINGS = dict(
    lr_scheduler_type="constant",  # Trainer default "linear" decays to 0 over max_steps
    warmup_steps=0,
    weight_decay=0.0,
    max_grad_norm=1.0,
    use_cpu=True,
    bf16=False,
    fp16=False,
    gradient_checkpointing=False,  # TRL default True trades time for memory; ours does not checkpoint by default
    disable_dropout=True,  # TRL samples in train mode: with the LM's dropout it would sample from another policy
    use_vllm=False,
    report_to="none",
    logging_steps=1,
    save_strategy="no",
    eval_strategy="no",
    disable_tqdm=True,
    dataloader_num_workers=0,
    log_completions=False,
)
"""``GRPOConfig`` settings both TRL benchmarks share: CPU, fp32, constant learning rate, no extras, no output."""


def run_trl_grpo(
    prompts_per_step: int = 16,
    group_size: int = 4,
    steps: int = 30,
    lr: float = 3e-4,
    max_new_tokens: int = 24,
    seed: int = 0,
    temperature: float = 1.0,
    threads: int = 1,
    out_dir: str = "runs/trl_grpo",
) -> list[dict]:
    """Train TRL's GRPOTrainer on the built-in world; returns one record per optimizer step.

    Each record: ``step`` (1-based optimizer step; its completions were sampled by the policy after ``step − 1``
    updates), ``time_s`` (wall seconds since training began, at the end of this step), ``proxy`` / ``gold``
    (mean proxy-RM and gold-sentiment reward of this step's completions), ``proxy_std``, ``gold_std``,
    ``completion_length`` (mean tokens), ``kl`` (None: ``beta=0``, TRL logs no KL), and TRL's ``loss``,
    ``grad_norm``, ``entropy``, ``clipped_ratio``, ``frac_reward_zero_std``, ``learning_rate``; ``num_completions``
    and ``num_prompts`` (distinct) of the step's batch, and three sample completions.
    Also written to ``{out_dir}/trl_grpo.json`` with the configuration.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(threads)

    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from textenv import world
    from textenv.rewards import HFRewardModel
    from textenv.task import load_prompts

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    lm_path = str(world.lm_path())
    tokenizer = AutoTokenizer.from_pretrained(lm_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(lm_path, dtype=torch.float32)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id

    prompts = load_prompts(world.prompts_path(), split="train")
    dataset = Dataset.from_dict({"prompt": prompts})

    rm = HFRewardModel(world.proxy_rm_path())  # applies the checkpoint's stored normalisation, like the env

    def proxy(prompts, completions, **kwargs):
        return [float(x) for x in rm(prompts, completions)]

    last_batch: dict = {}  # what the reward functions saw in the latest generation batch (checked and logged)

    def gold(prompts, completions, **kwargs):
        scores = [float(x) for x in world.gold_sentiment(prompts, completions)]
        last_batch.update(
            num_completions=len(completions),
            num_prompts=len(set(prompts)),
            samples=[{"prompt": p, "completion": c, "gold": g} for p, c, g in list(zip(prompts, completions, scores))[:3]],
        )
        return scores

    batch = prompts_per_step * group_size
    config = GRPOConfig(
        output_dir=str(out / "trainer"),
        # batch: one optimizer step per generation batch of P*G fresh completions (see module docstring)
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=group_size,
        num_iterations=1,
        max_steps=steps,
        # sampling
        max_completion_length=max_new_tokens,
        temperature=temperature,
        top_p=1.0,
        top_k=0,
        # objective
        beta=0.0,  # no KL penalty, no reference model (TRL's default too)
        loss_type="grpo",  # TRL default is "dapo" (token-mean over the batch); "grpo" = per-sequence token mean
        scale_rewards="group",  # TRL default: (r - group mean) / group std
        epsilon=0.2,  # TRL default clip; inactive anyway (on-policy, ratio = 1)
        reward_weights=[1.0, 0.0],  # train on proxy; gold only logged
        learning_rate=lr,  # TRL default 1e-6 is far too small for this 2-layer model
        seed=seed,
        data_seed=seed,
        **CPU_SETTINGS,
    )

    records: list[dict] = []

    class Recorder(TrainerCallback):
        def __init__(self):
            self.t0 = None
            self.step_time: dict[int, float] = {}

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_time[state.global_step] = time.perf_counter() - self.t0

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if f"rewards/{PROXY_NAME}/mean" not in logs:
                return  # the final train summary
            step = state.global_step
            records.append({
                "step": step,
                "time_s": self.step_time.get(step, time.perf_counter() - self.t0),
                "proxy": _metric(logs, f"rewards/{PROXY_NAME}/mean"),
                "gold": _metric(logs, f"rewards/{GOLD_NAME}/mean"),
                "proxy_std": _metric(logs, f"rewards/{PROXY_NAME}/std"),
                "gold_std": _metric(logs, f"rewards/{GOLD_NAME}/std"),
                "completion_length": _metric(logs, "completions/mean_length"),
                "clipped_ratio": _metric(logs, "completions/clipped_ratio"),
                "kl": _metric(logs, "kl"),
                "entropy": _metric(logs, "entropy"),
                "loss": _metric(logs, "loss"),
                "grad_norm": _metric(logs, "grad_norm"),
                "frac_reward_zero_std": _metric(logs, "frac_reward_zero_std"),
                "learning_rate": _metric(logs, "learning_rate"),
                "num_completions": last_batch.get("num_completions"),
                "num_prompts": last_batch.get("num_prompts"),
                "samples": last_batch.get("samples"),
            })

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[proxy, gold],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Recorder()],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # with disable_tqdm, Trainer prints every log dict; we print a table
    assert not getattr(trainer.model, "is_gradient_checkpointing", False)
    trainer.train()

    result = {
        "trl_version": trl.__version__,
        "torch_version": torch.__version__,
        "config": {
            "prompts_per_step": prompts_per_step, "group_size": group_size, "steps": steps, "lr": lr,
            "max_new_tokens": max_new_tokens, "seed": seed, "temperature": temperature, "threads": threads,
            "beta": 0.0, "loss_type": "grpo", "scale_rewards": "group", "lr_scheduler": "constant",
            "disable_dropout": True, "num_iterations": 1,
        },
        "records": records,
    }
    (out / "trl_grpo.json").write_text(json.dumps(result, indent=1))
    return records


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts-per-step", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", default="runs/trl_grpo")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    records = run_trl_grpo(
        prompts_per_step=args.prompts_per_step, group_size=args.group_size, steps=args.steps, lr=args.lr,
        max_new_tokens=args.max_new_tokens, seed=args.seed, temperature=args.temperature, threads=args.threads,
        out_dir=args.out_dir,
    )
    print(f"{'step':>4} {'time_s':>7} {'proxy':>7} {'gold':>7} {'len':>5} {'entropy':>7}")
    def fmt(v, w=7):
        return f"{v:{w}.3f}" if v is not None else f"{'-':>{w}}"

    for r in records:
        print(f"{r['step']:4d} {r['time_s']:7.1f} {fmt(r['proxy'])} {fmt(r['gold'])} {fmt(r['completion_length'], 5)} "
              f"{fmt(r['entropy'])}")
    if records:
        print(f"seconds/step: {records[-1]['time_s'] / len(records):.2f}; written to {Path(args.out_dir) / 'trl_grpo.json'}")


if __name__ == "__main__":
    main()
