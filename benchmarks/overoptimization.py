"""Reward over-optimization (Gao et al. 2022) on the built-in world: a long PPO run with a tiny KL coefficient.

PPO maximises the learned proxy reward model with β = 0.001. Every ``--eval-every`` iterations the current
policy is evaluated on held-out prompts: proxy reward, gold sentiment (the true objective the proxy was
trained to predict), gold fluency (fraction of sentences the grammar parses; never trained on, never seen by
the proxy's labellers) and KL to the base LM. The plot shows what the proxy's rise buys.

    OMP_NUM_THREADS=1 python benchmarks/overoptimization.py --iterations 100 --out runs/overoptimization
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> None:
    from agents import LMPolicy, PPOConfig, train_ppo
    from agents.text.evaluation import eval_prompts, generate
    from textenv import world

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--kl-coef", type=float, default=0.001)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-prompts", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/overoptimization")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    base = LMPolicy.from_pretrained(world.lm_path())
    prompts = eval_prompts(args.eval_prompts)
    points = []

    def evaluate(iteration, policy):
        s = generate(policy, prompts, reference=base, seed=1)
        fluency = float(np.mean(world.gold_fluency(s.prompts, s.completions)))
        points.append({"iteration": iteration, **s.summary(), "fluency": fluency, "sample": s.completions[0]})
        print(points[-1], flush=True)

    evaluate(0, base)
    config = PPOConfig(iterations=args.iterations, prompts_per_iter=64, lr=args.lr, kl_coef=args.kl_coef,
                       max_episode_kl=1e9, seed=args.seed, checkpoint_every=10**6)

    def callback(row, policy):
        if row["iteration"] % args.eval_every == 0:
            evaluate(row["iteration"], policy)

    train_ppo(config, out / "run", resume=False, progress=False, callback=callback)
    (out / "points.json").write_text(json.dumps(points, indent=2) + "\n")
    plot(points, out / "overoptimization.png", args)
    best = max(points, key=lambda p: p["gold"] + p["fluency"])
    print(f"wrote {out / 'overoptimization.png'}; best gold+fluency at iteration {best['iteration']}")


def plot(points, path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kl = [max(p["kl"], 1e-2) for p in points]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, x, label in ((axes[0], [p["iteration"] for p in points], "PPO iteration"), (axes[1], kl, "KL to base LM (nats)")):
        ax.plot(x, [p["proxy"] for p in points], "o-", label="proxy reward (optimised)")
        ax.plot(x, [p["gold"] for p in points], "s-", label="gold sentiment")
        ax.plot(x, [p["fluency"] for p in points], "^-", label="gold fluency (never optimised)")
        ax.set(xlabel=label, ylabel="held-out mean")
        ax.grid(alpha=0.3)
    axes[1].set_xscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Over-optimization: PPO, β={args.kl_coef}, lr={args.lr}, built-in world")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
