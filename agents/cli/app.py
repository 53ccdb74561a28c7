"""The ``textenv`` command line: the built-in world, the demo, reward modelling, agents, benchmarks.

``textenv build-world``, ``demo``, ``preferences``, ``train-rm``, ``eval-rm``, ``throughput`` here; ``train``,
``rlhf``, ``bench`` and ``best-of-n`` in :mod:`agents.cli.train`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _build_world(args) -> None:
    """Build (or find) the world and its proxy, checking every cached file against its sha256."""
    from textenv import world

    recipe = world.WorldRecipe(seed=args.seed)
    path = _verified(lambda force: world.build(recipe, force=force), args.force)
    manifest = json.loads((path / "manifest.json").read_text())
    print(f"built-in world: {path}")
    for key in ("vocab_size", "parameters", "distinct_words", "final_train_loss", "sample_fluency", "build_seconds"):
        print(f"  {key:18s} {manifest[key]}")
    proxy = _verified(lambda force: world.build_proxy(recipe, world.ProxyRecipe(seed=args.seed), force=force), args.force)
    labels = json.loads((proxy / "labels.json").read_text())
    metrics = json.loads((proxy / "rm" / "metrics.json").read_text())
    print(f"proxy reward model: {proxy / 'rm'}")
    print(f"  {'train pairs':18s} {metrics['train_pairs']} (label agreement with gold {labels['train']['agreement']:.3f})")
    _print_rm_metrics(metrics, labels["eval"]["bayes_accuracy"])


def _verified(build, force: bool) -> Path:
    """``build(force)``, then the full check (sha256 of every file): a damaged folder is rebuilt; one written by
    an older textenv, without checksums, gets them recorded once."""
    from textenv.world import cache

    try:
        path = build(force)
        problem = cache.check(path, full=True)
        if problem is not None:
            print(f"{path} is damaged ({problem}); rebuilding it", file=sys.stderr)
            path = build(True)
    except cache.CacheError as error:  # a read-only cache: the message says the way out
        raise SystemExit(f"error: {error}") from error
    if problem is not None:
        if (problem := cache.check(path, full=True)) is not None:
            raise SystemExit(f"error: {path} is still damaged after a rebuild ({problem}); delete it and run again")
    elif cache.record_checksums(path):
        print(f"recorded the checksums of {path} (cached by an older textenv)", file=sys.stderr)
    return path


_GOLD = {"sentiment": "gold_sentiment", "fluency": "gold_fluency", "none": None}


def _gold(name: str):
    from textenv import world

    return getattr(world, _GOLD[name]) if _GOLD[name] else None


def _print_rm_metrics(metrics: dict, ceiling: float | None = None) -> None:
    rows = [
        ("held-out accuracy", f"{metrics['accuracy']:.3f}" + (f"  (ceiling set by label noise {ceiling:.3f}; chance 0.5)" if ceiling else "")),
        ("accuracy vs gold", f"{metrics['gold_accuracy']:.3f}" if "gold_accuracy" in metrics else "n/a (no gold)"),
        ("Spearman vs gold", f"{metrics['gold_spearman']:+.3f}" if "gold_spearman" in metrics else "n/a"),
        ("calibration ECE", f"{metrics['ece']:.3f}"),
        ("length corr.", f"{metrics['length_pearson']:+.3f}" + (f"  (gold: {metrics['gold_length_pearson']:+.3f})" if "gold_length_pearson" in metrics else "")),
        ("length-matched acc", f"{metrics['length_matched_accuracy']:.3f} on {metrics['length_matched_pairs']} pairs"),
    ]
    if "train_seconds" in metrics:
        rows.append(("training time", f"{metrics['train_seconds']} s, {metrics['steps']} steps, {metrics['threads']} threads"))
    for key, value in rows:
        print(f"  {key:18s} {value}")


def _preferences(args) -> None:
    import torch

    from textenv import world
    from textenv.rm import generate_preferences, label_stats, write_preferences
    from textenv.task import load_prompts
    from textenv.world import grammar

    torch.set_num_threads(args.threads)
    if args.prompts_file:
        prompts = load_prompts(args.prompts_file, split=args.split)
    else:
        prompts = grammar.sample_prompts(args.num_prompts, seed=args.seed + 100)
    records = generate_preferences(
        args.model or world.lm_path(), prompts[: args.num_prompts], _gold(args.gold), k=args.k,
        temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed,
    )
    path = write_preferences(args.out, records)
    stats = label_stats(records, args.temperature)
    print(f"wrote {len(records)} records ({stats.pairs} pairs) to {path}")
    print(f"  label agreement with gold {stats.agreement:.3f} on non-tied pairs; {stats.ties:.1%} of pairs tied in gold")
    print(f"  best achievable accuracy on these labels (label noise at temperature {args.temperature}): {stats.bayes_accuracy:.3f}")


def _train_rm(args) -> None:
    from textenv import world
    from textenv.rm import RewardModelConfig, train_reward_model

    config = RewardModelConfig(
        train_file=args.train, eval_file=args.eval, output_dir=args.out, base_model=args.base_model or str(world.lm_path()),
        epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, center_coef=args.center_coef, seed=args.seed,
        checkpoint_every=args.checkpoint_every, threads=args.threads,
    )
    out = train_reward_model(config, resume=not args.no_resume, gold=_gold(args.gold))
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"reward model: {out}  (reward_model={str(out)!r} in gymnasium.make)")
    _print_rm_metrics(metrics)
    print(f"  report             {out / 'report.png'}")


def _eval_rm(args) -> None:
    import torch

    from textenv.rewards.hf import HFRewardModel
    from textenv.rm import evaluate_reward_model, load_preferences, plot_report
    from textenv.rm.evaluate import public_metrics

    torch.set_num_threads(args.threads)
    rm = HFRewardModel(args.model, normalize=False)
    metrics = evaluate_reward_model(rm, load_preferences(args.data), rm.tokenizer, gold=_gold(args.gold))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(public_metrics(metrics), indent=2) + "\n")
    plot_report(metrics, out / "report.png", title=f"reward model {Path(args.model).name}")
    print(f"reward model {args.model} on {args.data}: {metrics['pairs']} pairs")
    _print_rm_metrics(metrics)
    print(f"wrote {out / 'metrics.json'} and {out / 'report.png'}")


def _demo(args) -> None:
    """Build the world, roll the base LM out in the batched env, print and plot the rewards."""
    import gymnasium as gym
    import torch

    import textenv  # noqa: F401  (registers the ids)
    from agents.policies.sampler import collect_episodes
    from textenv import world
    from textenv.lm import load_causal_lm

    torch.set_num_threads(args.threads)
    lm = world.lm_path()
    env = gym.make_vec(
        "textenv/Sentiment-v1", num_envs=args.num_envs, max_new_tokens=args.max_new_tokens,
        kl_coef=args.kl_coef, kl_mode="policy",
    )
    episodes = collect_episodes(env, load_causal_lm(lm), args.episodes, seed=args.seed)
    proxy = np.array(episodes.scores)
    sentiment = np.array(episodes.gold)
    fluency = np.array(world.gold_fluency(episodes.prompts, episodes.completions))
    lengths = np.array(episodes.lengths)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples.jsonl", "w") as f:
        for row in zip(episodes.prompts, episodes.completions, proxy, sentiment, fluency, episodes.returns):
            f.write(json.dumps(dict(zip(("prompt", "completion", "proxy_reward", "gold_sentiment", "gold_fluency", "return"), row))) + "\n")
    print(f"\nbase LM on textenv/Sentiment-v1: {len(episodes)} episodes, {args.num_envs} envs, kl_coef={args.kl_coef}")
    print(f"  proxy reward    mean {proxy.mean():+.3f}  std {proxy.std():.3f}  (the learned reward model, normalised)")
    print(f"  gold sentiment  mean {sentiment.mean():+.3f}  std {sentiment.std():.3f}  (range -1..1; info['reward_gold'])")
    print(f"  proxy vs gold   Pearson {np.corrcoef(proxy, sentiment)[0, 1]:+.2f}")
    print(f"  gold fluency    mean {fluency.mean():.3f}  (1 = parses under the grammar)")
    print(f"  return          mean {np.mean(episodes.returns):+.3f}  (proxy − β·KL; the base LM is its own reference)")
    print(f"  length          mean {lengths.mean():.1f} tokens, {np.mean(lengths >= args.max_new_tokens):.0%} at the token cap")
    print("\nsamples (prompt | completion)  proxy  gold")
    for p, c, r, s in list(zip(episodes.prompts, episodes.completions, proxy, sentiment))[:6]:
        print(f"  {p} |{c}   {r:+.2f}  {s:+.2f}")
    _plot_demo(out / "rewards.png", proxy, sentiment, fluency, lengths)
    print(f"\nwrote {out / 'rewards.png'} and {out / 'samples.jsonl'}")


def _plot_demo(path: Path, proxy, sentiment, fluency, lengths) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    jitter = np.random.default_rng(0).uniform(-0.03, 0.03, size=len(sentiment))
    axes[0].scatter(sentiment + jitter, proxy, s=8, alpha=0.5, color="tab:blue")
    axes[0].set(title="proxy reward (the env reward) vs gold", xlabel="gold sentiment", ylabel="proxy reward")
    axes[1].hist(sentiment, bins=21, range=(-1, 1), color="tab:orange")
    axes[1].set(title="gold sentiment (info['reward_gold'])", xlabel="score", ylabel="episodes")
    axes[2].hist(fluency, bins=11, range=(0, 1), color="tab:green")
    axes[2].set(title="gold fluency", xlabel="fraction of sentences that parse")
    axes[3].hist(lengths, bins=20, color="tab:gray")
    axes[3].set(title="completion length", xlabel="tokens")
    fig.suptitle("base LM rolled out in textenv/Sentiment-v1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _throughput(args) -> None:
    from agents.cli.throughput import format_rows, run_throughput

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

    p = sub.add_parser("build-world", help="build (or find cached and check the sha256 of) the built-in world and its proxy reward model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(fn=_build_world)

    p = sub.add_parser("demo", help="roll the base LM out in textenv/Sentiment-v1; print and plot rewards")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--episodes", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on busy 2-core machines)")
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(fn=_demo)

    p = sub.add_parser("preferences", help="sample K completions per prompt and label them with a noisy gold ranking")
    p.add_argument("--out", required=True, help="JSONL file to write")
    p.add_argument("--model", default=None, help="causal LM to sample from (default: the built-in base LM)")
    p.add_argument("--num-prompts", type=int, default=1000, help="prompts (drawn from the grammar unless --prompts-file)")
    p.add_argument("--prompts-file", default=None, help="a .jsonl of {\"prompt\": ...} lines instead")
    p.add_argument("--split", default=None, help="only this split of --prompts-file")
    p.add_argument("--k", type=int, default=4, help="completions per prompt (ranked; C(K,2) pairs each)")
    p.add_argument("--temperature", type=float, default=0.5, help="Bradley-Terry label noise on gold (0: noiseless)")
    p.add_argument("--gold", choices=["sentiment", "fluency"], default="sentiment")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(fn=_preferences)

    p = sub.add_parser("train-rm", help="train a Bradley-Terry reward model (checkpoints; resumes by default)")
    p.add_argument("--train", required=True, help="preference JSONL (pairs and/or rankings)")
    p.add_argument("--eval", default=None, help="held-out preference JSONL")
    p.add_argument("--out", default="runs/reward_model")
    p.add_argument("--base-model", default=None, help="causal LM whose trunk starts the RM (default: built-in LM)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16, help="records (prompts) per step")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--center-coef", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--gold", choices=list(_GOLD), default="sentiment", help="gold reward for the evaluation")
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists (it is removed "
                   "once the data and base model have loaded)")
    p.set_defaults(fn=_train_rm)

    p = sub.add_parser("eval-rm", help="held-out accuracy, gold accuracy, calibration and length bias of a reward model")
    p.add_argument("--model", required=True, help="reward model directory (or the built-in proxy: see build-world)")
    p.add_argument("--data", required=True, help="preference JSONL")
    p.add_argument("--gold", choices=list(_GOLD), default="sentiment")
    p.add_argument("--out", default="runs/eval_rm")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(fn=_eval_rm)

    p = sub.add_parser("throughput", help="rollout tokens/s: batched env vs generate vs naive env")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-naive", action="store_true", help="skip the (slow) naive env")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.set_defaults(fn=_throughput)

    from agents.cli.train import add_commands

    add_commands(sub)
    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
