"""Every group-family policy loss on ``textenv/Arithmetic-v0`` at an equal budget: held-out pass@1 against wall time.

Each ``loss_type`` of :class:`agents.text.pg.PGConfig` (bnpo, grpo, dapo, dr_grpo, gspo, cispo, with the presets the
loss brings: dapo's clip-higher, dynamic sampling and overlong penalty, dr_grpo's unscaled advantages, gspo's
sequence ratio and tiny clips, cispo's capped weight) trains the arithmetic world's LM (105k-parameter GPT-2, full
fine-tuning) with the same settings: GRPO estimator, 32 prompts × 8 completions per iteration, ≤ 8 new tokens,
lr 5e-4, β = 0, ``epochs=2`` and ``minibatch_rows=128`` (two epochs of two minibatches, so the ratio leaves 1 and
the clips act), ``--iterations`` iterations, for each of ``--seeds``.

Held-out accuracy (:func:`agents.text.verifiable.evaluate_accuracy` on the 500 held-out problems: pass@1 from
``--eval-samples`` samples per problem at T = 1, and greedy) is measured before training and every
``iterations / 4`` iterations from the training callback; evaluation time is not in the wall time (``time_s`` of
:func:`agents.core.onpolicy.train` counts training only). dapo's dynamic sampling draws up to 3 rollouts per
iteration to refill its batch, so its iterations cost more; the plot's x axis is wall time for that reason.

Runs one training at a time, in this process, with one torch thread.

Reproduce (writes ``benchmarks/results/group_losses.json``, ``.md`` and ``.png``)::

    OMP_NUM_THREADS=1 python benchmarks/group_losses.py --iterations 100 --seeds 0 1 2

Smoke run: ``python benchmarks/group_losses.py --iterations 2 --seeds 0 --json /tmp/gl.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

LOSS_TYPES = ("bnpo", "grpo", "dapo", "dr_grpo", "gspo", "cispo")
ENV_ID = "textenv/Arithmetic-v0"
RESULTS = Path(__file__).parent / "results" / "group_losses.json"


def config(loss_type: str, seed: int, iterations: int, threads: int = 1, **overrides):
    from agents import PGConfig

    return PGConfig(**overrides, estimator="grpo", env_id=ENV_ID, loss_type=loss_type, group_size=8, prompts_per_iter=32, lr=5e-4,
                    max_new_tokens=8, kl_coef=0.0, epochs=2, minibatch_rows=128, iterations=iterations, seed=seed,
                    threads=threads, checkpoint_every=10**6)


def evaluate(policy, samples: int) -> dict:
    from agents.text.verifiable import evaluate_accuracy

    s = evaluate_accuracy(policy, n=samples, seed=0).summary(ks=(1,))
    return {"pass@1": s["pass@1"], "greedy": s["greedy"], "sem": s["sampled_sem"]}


def run_one(loss_type: str, seed: int, iterations: int, samples: int, out_dir: Path, every: int | None = None,
            **overrides) -> dict:
    """Train one loss type; evaluate every ``every`` iterations (default ``iterations // 4``) and at the end."""
    from agents import train_pg

    every = every or max(1, iterations // 4)
    evals, rows = [], []
    eval_s = 0.0

    def callback(row, policy):
        nonlocal eval_s
        rows.append({k: row[k] for k in ("iteration", "time_s", "proxy", "length", "rollouts", "groups_kept",
                                         "clip_fraction", "approx_kl") if k in row})
        if row["iteration"] % every == 0 or row["iteration"] == iterations:
            tick = time.perf_counter()
            evals.append({"iteration": row["iteration"], "time_s": row["time_s"], **evaluate(policy, samples)})
            eval_s += time.perf_counter() - tick
            e = evals[-1]
            print(f"  {loss_type} s{seed} it {e['iteration']}: {e['time_s']:.1f} s, pass@1 {e['pass@1']:.3f}, "
                  f"greedy {e['greedy']:.3f}", flush=True)

    start = time.perf_counter()
    train_pg(config(loss_type, seed, iterations, **overrides), out_dir / f"{loss_type}-s{seed}", resume=False, progress=False,
             callback=callback)
    return {"loss_type": loss_type, "seed": seed, "evals": evals, "rows": rows, "train_s": rows[-1]["time_s"],
            "eval_s": eval_s, "process_s": time.perf_counter() - start,
            "rollouts_per_iter": float(np.mean([r.get("rollouts", 1) for r in rows]))}


def curve(runs: list[dict], loss_type: str):
    """Mean/min/max of pass@1 over seeds at each evaluation point, against the mean wall time there."""
    mine = [r for r in runs if r["loss_type"] == loss_type]
    n = min(len(r["evals"]) for r in mine)
    t = np.array([[r["evals"][i]["time_s"] for i in range(n)] for r in mine]).mean(0)
    p = np.array([[r["evals"][i]["pass@1"] for i in range(n)] for r in mine])
    return t, p.mean(0), p.min(0), p.max(0)


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    base = data["base"]["pass@1"]
    for lt in data["args"]["loss_types"]:
        t, mean, lo, hi = curve(data["runs"], lt)
        t, mean, lo, hi = (np.r_[0.0, t], np.r_[base, mean], np.r_[base, lo], np.r_[base, hi])
        line, = ax.plot(t, mean, marker="o", ms=3, label=lt)
        ax.fill_between(t, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("training wall time, s (1 torch thread, beside another job; eval excluded)")
    ax.set_ylabel("held-out pass@1 (500 problems)")
    ax.set_title(f"Arithmetic-v0, {data['args']['iterations']} iterations, seeds {data['args']['seeds']} "
                 f"(mean, min–max)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(data: dict) -> str:
    a = data["args"]
    lines = [f"textenv/Arithmetic-v0, GRPO estimator, 32 prompts × 8 completions, ≤ 8 tokens, lr 5e-4, β = 0, "
             f"epochs 2 × 2 minibatches of 128, {a['iterations']} iterations, seeds {a['seeds']}; held-out pass@1 "
             f"({a['eval_samples']} samples per problem, T = 1) and greedy on the 500 held-out problems. Wall time: "
             f"training only, 1 torch thread, beside another job (mutation testing) on 2 cores.", "",
             "| loss_type | final pass@1 (mean ± std) | final greedy | best pass@1 seen | train s (mean) | "
             "s/iter | rollouts/iter | clip fraction (mean) |", "|---|---|---|---|---|---|---|---|",
             f"| base model | {data['base']['pass@1']:.3f} | {data['base']['greedy']:.3f} | | | | | |"]
    for lt in a["loss_types"]:
        mine = [r for r in data["runs"] if r["loss_type"] == lt]
        final = np.array([r["evals"][-1]["pass@1"] for r in mine])
        greedy = np.array([r["evals"][-1]["greedy"] for r in mine])
        best = np.mean([max(e["pass@1"] for e in r["evals"]) for r in mine])
        train_s = np.mean([r["train_s"] for r in mine])
        clip = np.mean([np.mean([x.get("clip_fraction", np.nan) for x in r["rows"]]) for r in mine])
        lines.append(f"| {lt} | {final.mean():.3f} ± {final.std(ddof=1) if len(final) > 1 else 0:.3f} | "
                     f"{greedy.mean():.3f} | {best:.3f} | {train_s:.1f} | {train_s / a['iterations']:.2f} | "
                     f"{np.mean([r['rollouts_per_iter'] for r in mine]):.2f} | {clip:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss-types", nargs="+", default=list(LOSS_TYPES), choices=LOSS_TYPES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--json", default=str(RESULTS), help="results JSON (the .md and .png go beside it)")
    parser.add_argument("--out", default="runs/bench_group_losses", help="run directories")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from textenv.world import arithmetic_lm_path

    from agents.policies.lm import LMPolicy  # noqa: F401  (import cost outside the timings)

    base = evaluate(str(arithmetic_lm_path()), args.eval_samples)
    print("base", base, flush=True)
    runs = []
    # seeds outermost, loss types rotated per seed: no loss type always runs first or last beside the other job
    for seed in args.seeds:
        order = args.loss_types[seed % len(args.loss_types):] + args.loss_types[: seed % len(args.loss_types)]
        for lt in order:
            runs.append(run_one(lt, seed, args.iterations, args.eval_samples, Path(args.out)))
            print(f"{lt} seed {seed}: train {runs[-1]['train_s']:.1f} s, eval {runs[-1]['eval_s']:.1f} s", flush=True)
    data = {"args": vars(args), "torch": torch.__version__, "threads": 1, "note": "1 torch thread, beside another job",
            "base": base, "runs": runs}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    md = table(data)
    path.with_suffix(".md").write_text(md)
    plot(data, path.with_suffix(".png"))
    print(md)


if __name__ == "__main__":
    main()
