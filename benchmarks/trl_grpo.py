"""GRPO side by side: textenv's token-env GRPO against TRL's ``GRPOTrainer``, same model, batch and reward.

Both train the built-in tiny GPT-2 on the train prompts of ``textenv/Sentiment-v1`` with the learned proxy
reward model (normalised the same way), ``P`` prompts × ``G`` completions per optimizer step, learning rate
``lr``, no KL term (β = 0, TRL's default), group-normalised advantages (mean and std), one on-policy step per
batch, temperature 1, ``max_new_tokens`` tokens. Gold sentiment is logged beside the proxy on both sides and
never trained on. The two run alternately in one process (TRL first for even seeds, ours first for odd ones),
on ``--threads`` torch threads, and the script reports seconds per step, the wall time until the 5-step moving
average of gold reaches ``--target``, and the ratio TRL / ours.

Differences that remain: TRL samples with ``model.generate`` and averages the loss per sequence first
(``loss_type="grpo"``); we sample token by token through the env (KV cache, same distribution) and average over
all tokens of the batch.

Needs TRL, which the dev install does not bring (``pip install -e ".[bench]"``; see benchmarks/README.md)::

    OMP_NUM_THREADS=1 python benchmarks/trl_grpo.py --steps 60 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from trl_grpo_side import run_trl_grpo


def run_ours(prompts_per_step, group_size, steps, lr, max_new_tokens, seed, threads, out_dir) -> list[dict]:
    from agents import PGConfig, train_pg

    config = PGConfig(estimator="grpo", prompts_per_iter=prompts_per_step, group_size=group_size, iterations=steps,
                      lr=lr, max_new_tokens=max_new_tokens, kl_coef=0.0, seed=seed, threads=threads,
                      checkpoint_every=10**6)
    result = train_pg(config, out_dir, resume=False, progress=False)
    return [{"step": r["iteration"], "time_s": r["time_s"], "proxy": r["proxy"], "gold": r["gold"],
             "completion_length": r["length"]} for r in result.rows]


def time_to_target(records: list[dict], target: float, window: int = 5) -> tuple[int | None, float | None]:
    """First step where the moving average of gold over ``window`` steps reaches ``target``, and its wall time."""
    gold = np.array([r["gold"] for r in records])
    for i in range(window - 1, len(gold)):
        if gold[i - window + 1 : i + 1].mean() >= target:
            return records[i]["step"], records[i]["time_s"]
    return None, None


def summarise(name: str, records: list[dict], target: float) -> dict:
    step, seconds = time_to_target(records, target)
    return {"impl": name, "s_per_step": records[-1]["time_s"] / len(records), "target_step": step,
            "target_s": seconds, "final_gold": float(np.mean([r["gold"] for r in records[-5:]])),
            "final_proxy": float(np.mean([r["proxy"] for r in records[-5:]]))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts-per-step", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=0.5, help="gold level (5-step moving average) to time")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/bench_trl_grpo")
    args = parser.parse_args(argv)
    import torch
    import trl

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    common = dict(prompts_per_step=args.prompts_per_step, group_size=args.group_size, steps=args.steps, lr=args.lr,
                  max_new_tokens=args.max_new_tokens, threads=args.threads)
    rows, curves = [], {}
    for seed in args.seeds:
        order = ["trl", "ours"] if seed % 2 == 0 else ["ours", "trl"]
        for name in order:
            if name == "trl":
                records = run_trl_grpo(seed=seed, out_dir=str(out / f"trl-s{seed}"), **common)
            else:
                records = run_ours(seed=seed, out_dir=str(out / f"ours-s{seed}"), **common)
            curves[f"{name}-s{seed}"] = records
            rows.append({**summarise(name, records, args.target), "seed": seed})
            print(rows[-1], flush=True)
    table = format_table(rows, args, trl.__version__)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"rows": rows, "curves": curves, "args": vars(args)}, indent=2) + "\n")
    (out / "results.md").write_text(table)
    plot(curves, out / "gold_vs_time.png")
    print(table)


def format_table(rows, args, trl_version) -> str:
    lines = [f"GRPO, built-in world: P={args.prompts_per_step} prompts × G={args.group_size}, lr {args.lr}, β=0, "
             f"{args.steps} steps, {args.max_new_tokens} new tokens, {args.threads} torch thread(s), TRL {trl_version}, "
             f"seeds {args.seeds}; target: 5-step mean gold ≥ {args.target}.", "",
             "| impl | s/step | steps to target | seconds to target | final gold | final proxy |", "|---|---|---|---|---|---|"]
    for name in ("trl", "ours"):
        group = [r for r in rows if r["impl"] == name]
        hit = [r["target_s"] for r in group if r["target_s"] is not None]
        steps = [r["target_step"] for r in group if r["target_step"] is not None]
        lines.append(f"| {name} | {np.mean([r['s_per_step'] for r in group]):.3f} | "
                     f"{np.mean(steps) if steps else float('nan'):.1f} ({len(steps)}/{len(group)} reached) | "
                     f"{np.mean(hit) if hit else float('nan'):.1f} | {np.mean([r['final_gold'] for r in group]):+.3f} | "
                     f"{np.mean([r['final_proxy'] for r in group]):+.3f} |")
    ours = [r for r in rows if r["impl"] == "ours"]
    theirs = [r for r in rows if r["impl"] == "trl"]
    ratio = np.mean([r["s_per_step"] for r in theirs]) / np.mean([r["s_per_step"] for r in ours])
    lines += ["", f"Seconds per step, TRL / ours: **{ratio:.2f}×**."]
    both = [(t["target_s"], o["target_s"]) for t in theirs for o in ours if t["seed"] == o["seed"]
            and t["target_s"] is not None and o["target_s"] is not None]
    if both:
        lines.append(f"Wall time to the target, TRL / ours (seeds where both reached it): "
                     f"**{np.mean([t for t, _ in both]) / np.mean([o for _, o in both]):.2f}×**.")
    return "\n".join(lines) + "\n"


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, records in curves.items():
        ax.plot([r["time_s"] for r in records], [r["gold"] for r in records], alpha=0.8,
                color="tab:red" if name.startswith("trl") else "tab:blue", label=name)
    ax.set(xlabel="training wall time (s)", ylabel="gold reward of the step's completions", title="GRPO: TRL vs textenv")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
