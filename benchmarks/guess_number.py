"""GRPO vs PPO on the multi-turn ``textenv/GuessNumber-v0``: success rate and turns to solve against iterations.

The game: guess a number in 1–16; after each guess the env answers higher/lower as tokens and the policy guesses
again, all in one episode of at most ``max_new_tokens = 96`` tokens; reward ``1 − 0.1·(turns − 1)`` on the solving
turn, else 0. The policy is the guessing world's LM (``textenv.world.guess_lm_path()``, full fine-tuning).

* GRPO: ``PGConfig(estimator="grpo", kl_coef=0, 8 prompts × 8 episodes, lr 1e-3, --grpo-iterations)``, one
  optimizer step per batch;
* PPO: ``PPOConfig(kl_in_loss=True, kl_estimator="k3", kl_coef=0.01, 64 episodes per iteration, epochs 2,
  minibatch_rows 16, --ppo-lr)``, a value head on the trunk, trained for the same training wall time as GRPO took
  (``--ppo-iterations`` is only the cap). ``--lr-try`` runs a short PPO per learning rate first (``--lr-try-s``
  seconds of training each) and keeps the one with the higher success; its figures are in the JSON.

Both are scored by :func:`agents.text.games.evaluate_game` (every instance × ``--episodes-per-instance``, sampling
at T = 1, seed 123) before training, at four points (GRPO: every quarter of its iterations; PPO: when its
training time passes GRPO's evaluation times) and at the end. Evaluation time is not in the wall times.

Reproduce (writes ``benchmarks/results/guess_number.json``, ``.md`` and ``.png``)::

    OMP_NUM_THREADS=1 python benchmarks/guess_number.py --grpo-iterations 300 --seeds 0 --lr-try 3e-4 1e-3

Smoke run: ``python benchmarks/guess_number.py --grpo-iterations 2 --ppo-iterations 2 --json /tmp/gn.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
ENV_ID = "textenv/GuessNumber-v0"
RESULTS = Path(__file__).parent / "results" / "guess_number.json"


class _Stop(Exception):
    """Raised from the callback once PPO's training time reaches the budget."""


def evaluate(policy, episodes: int) -> dict:
    from agents.text.games import evaluate_game

    return evaluate_game(policy, ENV_ID, episodes_per_instance=episodes, seed=123)


