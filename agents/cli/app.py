"""The ``textenv`` command line: the built-in world, the demo, reward modelling, agents, benchmarks.

``textenv build-world``, ``demo``, ``preferences``, ``train-rm``, ``eval-rm``, ``throughput`` here; ``train``,
``rlhf``, ``bench`` and ``best-of-n`` in :mod:`agents.cli.train`; ``models fetch|list`` in :mod:`agents.cli.models`.
A user error (a refused flag value, a missing file or optional dependency, a refused resume) prints one line and
exits with status 2; ``--debug`` shows the traceback instead (:mod:`agents.cli.errors`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

from agents.cli.errors import UsageError, user_message
from agents.cli.flags import add_config_flags, make_config

DESCRIPTION = """textenv is a token-level Gymnasium environment for RLHF and text agents: each action is one token,
the reward is a reward model's score of the finished completion (minus an optional KL penalty to a reference LM).
It ships a built-in world (a grammar, a small GPT-2 language model, held-out prompts, gold sentiment and fluency
scores, and a learned proxy reward model), trainers (PPO, GRPO, RLOO, REINFORCE, SFT, DPO; PPO for MuJoCo control;
offline BC, TD3+BC, CQL, IQL, Decision Transformer) and benchmarks. Start with `textenv build-world`, then
`textenv demo` or `textenv rlhf`."""

EPILOG = ("A user error prints one line and exits with status 2; add --debug (before or after the command) for the "
          "full traceback. `textenv COMMAND --help` describes each command.")


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (``textenv: error: ...; see textenv train ppo --help``)."""

    def error(self, message: str):
        print(f"textenv: error: {' '.join(message.split())}; see {self.prog} --help", file=sys.stderr)
        raise SystemExit(2)


def _build_world(args) -> None:
    """Build (or find) the worlds of ``--task``, checking every cached file against its sha256."""
    if args.task in ("sentiment", "all"):
        _build_sentiment_world(args)
    if args.task in ("arithmetic", "all"):
        _build_arithmetic_world(args)
    if args.task in ("guess", "all"):
        _build_guess_world(args)


def _build_guess_world(args) -> None:
    """Build (or find) the guessing world of ``textenv/GuessNumber-v0`` and print how its LM plays."""
    from textenv.world.guess import GuessRecipe, build_guess

    path = _verified(lambda force: build_guess(GuessRecipe(seed=args.seed), force=force), args.force)
    _print_manifest("guessing world", path)


def _build_arithmetic_world(args) -> None:
    """Build (or find) the arithmetic world of ``textenv/Arithmetic-v0`` and print its LM's held-out accuracy."""
    from textenv import world

    recipe = world.ArithmeticRecipe(seed=args.seed)
    path = _verified(lambda force: world.build_arithmetic(recipe, force=force), args.force)
    manifest = _print_manifest("arithmetic world", path, ("vocab_size", "parameters", "train_problems",
                                                          "eval_problems", "final_train_loss", "build_seconds"))
    print(f"  {'held-out accuracy':18s} greedy {manifest['eval_greedy']:.3f}, sampled {manifest['eval_sampled']:.3f}, "
          f"pass@8 {manifest['eval_pass_at_8']:.3f}  (of {manifest['eval_problems']} problems never trained on)")


def _print_manifest(title: str, path, keys=None) -> dict:
    """Print ``title: path`` and the ``keys`` (None: every scalar) of the world's ``manifest.json``; return it."""
    manifest = json.loads((path / "manifest.json").read_text())
    print(f"{title}: {path}")
    for key in keys or [k for k, v in manifest.items() if not isinstance(v, (dict, list))]:
        print(f"  {key:18s} {manifest[key]}")
    return manifest


