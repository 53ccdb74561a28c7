"""GRPO + LoRA on a real LM, side by side with TRL: SmolLM2-135M-Instruct learns to answer sums with the number only.

**Task.** ``"What is 3 + 5? Reply with the number only."`` for single-digit pairs ``a + b``; the gold reward
(:func:`addition_reward`) is 1 when the first number in the completion is ``a + b``, else 0. The 100 pairs are
split once (seeded) into 60 training and 40 held-out pairs, so held-out accuracy measures what transfers. Chosen
because the model is clearly below the ceiling and not at zero: it usually knows the sum but answers
``"2 + 3 = 5"`` or ``"The answer is ..."`` (first number wrong), greedy accuracy ≈ 0.2 and sampled (T = 1) ≈ 0.1
on held-out pairs, so every group of 8 samples has a fair chance to hold a correct answer and GRPO has a signal.

**The two sides** (each in its own subprocess, so peak memory is per side; sides alternate between seeds):

* ours: ``agents.train_pg(PGConfig(estimator="grpo", lora_r=r, ...))`` on ``textenv/Sentiment-v1`` with the
  task's prompts and reward passed through ``env_kwargs`` (the env renders prompts with the chat template and
  ends episodes on ``<|im_end|>``, EOS id 2);
* TRL: ``trl.GRPOTrainer`` with ``peft.LoraConfig`` (:mod:`grpo_lora_real_trl`), conversational prompts (TRL
  applies the same chat template), the same reward.

Same model, LoRA (r, α, all linear layers but the head, no dropout), prompts, reward, group size, prompts per
step, completion cap, steps, learning rate (AdamW, constant, no weight decay, clip-norm 1), temperature 1 (no
top-k/top-p), β = 0 (no reference model), one optimizer step per batch on that batch (ratio 1), group-normalised
advantages, loss averaged over all completion tokens of the batch (TRL's ``loss_type="dapo"``). Held-out accuracy
is measured after training by one function for every model (base, ours, TRL): ``model.generate`` on the held-out
prompts, greedy and sampled (T = 1, ``--eval-samples`` per prompt), scored by :func:`addition_reward`.

Differences that remain: we sample token by token through the env (KV cache; the same distribution), TRL with
``model.generate``; our advantage is ``(r − mean) / (std + 1e-6)``, TRL's ``/ (std + 1e-4)``; the prompts of a step are drawn with
replacement (ours) or from a shuffled pass over the data (TRL).

Reproduce (one torch thread; writes ``benchmarks/results/grpo_lora_real.json`` and ``.md``)::

    OMP_NUM_THREADS=1 python benchmarks/grpo_lora_real.py --steps 30 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODEL = "smollm2-135m-instruct"
TEMPLATE = "What is {a} + {b}? Reply with the number only."
_QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?")
_NUMBER = re.compile(r"-?\d+")


# ------------------------------------------------------------------------------------------------ the task
def addition_prompts(split: str, held_out: int = 40, seed: int = 0) -> list[str]:
    """The prompts of ``split`` (``"train"`` or ``"eval"``): the 100 single-digit pairs, shuffled once with
    ``seed``; the first ``held_out`` pairs are the eval split, the rest the train split (disjoint).

    >>> train, held = addition_prompts("train"), addition_prompts("eval")
    >>> len(train), len(held), len(set(train) & set(held))
    (60, 40, 0)
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split={split!r}; expected 'train' or 'eval'")
    pairs = [(a, b) for a in range(10) for b in range(10)]
    order = np.random.default_rng(seed).permutation(len(pairs))
    picked = order[:held_out] if split == "eval" else order[held_out:]
    return [TEMPLATE.format(a=pairs[i][0], b=pairs[i][1]) for i in picked]


def addition_reward(prompts: list[str], completions: list[str]) -> list[float]:
    """1.0 where the first integer in the completion is the prompt's sum, else 0.0.

    >>> addition_reward(["What is 3 + 5? Reply with the number only."] * 4, ["8", " 8.", "3 + 5 = 8", "eight"])
    [1.0, 1.0, 0.0, 0.0]
    """
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts and {len(completions)} completions; they must pair up")
    scores = []
    for prompt, completion in zip(prompts, completions):
        question = _QUESTION.search(prompt)
        if question is None:
            raise ValueError(f"prompt {prompt!r} is not an addition question ({TEMPLATE!r})")
        answer = _NUMBER.search(completion)
        scores.append(float(answer is not None and int(answer.group()) == int(question[1]) + int(question[2])))
    return scores


