"""Ours vs TRL's ``GRPOTrainer`` on ``textenv/Arithmetic-v0``, per loss type: wall time to the same held-out accuracy.

**The two sides** (each run in its own fresh subprocess, one at a time, one torch thread; the side that goes first
alternates between runs):

* ours: :func:`agents.train_pg` with :func:`group_losses.config` (GRPO estimator, 32 prompts × 8 completions,
  ≤ 8 new tokens, lr 5e-4, β = 0, ``epochs=2``, ``minibatch_rows=128``) and the given ``loss_type``;
* TRL: ``trl.GRPOTrainer`` (:mod:`group_losses_trl_side`) with the same model (the arithmetic world's 105k-parameter
  GPT-2, ``textenv.world.arithmetic_lm_path()``, full fine-tuning, fp32), the same training prompts as plain text
  (no chat template; token ids checked against the env's), the same reward (the env's
  ``ExactMatch(answer_key, extract=ANSWER_PATTERN)``: the first integer of the completion equals the answer), group
  size 8, 32 prompts per generation batch, completions capped at 8 tokens and ended by EOS (checked on the first
  batch), temperature 1 (no top-k/top-p), β = 0, AdamW lr 5e-4 constant, no weight decay, clip-norm 1,
  ``num_iterations=2`` (= our epochs) over two 128-completion minibatches (``steps_per_generation=2``), dropout off,
  group-normalised advantages, and the loss type (TRL ``loss_type``: grpo, bnpo, dapo, dr_grpo, cispo; gspo is
  ``"grpo"`` + ``importance_sampling_level="sequence"``), with our preset's clips (``epsilon``/``epsilon_high``).

Both sides are scored by one function, :func:`group_losses.evaluate` (``evaluate_accuracy`` on the 500 held-out
problems: pass@1 from ``--eval-samples`` samples at T = 1, and greedy), every ``--eval-every`` iterations, from a
training callback; evaluation time is subtracted from both wall times.

Differences that remain:

* ``dapo``: our preset also turns on dynamic sampling and the overlong penalty, which TRL's ``loss_type="dapo"``
  does not have (it is only the token-mean loss with clip-higher). Here ours runs ``dapo`` with
  ``dynamic_sampling=False, overlong="none"`` (``--ours-dapo-preset`` restores the preset), so both sides do the
  same work per iteration; ``group_losses.py`` measures the full preset.
* ``cispo``: TRL caps the importance weight at ``epsilon_high`` (set to 5.0), ours at ``1 + clip_high`` (= 5).
* Sampling: ours samples token by token through the env (KV cache); TRL with ``model.generate`` on left-padded
  prompts (prompts are 4–6 characters). ``generate`` derives position ids from the attention mask; TRL's
  log-prob forward passes no position ids, so for padded prompts the scored positions shift by the padding.
* Advantage: ours ``(r − mean) / (std + 1e-6)``, TRL ``/ (std + 1e-4)``; TRL draws a step's prompts from a
  shuffled pass over the data, ours with replacement; minibatches are shuffled differently.
* TRL logs and computes extra metrics each step (entropy, clip ratios); that is part of its wall time.

Reproduce (writes ``benchmarks/results/group_losses_trl.json`` and ``.md``)::

    OMP_NUM_THREADS=1 python benchmarks/group_losses_trl.py --loss-types dapo grpo --seeds 0 --iterations 100

Smoke run: ``python benchmarks/group_losses_trl.py --iterations 2 --eval-every 1 --json /tmp/glt.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "group_losses_trl.json"


def child(args) -> None:
    start = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    out = Path(args.run_dir)
    if args.side == "ours":
        from group_losses import run_one

        overrides = {}
        if args.loss_type == "dapo" and not args.ours_dapo_preset:
            overrides = dict(dynamic_sampling=False, overlong="none")
        result = run_one(args.loss_type, args.seed, args.iterations, args.eval_samples, out, every=args.eval_every,
                         **overrides)
        result["overrides"] = overrides
    else:
        from group_losses_trl_side import run_trl

        result = run_trl(args.loss_type, args.seed, args.iterations, args.eval_samples, out, args.eval_every)
    result.update(side=args.side, process_s=time.perf_counter() - start)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


def run_side(side: str, loss_type: str, seed: int, args, out: Path) -> dict:
    name = f"{side}-{loss_type}-s{seed}"
    command = [sys.executable, __file__, "--side", side, "--loss-type", loss_type, "--seed", str(seed),
               "--iterations", str(args.iterations), "--eval-every", str(args.eval_every),
               "--eval-samples", str(args.eval_samples), "--json", str(out / f"{name}.json"),
               "--run-dir", str(out / name)] + (["--ours-dapo-preset"] if args.ours_dapo_preset else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    data = json.loads((out / f"{name}.json").read_text())
    data["subprocess_s"] = time.perf_counter() - start
    return data


def time_to(evals: list[dict], target: float) -> float:
    """Wall time at which held-out pass@1 first reaches ``target``, linear between evaluation points (from the
    base model's accuracy at time 0); NaN if never."""
    points = [(0.0, evals[0]["base"])] + [(e["time_s"], e["pass@1"]) for e in evals]
    for (t0, p0), (t1, p1) in zip(points, points[1:]):
        if p1 >= target:
            return t0 + (t1 - t0) * ((target - p0) / (p1 - p0) if p1 > p0 else 1.0) if p0 < target else t0
    return float("nan")


def table(data: dict) -> str:
    a = data["args"]
    lines = [f"textenv/Arithmetic-v0, arithmetic world LM (full fine-tuning), 32 prompts × 8 completions, ≤ 8 tokens, "
             f"lr 5e-4, β = 0, 2 epochs × 2 minibatches of 128, {a['iterations']} iterations (TRL: "
             f"{4 * a['iterations']} optimizer steps), seeds {a['seeds']}; held-out pass@1 ({a['eval_samples']} "
             f"samples per problem) and greedy on 500 problems, every {a['eval_every']} iterations; wall time: training "
             f"only (evaluation subtracted), 1 torch thread, beside another job (mutation testing) on 2 cores; torch "
             f"{data['versions']['torch']}, transformers {data['versions']['transformers']}, TRL "
             f"{data['versions']['trl']}. Base model: pass@1 {data['base']['pass@1']:.3f}, greedy "
             f"{data['base']['greedy']:.3f}.", "",
             "| loss_type | seed | side | train s | s/iter | final pass@1 | final greedy | target pass@1 | s to target | "
             "TRL / ours (to target) | TRL / ours (total) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in data["comparisons"]:
        for side in ("ours", "trl"):
            r = c[side]
            lines.append(
                f"| {c['loss_type']} | {c['seed']} | {side} | {r['train_s']:.1f} | {r['train_s'] / a['iterations']:.2f} "
                f"| {r['evals'][-1]['pass@1']:.3f} | {r['evals'][-1]['greedy']:.3f} | {c['target']:.3f} | "
                f"{c[side + '_to_target_s']:.1f} | " + (f"**{c['ratio_to_target']:.2f}×** | **{c['ratio_total']:.2f}×** |"
                                                       if side == "trl" else " | |"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss-types", nargs="+", default=["dapo", "grpo"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--ours-dapo-preset", action="store_true",
                        help="ours runs dapo with its full preset (dynamic sampling, overlong penalty)")
    parser.add_argument("--json", default=str(RESULTS))
    parser.add_argument("--out", default="runs/bench_group_losses_trl")
    parser.add_argument("--side", choices=("ours", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--loss-type", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        return child(args)

    import torch
    import transformers
    import trl

    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    from group_losses import evaluate
    from textenv.world import arithmetic_lm_path

    base = evaluate(str(arithmetic_lm_path()), args.eval_samples)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    comparisons, k = [], 0
    for seed in args.seeds:
        for lt in args.loss_types:
            sides = ("trl", "ours") if k % 2 == 0 else ("ours", "trl")
            k += 1
            c = {"loss_type": lt, "seed": seed, "first": sides[0]}
            for side in sides:
                c[side] = run_side(side, lt, seed, args, out)
                for e in c[side]["evals"]:
                    e["base"] = base["pass@1"]
                print(f"{side} {lt} s{seed}: train {c[side]['train_s']:.1f} s, final pass@1 "
                      f"{c[side]['evals'][-1]['pass@1']:.3f}", flush=True)
            c["target"] = min(c["ours"]["evals"][-1]["pass@1"], c["trl"]["evals"][-1]["pass@1"])
            for side in ("ours", "trl"):
                c[side + "_to_target_s"] = time_to(c[side]["evals"], c["target"])
            c["ratio_to_target"] = (c["trl_to_target_s"] / c["ours_to_target_s"] if c["ours_to_target_s"] > 0
                                    else float("nan"))  # nan: the target is at or below the base model's
            c["ratio_total"] = c["trl"]["train_s"] / c["ours"]["train_s"]
            comparisons.append(c)
    data = {"args": {k: v for k, v in vars(args).items() if k not in ("side", "loss_type", "seed", "run_dir")},
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
            "note": "1 torch thread, beside another job", "base": base, "comparisons": comparisons}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    md = table(data)
    path.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