def _build_sentiment_world(args) -> None:
    """Build (or find) the review world and its proxy, checking every cached file against its sha256."""
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
        raise UsageError(str(error)) from error
    if problem is not None:
        if (problem := cache.check(path, full=True)) is not None:
            raise UsageError(f"{path} is still damaged after a rebuild ({problem}); delete it and run again")
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

    config = make_config(args, RewardModelConfig)
    if config.base_model is None:  # the trainer takes no default; the command's is the built-in LM
        config = dataclasses.replace(config, base_model=str(world.lm_path()))
    for name in ("train_file", "eval_file"):
        if getattr(config, name) is not None and not Path(getattr(config, name)).is_file():
            raise UsageError(f"{args.config_flags[name]} {getattr(config, name)}: no such file; make one with "
                             f"`textenv preferences --out FILE`")
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

    if args.model not in ("builtin", "gpt2-small") and not Path(args.model).is_dir():
        raise UsageError(f"--model {args.model!r} is neither builtin, gpt2-small nor a model directory")
    rows = run_throughput(tuple(args.batch_sizes), args.max_new_tokens, args.repeats, args.threads,
                          naive=not args.no_naive, model=args.model)
    table = format_rows(rows)
    print("\n" + table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")
        print(f"wrote {args.out}")


def build_parser() -> Parser:
    """The whole ``textenv`` parser (subcommands of :mod:`agents.cli.train` included)."""
    from textenv.rm import RewardModelConfig

    parser = Parser(prog="textenv", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, title="commands")

    p = sub.add_parser("build-world", help="build or check the built-in world and proxy RM",
                       description="Build the built-in world (grammar, corpus, tokenizer, base LM, prompts) and its "
                                   "proxy reward model, or find them in the cache and check every file's sha256. "
                                   "--task arithmetic builds the arithmetic world of textenv/Arithmetic-v0 instead "
                                   "(problems, character tokenizer, a partly right LM), --task guess the guessing "
                                   "world of textenv/GuessNumber-v0, --task all every one.")
    p.add_argument("--task", choices=["sentiment", "arithmetic", "guess", "all"], default="sentiment",
                   help="which world: sentiment (reviews and the proxy RM, textenv/Sentiment-v1), arithmetic "
                        "(textenv/Arithmetic-v0), guess (textenv/GuessNumber-v0) or all (default: sentiment)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world's recipe (another seed: another world) "
                   "(default: 0)")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(fn=_build_world)

    p = sub.add_parser("demo", help="roll the base LM out; print and plot its rewards",
                       description="Roll the built-in base LM out in the batched textenv/Sentiment-v1 env; print the "
                                   "proxy reward beside gold sentiment and fluency, and plot them.")
    p.add_argument("--num-envs", type=int, default=16, help="envs of the vector env (default: 16)")
    p.add_argument("--episodes", type=int, default=128, help="completions to sample (default: 128)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="token cap of a completion (default: 32)")
    p.add_argument("--kl-coef", type=float, default=0.05, help="β of the env's KL penalty (default: 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts and samples (default: 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on busy 2-core machines) "
                   "(default: 1)")
    p.add_argument("--out", default="runs/demo", help="where samples.jsonl and rewards.png go (default: runs/demo)")
    p.set_defaults(fn=_demo)

    p = sub.add_parser("preferences", help="sample K completions per prompt, rank by noisy gold")
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

    p = sub.add_parser("train-rm", help="train a Bradley-Terry reward model on preferences",
                       description=f"Train a Bradley-Terry reward model: {RewardModelConfig.__doc__.splitlines()[0]}")
    add_config_flags(p, RewardModelConfig, defaults={"threads": 1}, aliases={
        "train_file": ["--train"], "eval_file": ["--eval"], "output_dir": ["--out"]})
    p.add_argument("--gold", choices=list(_GOLD), default="sentiment", help="gold reward for the evaluation "
                   "(default: sentiment)")
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists (it is removed "
                   "once the data and base model have loaded)")
    p.set_defaults(fn=_train_rm)

    p = sub.add_parser("eval-rm", help="a reward model's accuracy, calibration, length bias")
    p.add_argument("--model", required=True, help="reward model directory (or the built-in proxy: see build-world)")
    p.add_argument("--data", required=True, help="preference JSONL")
    p.add_argument("--gold", choices=list(_GOLD), default="sentiment")
    p.add_argument("--out", default="runs/eval_rm")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(fn=_eval_rm)

    p = sub.add_parser("throughput", help="rollout tokens/s: batched env (both KL timings) vs generate vs naive")
    p.add_argument("--model", default="builtin",
                   help="builtin (the world's 0.68M LM), gpt2-small (12x768, vocab 8192, random weights) or a model directory")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-naive", action="store_true", help="skip the (slow) naive env")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.set_defaults(fn=_throughput)

    from agents.cli import models
    from agents.cli.train import add_commands

    add_commands(sub)
    models.add_commands(sub)
    return parser


def passive_wait_exec(argv: list[str], environ, argv0: str) -> list[str] | None:
    """The command line to re-execute the ``textenv`` console script with ``OMP_WAIT_POLICY=PASSIVE``, or None.

    torch reads OpenMP's wait policy once, when it loads (before :func:`main` runs). With the default policy,
    waiting threads spin, and the built-in world's 2-thread build (and any multi-threaded training) collapses when
    another process holds a core: ``benchmarks/threads_wait_policy.py`` measured sampling 6× slower. Sleeping
    threads change no arithmetic (the weights stay bit-identical) and cost little on an idle machine. So the
    console script re-executes itself once with ``PASSIVE``, unless ``OMP_WAIT_POLICY`` is already set (yours
    wins, and it stops the loop), for ``--help``, or when not run as the ``textenv`` script (``python -m
    agents.cli``, ``main([...])`` from Python: set the variable yourself there).

    >>> passive_wait_exec(["build-world"], {}, "/venv/bin/textenv")[-1]
    'build-world'
    >>> passive_wait_exec(["build-world"], {"OMP_WAIT_POLICY": "ACTIVE"}, "/venv/bin/textenv") is None
    True
    """
    if os.name != "posix" or "OMP_WAIT_POLICY" in environ or Path(argv0).name != "textenv":
        return None
    if not argv or {"-h", "--help"} & set(argv):
        return None
    return [sys.executable, argv0, *argv]


def main(argv: list[str] | None = None) -> None:
    """Run ``textenv argv...``. A user error raises ``SystemExit(2)`` after printing one line (with ``--debug``
    anywhere in ``argv``, the error itself is raised)."""
    if argv is None:
        command = passive_wait_exec(sys.argv[1:], os.environ, sys.argv[0])
        if command is not None:
            os.execve(command[0], command, {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]  # accepted after the subcommand too
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse would blame the top-level parser; name the command whose --help lists the flags
        words = [getattr(args, k) for k in ("command", "algorithm", "datasets_command", "models_command")
                 if getattr(args, k, None)]
        parser.prog = " ".join(["textenv", *words])
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if debug:
        return args.fn(args)
    try:
        args.fn(args)
    except KeyboardInterrupt:
        resumable = args.command in ("train", "rlhf", "train-rm")
        print("textenv: interrupted" + ("; run the same command again to resume" if resumable else ""), file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        message = user_message(error, getattr(args, "config_flags", None))
        if message is None:
            raise
        print(f"textenv: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    sys.exit(main())