def model_path() -> str:
    from textenv import models

    return str(models.model_path(MODEL))


def rss_mb() -> float:
    """This process's resident memory now."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux: ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ our side
def run_ours(steps, prompts_per_step, group_size, max_new_tokens, lr, lora_r, lora_alpha, seed, threads,
             out_dir) -> dict:
    """Train ours in this process; returns the per-step records, the training time and the adapter folder."""
    from agents import PGConfig, train_pg

    imported_rss_mb = rss_mb()
    config = PGConfig(estimator="grpo", model=model_path(), env_kwargs={
                          "reward_model": addition_reward, "gold_reward": None, "prompts": addition_prompts("train")},
                      lora_r=lora_r, lora_alpha=lora_alpha, lora_target_modules=("all-linear",),
                      group_size=group_size, prompts_per_iter=prompts_per_step, max_new_tokens=max_new_tokens,
                      iterations=steps, lr=lr, kl_coef=0.0, temperature=1.0, epochs=1, minibatch_rows=0,
                      max_grad_norm=1.0, seed=seed, threads=threads, checkpoint_every=10**6)
    result = train_pg(config, out_dir, resume=False, progress=False, callback=lambda row, _: print(
        f"ours step {row['iteration']}: {row['time_s']:.1f} s, reward {row['proxy']:.3f}, length {row['length']:.1f}",
        flush=True))
    records = [{"step": r["iteration"], "time_s": r["time_s"], "reward": r["proxy"], "length": r["length"]}
               for r in result.rows]
    return {"records": records, "train_s": records[-1]["time_s"], "adapter": str(Path(out_dir) / "policy"),
            "imported_rss_mb": imported_rss_mb,
            "trainable_params": sum(p.numel() for p in result.policy.parameters() if p.requires_grad)}


def child(args) -> None:
    """One side's training in this (fresh) process; writes ``args.json``."""
    start = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    common = dict(steps=args.steps, prompts_per_step=args.prompts_per_step, group_size=args.group_size,
                  max_new_tokens=args.max_new_tokens, lr=args.lr, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                  seed=args.seed, threads=args.threads, out_dir=args.run_dir)
    if args.side == "ours":
        out = run_ours(**common)
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from grpo_lora_real_trl import run_trl

        out = run_trl(**common)
    out.update(side=args.side, seed=args.seed, peak_rss_mb=peak_rss_mb(), process_s=time.perf_counter() - start)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate(adapter: str | None, prompts: list[str], max_new_tokens: int, samples: int, seed: int = 0,
             batch_size: int = 64) -> dict:
    """Held-out accuracy of the base model (``adapter=None``) or base + a LoRA adapter folder: greedy, and sampled
    at temperature 1 (``samples`` completions per prompt), with the chat template and ``model.generate``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
             for p in prompts]

    def complete(rows: list[str], **kwargs) -> list[str]:
        out = []
        for i in range(0, len(rows), batch_size):
            enc = tokenizer(rows[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **kwargs)
            out += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return out

    greedy = complete(texts, do_sample=False)
    torch.manual_seed(seed)
    sampled = complete([t for t in texts for _ in range(samples)], do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
    greedy_scores = addition_reward(prompts, greedy)
    sampled_scores = addition_reward([p for p in prompts for _ in range(samples)], sampled)
    return {"greedy": float(np.mean(greedy_scores)), "sampled": float(np.mean(sampled_scores)),
            "sampled_sem": float(np.std(sampled_scores, ddof=1) / np.sqrt(len(sampled_scores))),
            "examples": [{"prompt": p, "greedy": g} for p, g in list(zip(prompts, greedy))[:6]]}


# ------------------------------------------------------------------------------------------------ the comparison
def run_side(side: str, seed: int, args, out: Path) -> dict:
    """Run one side in a fresh subprocess; its JSON plus the wall time of the whole subprocess."""
    result = out / f"{side}-s{seed}.json"
    command = [sys.executable, __file__, "--side", side, "--seed", str(seed), "--json", str(result),
               "--run-dir", str(out / f"{side}-s{seed}")]
    for name in ("steps", "prompts_per_step", "group_size", "max_new_tokens", "lr", "lora_r", "lora_alpha", "threads"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    data = json.loads(result.read_text())
    data["subprocess_s"] = time.perf_counter() - start
    return data


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--prompts-per-step", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=float, default=16.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--eval-samples", type=int, default=4, help="sampled completions per held-out prompt")
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N held-out prompts only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/bench_grpo_lora_real")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results" / "grpo_lora_real"),
                        help="path stem of the .json and .md results")
    parser.add_argument("--side", choices=("ours", "trl"), help=argparse.SUPPRESS)  # internal: one side, in-process
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        return child(args)

    import torch
    import peft
    import transformers
    import trl

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    held_out = addition_prompts("eval")[: args.eval_limit]
    source = source_state()  # before the runs: the code the children import
    runs = []
    for seed in args.seeds:
        for side in (["trl", "ours"] if seed % 2 == 0 else ["ours", "trl"]):
            runs.append(run_side(side, seed, args, out))
            r = runs[-1]
            print(f"{side} seed {seed}: train {r['train_s']:.0f} s, process {r['subprocess_s']:.0f} s, "
                  f"peak {r['peak_rss_mb']:.0f} MB", flush=True)
    evals = {"base": evaluate(None, held_out, args.max_new_tokens, args.eval_samples)}
    print("base", evals["base"], flush=True)
    for r in runs:
        r["eval"] = evaluate(r["adapter"], held_out, args.max_new_tokens, args.eval_samples)
        print(r["side"], r["seed"], r["eval"], flush=True)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                "peft": peft.__version__, **source}
    table = format_table(runs, evals["base"], args, versions)
    stem = Path(args.results)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(
        {"args": {k: v for k, v in vars(args).items() if k not in ("side", "seed", "json", "run_dir")},
         "versions": versions, "base_eval": evals["base"], "runs": runs}, indent=1) + "\n")
    stem.with_suffix(".md").write_text(table)
    print(table)


def source_state() -> dict:
    """The commit, and a hash of the uncommitted changes to the library (the code that was measured)."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(root)]
    try:
        commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        diff = subprocess.run(git + ["diff", "HEAD", "--", "agents", "textenv"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"commit": commit, "library_diff_sha256": hashlib.sha256(diff).hexdigest() if diff else None}


def format_table(runs: list[dict], base: dict, args, versions: dict) -> str:
    lines = [f"GRPO + LoRA (r={args.lora_r}, α={args.lora_alpha:g}, all linear layers) on SmolLM2-135M-Instruct, "
             f"single-digit addition: {args.prompts_per_step} prompts × {args.group_size} completions per step, "
             f"{args.steps} steps, ≤ {args.max_new_tokens} new tokens, lr {args.lr:g}, β = 0, temperature 1, "
             f"{args.threads} torch thread(s), seeds {args.seeds}; torch {versions['torch']}, transformers "
             f"{versions['transformers']}, TRL {versions['trl']}, peft {versions['peft']}. Held-out accuracy on "
             f"{len(addition_prompts('eval')[: args.eval_limit])} unseen pairs: greedy, and sampled at T = 1 ({args.eval_samples} per prompt).",
             "", "| side | seed | train s | s/step (median) | process s | peak RSS MB (above imports) | train reward, first 5 → last 5 steps | "
             "held-out greedy | held-out sampled |", "|---|---|---|---|---|---|---|---|---|",
             f"| base model | | | | | | | {base['greedy']:.3f} | {base['sampled']:.3f} ± {base['sampled_sem']:.3f} |"]
    for r in runs:
        rewards = [x["reward"] for x in r["records"]]
        steps = np.diff([0.0] + [x["time_s"] for x in r["records"]])
        lines.append(f"| {r['side']} | {r['seed']} | {r['train_s']:.0f} | {r['train_s'] / len(rewards):.2f} "
                     f"({np.median(steps):.2f}) | "
                     f"{r['subprocess_s']:.0f} | {r['peak_rss_mb']:.0f} ({r['peak_rss_mb'] - r['imported_rss_mb']:.0f}) | {np.mean(rewards[:5]):.2f} → "
                     f"{np.mean(rewards[-5:]):.2f} | {r['eval']['greedy']:.3f} | {r['eval']['sampled']:.3f} ± "
                     f"{r['eval']['sampled_sem']:.3f} |")

    def mean(side, key):
        return float(np.mean([r[key] for r in runs if r["side"] == side]))

    lines += ["", f"Training time, TRL / ours: **{mean('trl', 'train_s') / mean('ours', 'train_s'):.2f}×**; whole "
              f"process (imports, loading, saving): {mean('trl', 'subprocess_s') / mean('ours', 'subprocess_s'):.2f}×. "
              f"Peak memory, ours / TRL: **{mean('ours', 'peak_rss_mb') / mean('trl', 'peak_rss_mb'):.2f}×**."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
