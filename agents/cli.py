"""The ``textenv`` command line: ``textenv build-world``, ``textenv demo``, ``textenv throughput``.

Later issues add training and benchmarking subcommands here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _build_world(args) -> None:
    from textenv import world

    recipe = world.WorldRecipe(seed=args.seed)
    path = world.build(recipe, force=args.force)
    manifest = json.loads((path / "manifest.json").read_text())
    print(f"built-in world: {path}")
    for key in ("vocab_size", "parameters", "distinct_words", "final_train_loss", "sample_fluency", "build_seconds"):
        print(f"  {key:18s} {manifest[key]}")


def _demo(args) -> None:
    """Build the world, roll the base LM out in the batched env, print and plot the rewards."""
    import gymnasium as gym
    import numpy as np
    import torch

    import textenv  # noqa: F401  (registers the ids)
    from agents.sampler import collect_episodes
    from textenv import world
    from textenv.lm import load_causal_lm

    torch.set_num_threads(args.threads)
    lm = world.lm_path()
    env = gym.make_vec(
        "textenv/Sentiment-v0", num_envs=args.num_envs, max_new_tokens=args.max_new_tokens,
        kl_coef=args.kl_coef, kl_mode="policy",
    )
    episodes = collect_episodes(env, load_causal_lm(lm), args.episodes, seed=args.seed)
    sentiment = np.array(episodes.scores)
    fluency = np.array(world.gold_fluency(episodes.prompts, episodes.completions))
    lengths = np.array(episodes.lengths)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples.jsonl", "w") as f:
        for p, c, s, fl, r in zip(episodes.prompts, episodes.completions, sentiment, fluency, episodes.returns):
            f.write(json.dumps({"prompt": p, "completion": c, "gold_sentiment": s, "gold_fluency": fl, "return": r}) + "\n")
    print(f"\nbase LM on textenv/Sentiment-v0: {len(episodes)} episodes, {args.num_envs} envs, kl_coef={args.kl_coef}")
    print(f"  gold sentiment  mean {sentiment.mean():+.3f}  std {sentiment.std():.3f}  (range -1..1)")
    print(f"  gold fluency    mean {fluency.mean():.3f}  (1 = parses under the grammar)")
    print(f"  return          mean {np.mean(episodes.returns):+.3f}  (sentiment − β·KL; the base LM is its own reference)")
    print(f"  length          mean {lengths.mean():.1f} tokens, {np.mean(lengths >= args.max_new_tokens):.0%} truncated")
    print("\nsamples (prompt | completion)  sentiment")
    for p, c, s in list(zip(episodes.prompts, episodes.completions, sentiment))[:6]:
        print(f"  {p} |{c}   {s:+.2f}")
    _plot_demo(out / "rewards.png", sentiment, fluency, lengths)
    print(f"\nwrote {out / 'rewards.png'} and {out / 'samples.jsonl'}")


def _plot_demo(path: Path, sentiment, fluency, lengths) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].hist(sentiment, bins=21, range=(-1, 1), color="tab:blue")
    axes[0].set(title="gold sentiment (the env reward)", xlabel="score", ylabel="episodes")
    axes[1].hist(fluency, bins=11, range=(0, 1), color="tab:green")
    axes[1].set(title="gold fluency", xlabel="fraction of sentences that parse")
    axes[2].hist(lengths, bins=20, color="tab:gray")
    axes[2].set(title="completion length", xlabel="tokens")
    fig.suptitle("base LM rolled out in textenv/Sentiment-v0")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _throughput(args) -> None:
    from agents.throughput import format_rows, run_throughput

    rows = run_throughput(tuple(args.batch_sizes), args.max_new_tokens, args.repeats, args.threads, naive=not args.no_naive)
    table = format_rows(rows)
    print("\n" + table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")
        print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textenv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build-world", help="build (or find cached) the built-in world, with a progress bar")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(fn=_build_world)

    p = sub.add_parser("demo", help="roll the base LM out in textenv/Sentiment-v0; print and plot rewards")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--episodes", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on busy 2-core machines)")
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(fn=_demo)

    p = sub.add_parser("throughput", help="rollout tokens/s: batched env vs generate vs naive env")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-naive", action="store_true", help="skip the (slow) naive env")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.set_defaults(fn=_throughput)

    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