def run(algo: str, seed: int, iterations: int, episodes: int, out: Path, lr: float, eval_iters=(), eval_times=(),
        budget_s: float | None = None, loss_type: str = "bnpo") -> dict:
    """Train ``algo`` (grpo or ppo); evaluate at ``eval_iters`` iterations or once training time passes each of
    ``eval_times``; stop at ``budget_s`` of training time (if given)."""
    from agents import PGConfig, PPOConfig, train_pg, train_ppo

    if algo == "grpo":
        config = PGConfig(env_id=ENV_ID, estimator="grpo", loss_type=loss_type, kl_coef=0.0, max_new_tokens=96,
                          prompts_per_iter=8,
                          group_size=8, lr=lr, iterations=iterations, seed=seed, threads=1, checkpoint_every=10**6)
        train = train_pg
    else:
        config = PPOConfig(env_id=ENV_ID, kl_in_loss=True, kl_estimator="k3", kl_coef=0.01, max_new_tokens=96,
                           prompts_per_iter=64, epochs=2, minibatch_rows=16, lr=lr, iterations=iterations, seed=seed,
                           threads=1, checkpoint_every=10**6)
        train = train_ppo
    evals, rows, pending = [], [], sorted(eval_times)
    eval_s = 0.0

    def callback(row, policy):
        nonlocal eval_s
        rows.append({k: row[k] for k in ("iteration", "time_s", "return", "length", "kl") if k in row})
        done = budget_s is not None and row["time_s"] >= budget_s
        due = row["iteration"] in eval_iters or row["iteration"] == iterations or done
        while pending and row["time_s"] >= pending[0]:
            pending.pop(0)
            due = True
        if due:
            tick = time.perf_counter()
            evals.append({"iteration": row["iteration"], "time_s": row["time_s"], **evaluate(policy, episodes)})
            eval_s += time.perf_counter() - tick
            e = evals[-1]
            print(f"  {algo} lr {lr:g} s{seed} it {e['iteration']}: {e['time_s']:.1f} s, success {e['success']:.3f}, "
                  f"turns to solve {e['turns_to_solve']:.2f}", flush=True)
        if done:
            raise _Stop

    try:
        train(config, out / f"{algo}-lr{lr:g}-s{seed}", resume=False, progress=False, callback=callback)
    except _Stop:
        pass
    return {"algo": algo, "seed": seed, "lr": lr, "evals": evals, "rows": rows, "train_s": rows[-1]["time_s"],
            "iterations": rows[-1]["iteration"], "eval_s": eval_s}


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    base = data["base"]
    for r in data["runs"]:
        t = [0.0] + [e["time_s"] for e in r["evals"]]
        label = f"{r['algo']} (lr {r['lr']:g}, seed {r['seed']})"
        axes[0].plot(t, [base["success"]] + [e["success"] for e in r["evals"]], marker="o", label=label)
        axes[1].plot(t, [base["turns_to_solve"]] + [e["turns_to_solve"] for e in r["evals"]], marker="o", label=label)
    axes[0].set_ylabel("success rate")
    axes[1].set_ylabel("turns to solve (solved episodes)")
    for ax in axes:
        ax.set_xlabel("training wall time, s (1 thread, beside another job)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("textenv/GuessNumber-v0 (evaluate_game, seed 123)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(data: dict) -> str:
    a, base = data["args"], data["base"]
    lines = [f"textenv/GuessNumber-v0 (guess 1–16, ≤ 96 tokens), evaluate_game: {base['episodes']} episodes "
             f"({a['episodes_per_instance']} per instance, T = 1, seed 123). GRPO (loss_type "
             f"{a.get('grpo_loss_type', 'bnpo')}): 8 prompts × 8, lr "
             f"{a['grpo_lr']:g}, {a['grpo_iterations']} iterations; PPO: 64 episodes, 2 epochs, minibatches of 16, "
             f"KL k3 in the loss (β 0.01), the same training wall time. Wall time: training only, 1 torch thread on "
             f"2 cores; seeds {a['seeds']}.", "",
             "| policy | iteration | train s | success | turns to solve | turns/episode | return |",
             "|---|---|---|---|---|---|---|",
             f"| base model | 0 | 0 | {base['success']:.3f} | {base['turns_to_solve']:.2f} | {base['turns']:.2f} | "
             f"{base['return']:.3f} |"]
    for r in data["runs"]:
        for e in r["evals"]:
            lines.append(f"| {r['algo']} (lr {r['lr']:g}, seed {r['seed']}) | {e['iteration']} | {e['time_s']:.0f} | "
                         f"{e['success']:.3f} | {e['turns_to_solve']:.2f} | {e['turns']:.2f} | {e['return']:.3f} |")
    for t in data.get("lr_try", []):
        e = t["evals"][-1]
        lines.append(f"| lr try: ppo lr {t['lr']:g} | {e['iteration']} | {e['time_s']:.0f} | {e['success']:.3f} | "
                     f"{e['turns_to_solve']:.2f} | {e['turns']:.2f} | {e['return']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpo-iterations", "--iterations", type=int, default=300)
    parser.add_argument("--grpo-lr", type=float, default=1e-3)
    parser.add_argument("--grpo-loss-type", default="bnpo", help="PGConfig.loss_type of the GRPO side (default: bnpo)")
    parser.add_argument("--ppo-iterations", type=int, default=10_000, help="cap; PPO stops at GRPO's training time")
    parser.add_argument("--ppo-lr", type=float, default=3e-4)
    parser.add_argument("--lr-try", type=float, nargs="*", default=[], help="PPO learning rates to try first")
    parser.add_argument("--lr-try-s", type=float, default=25.0, help="training seconds per tried learning rate")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--episodes-per-instance", type=int, default=8)
    parser.add_argument("--json", default=str(RESULTS))
    parser.add_argument("--out", default="runs/bench_guess_number")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from agents import LMPolicy
    from textenv.world import guess_lm_path

    out = Path(args.out)
    base = evaluate(LMPolicy.from_pretrained(str(guess_lm_path())), args.episodes_per_instance)
    print("base", base, flush=True)
    tries = []
    for lr in args.lr_try:
        tries.append(run("ppo", args.seeds[0], args.ppo_iterations, args.episodes_per_instance, out / "lr-try", lr,
                         budget_s=args.lr_try_s))
    ppo_lr = max(tries, key=lambda t: t["evals"][-1]["success"])["lr"] if tries else args.ppo_lr
    runs = []
    n = args.grpo_iterations
    quarters = {max(1, round(n * q / 4)) for q in (1, 2, 3, 4)}
    for seed in args.seeds:
        grpo = run("grpo", seed, n, args.episodes_per_instance, out, args.grpo_lr, eval_iters=quarters,
                   loss_type=args.grpo_loss_type)
        times = [e["time_s"] for e in grpo["evals"][:-1]]
        ppo = run("ppo", seed, args.ppo_iterations, args.episodes_per_instance, out, ppo_lr, eval_times=times,
                  budget_s=grpo["train_s"])
        runs += [grpo, ppo]
        print(f"seed {seed}: grpo {grpo['iterations']} it in {grpo['train_s']:.0f} s, ppo {ppo['iterations']} it in "
              f"{ppo['train_s']:.0f} s", flush=True)
    data = {"args": {**vars(args), "ppo_lr_used": ppo_lr}, "torch": torch.__version__,
            "note": "1 torch thread, beside another job", "base": base, "lr_try": tries, "runs": runs}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    md = table(data)
    path.with_suffix(".md").write_text(md)
    plot(data, path.with_suffix(".png"))
    print(md)


if __name__ == "__main__":
    main()
