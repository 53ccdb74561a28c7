"""``textenv rlhf``: the InstructGPT pipeline end to end on the built-in world, with gold beside every proxy number.

Stages, each in its own folder of the run directory and each skipped when already done (an interrupted
pipeline resumes where it stopped):

1. ``sft/`` — supervised fine-tuning of the base LM on positive-mood demonstrations (:mod:`agents.text.sft`).
2. ``preferences-{train,eval}.jsonl`` — K completions per prompt sampled from the SFT model, ranked by a noisy
   Bradley-Terry draw on gold sentiment (the "human labellers").
3. ``rm/`` — a Bradley-Terry reward model on those preferences, initialised from the SFT model.
4. ``ppo/`` — PPO from the SFT model with the new reward model, KL-shaped against the SFT model.
5. ``report.md``, ``curves.png`` (proxy, gold, KL per PPO iteration), ``frontier.png`` (reward against KL, PPO
   beside best-of-N from the SFT model) and ``samples.md`` (the same held-out prompts before and after).

Before the stages the built-in world and its proxy reward model are built if they are not cached, so that
``gymnasium.make("textenv/Sentiment-v1")`` is quick afterwards. ``pipeline.json`` records the config: resuming
with a different one is refused (``resume=False`` replaces the run). "proxy" is always a reward model's score
(here the one trained in stage 3), "gold" the world's true sentiment.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from agents.core.run import check_range, config_dict


@dataclass
class RLHFConfig:
    """The pipeline's knobs (the defaults take about 4 minutes on one CPU thread once the world is built)."""

    sft_demos: int = 2000
    """Built-in demonstrations for SFT."""
    sft_epochs: int = 1
    """SFT passes."""
    pref_prompts: int = 2000
    """Prompts for preference data (K completions each)."""
    pref_k: int = 4
    """Completions per prompt to rank."""
    pref_temperature: float = 0.5
    """Label noise of the simulated labellers (Bradley-Terry temperature on gold; 0 = noiseless)."""
    rm_epochs: int = 2
    """Reward-model passes."""
    ppo_iterations: int = 60
    """PPO iterations of 64 completions."""
    ppo_lr: float = 3e-4
    """PPO learning rate."""
    kl_coef: float = 0.05
    """β of the KL penalty to the SFT model."""
    eval_prompts: int = 256
    """Held-out prompts for the before/after evaluation."""
    seed: int = 0
    """Seed of every stage."""
    threads: int = 1
    """torch threads."""

    def __post_init__(self):
        for name in ("sft_demos", "sft_epochs", "pref_prompts", "rm_epochs", "ppo_iterations", "eval_prompts", "threads"):
            check_range(name, getattr(self, name), 1, integer=True)
        check_range("pref_k", self.pref_k, 2, integer=True)
        check_range("pref_temperature", self.pref_temperature, 0)
        check_range("ppo_lr", self.ppo_lr, 0, low_open=True)
        check_range("kl_coef", self.kl_coef, 0)

    @classmethod
    def quick(cls, **changes) -> RLHFConfig:
        """A small pipeline for tests and smoke runs (well under a minute)."""
        return cls(**{**dict(sft_demos=256, pref_prompts=200, rm_epochs=1, ppo_iterations=4, eval_prompts=64), **changes})


SMOKE_TEST = "--quick: sizes too small for these figures to mean anything; a check that the pipeline runs"
OUTPUTS = ("sft", "preferences-train.jsonl", "preferences-eval.jsonl", "rm", "ppo", "summary.json", "report.md",
           "curves.png", "frontier.png", "samples.md", "pipeline.json")
"""What the pipeline writes in its run directory (what ``resume=False`` removes; nothing else is touched)."""
RESUMABLE = ("threads", "eval_prompts", "ppo_iterations")
"""Fields that may change when a run is resumed (PPO continues to the new iteration count; evaluation reruns)."""
BEST_OF_N_PROMPTS = 64
"""Held-out prompts of the best-of-N curve (the first of those the table uses)."""


def check_resumable(config: RLHFConfig, out: str | Path) -> None:
    """Raise ``ValueError`` naming the differences when ``out`` holds a run made with another config."""
    saved = Path(out) / "pipeline.json"
    if not saved.is_file():
        return
    old, now = json.loads(saved.read_text()), config_dict(config)
    diff = [k for k in sorted(set(old) | set(now)) if k not in RESUMABLE and old.get(k) != now.get(k)]
    if diff:
        changes = ", ".join(f"{k}: {old.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise ValueError(f"{out} holds an RLHF run made with a different config ({changes}); replace it with "
                         f"--no-resume (resume=False), or choose a different --out")


def clear(out: str | Path) -> None:
    """Remove what an earlier run of the pipeline wrote in ``out`` (:data:`OUTPUTS`), and nothing else."""
    for name in OUTPUTS:
        path = Path(out) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _last_iteration(metrics: Path) -> int:
    if not metrics.is_file():
        return 0
    with metrics.open() as f:
        rows = list(csv.DictReader(f))
    return int(float(rows[-1]["iteration"])) if rows else 0


def finished_stages(config: RLHFConfig, out: str | Path) -> dict[str, bool]:
    """Which stages of a run in ``out`` are complete (a complete stage is skipped on resume)."""
    out = Path(out)
    return {
        "sft": (out / "sft" / "policy" / "config.json").is_file(),
        "preferences": all((out / f"preferences-{s}.jsonl").is_file() for s in ("train", "eval")),
        "rm": (out / "rm" / "metrics.json").is_file() and not (out / "rm" / "checkpoint").exists(),
        "ppo": (out / "ppo" / "policy" / "config.json").is_file()
               and _last_iteration(out / "ppo" / "metrics.csv") >= config.ppo_iterations,
    }


def run_rlhf(config: RLHFConfig, out: str | Path, progress: bool = True, resume: bool = True,
             smoke_test: bool = False) -> dict:
    """Run (or resume) the pipeline into ``out``; returns the summary that ``report.md`` shows.

    ``resume=False`` removes an earlier run's outputs from ``out`` first; with ``resume=True`` a run made with a
    different config (other than :data:`RESUMABLE`) is refused. ``smoke_test`` marks the console and the report
    as a check that the pipeline runs (``textenv rlhf --quick``), not a result.
    """
    import torch

    from agents.policies.lm import LMPolicy
    from agents.text.evaluation import best_of_n, eval_prompts, generate
    from agents.text.ppo import PPOConfig, train_ppo
    from agents.text.sft import SFTConfig, train_sft
    from textenv import world
    from textenv.rm import (
        RewardModelConfig,
        generate_preferences,
        label_stats,
        write_preferences,
    )
    from textenv.rm.train import train_reward_model
    from textenv.world import grammar

    out = Path(out)
    if resume:
        check_resumable(config, out)
    say = print if progress else (lambda *a, **k: None)
    say(f"run directory: {out}" + (" (replacing the run there)" if not resume and (out / "pipeline.json").exists() else ""))
    say(f"world cache:   {world.world_dir()}")
    if smoke_test:
        say(SMOKE_TEST)
    if not resume:
        clear(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(config_dict(config), indent=2) + "\n")
    torch.set_num_threads(config.threads)
    say("built-in world and proxy reward model (built on first use; `textenv build-world` does the same)")
    world.build_proxy(progress=progress)  # builds the world too: gymnasium.make("textenv/Sentiment-v1") is quick after
    base_path = world.lm_path(progress=progress)
    done = finished_stages(config, out)

    def stage(i: int, name: str, what: str, key: str, where: Path) -> None:
        say(f"[{i}/4] {name}: done already, skipped ({where})" if done[key] else f"[{i}/4] {name}: {what} ({where})")

    stage(1, "SFT", "supervised fine-tuning on positive demonstrations", "sft", out / "sft")
    sft_path = train_sft(SFTConfig(num_demos=config.sft_demos, epochs=config.sft_epochs, seed=config.seed,
                                   threads=config.threads), out / "sft", progress=progress)

    stage(2, "preferences", "K completions of the SFT model per prompt, ranked by noisy gold", "preferences",
          out / "preferences-{train,eval}.jsonl")
    held_out = eval_prompts()
    for split, prompts in (("train", grammar.sample_prompts(config.pref_prompts, seed=config.seed + 100)),
                           ("eval", held_out[-max(50, config.pref_prompts // 8):])):
        path = out / f"preferences-{split}.jsonl"
        if not path.exists():
            records = generate_preferences(sft_path, prompts, world.gold_sentiment, k=config.pref_k,
                                           temperature=config.pref_temperature, seed=config.seed + (split == "eval"),
                                           progress=progress)
            write_preferences(path, records)
    labels = label_stats(_load(out / "preferences-train.jsonl"), config.pref_temperature)

    stage(3, "reward model", "Bradley-Terry on those preferences, from the SFT model", "rm", out / "rm")
    rm_path = train_reward_model(RewardModelConfig(
        train_file=str(out / "preferences-train.jsonl"), eval_file=str(out / "preferences-eval.jsonl"),
        output_dir=str(out / "rm"), base_model=str(sft_path), epochs=config.rm_epochs, seed=config.seed,
        threads=config.threads), progress=progress, gold=world.gold_sentiment)
    rm_metrics = json.loads((Path(rm_path) / "metrics.json").read_text())

    stage(4, "PPO", "against the new reward model, KL to the SFT model", "ppo", out / "ppo")
    ppo = PPOConfig(model=str(sft_path), env_kwargs={"reward_model": str(rm_path)}, iterations=config.ppo_iterations,
                    prompts_per_iter=64, lr=config.ppo_lr, kl_coef=config.kl_coef, seed=config.seed, threads=config.threads)
    result = train_ppo(ppo, out / "ppo", progress=progress)

    say("evaluating base, SFT and PPO on held-out prompts")
    prompts = held_out[: config.eval_prompts]
    env_kwargs = {"reward_model": str(rm_path)}
    sft = LMPolicy.from_pretrained(sft_path)
    models = {"base": LMPolicy.from_pretrained(base_path), "SFT": sft, "PPO": result.policy}
    samples = {name: generate(policy, prompts, reference=sft, seed=config.seed + 1, env_kwargs=env_kwargs)
               for name, policy in models.items()}
    n_bon = min(BEST_OF_N_PROMPTS, len(prompts))
    bon = best_of_n(sft, prompts[:n_bon], seed=config.seed + 2, env_kwargs=env_kwargs)
    summary = {
        "smoke_test": smoke_test,
        "stages": {name: s.summary() for name, s in samples.items()},
        "eval_prompts": len(prompts),
        "best_of_n_prompts": n_bon,  # the first n_bon of the table's prompts, sampled afresh (another seed)
        "sft_on_best_of_n_prompts": {  # the SFT row's samples on those prompts; s.e. of a mean of n_bon samples
            **{k: float(np.mean(getattr(samples["SFT"], k)[:n_bon])) for k in ("proxy", "gold")},
            **{f"{k}_sem": float(np.std(getattr(samples["SFT"], k), ddof=1) / np.sqrt(n_bon)) for k in ("proxy", "gold")}},
        "reward_model": {k: rm_metrics[k] for k in ("accuracy", "gold_accuracy", "gold_spearman") if k in rm_metrics},
        "labels": {"agreement": labels.agreement, "bayes_accuracy": labels.bayes_accuracy},
        "best_of_n": bon,
        "ppo_seconds": result.rows[-1]["time_s"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    mark = " (--quick smoke test: too small to mean anything)" if smoke_test else ""
    plot_curves(result.rows, out / "curves.png", "PPO on textenv/Sentiment-v1 (built-in world)" + mark)
    plot_frontier({"PPO (training batches)": result.rows}, bon, out / "frontier.png", title=SMOKE_TEST if smoke_test else None)
    _write_samples(out / "samples.md", samples, n=8)
    _write_report(out / "report.md", config, summary)
    say((out / "report.md").read_text())
    if smoke_test:
        say(SMOKE_TEST)
    return summary


def _load(path):
    from textenv.rm import load_preferences

    return load_preferences(path)


def plot_curves(rows: list[dict], path: Path, title: str) -> None:
    """Proxy reward, gold reward and KL per iteration (three panels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [r["iteration"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for ax, key, label, color in zip(axes, ("proxy", "gold", "kl"), ("proxy reward (trained on)", "gold reward (true objective)",
                                                                    "KL to reference (nats / completion)"),
                                     ("tab:blue", "tab:orange", "tab:gray")):
        ax.plot(it, [r[key] for r in rows], color=color)
        ax.set(title=label, xlabel="iteration")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_frontier(runs: dict[str, list[dict]], bon: list[dict] | None, path: Path, points: dict | None = None,
                  title: str | None = None) -> None:
    """Reward against KL: each run's iterations as a trajectory, best-of-N as its analytic-KL curve.

    The KL axis is symmetric-log (linear below 0.1 nats, logarithmic above), so KL = 0 (best-of-1, the reference
    itself) sits at 0 and a small negative estimate of a sampled KL shows as it is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("gold", "proxy")):
        for name, rows in runs.items():
            ax.plot([r["kl"] for r in rows], [r[key] for r in rows], marker=".", alpha=0.7, label=name)
        if bon:
            ax.plot([b["kl"] for b in bon], [b[key] for b in bon], "k--o", label="best-of-N (N=1..)")
        for name, (kl, value) in (points or {}).get(key, {}).items():
            ax.scatter([kl], [value], marker="*", s=120, zorder=3, label=name)
        what = "gold reward (true sentiment)" if key == "gold" else "proxy reward (reward model)"
        ax.set_xscale("symlog", linthresh=0.1, linscale=0.5)
        ax.set(xlabel="KL to reference (nats / completion; symlog)", ylabel=what, title=f"{what} vs KL")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_samples(path: Path, samples: dict, n: int) -> None:
    names = list(samples)
    lines = ["# Samples on held-out prompts (same prompts for every model)", ""]
    for i in range(n):
        lines.append(f"**{samples[names[0]].prompts[i]}**")
        lines.append("")
        for name in names:
            s = samples[name]
            lines.append(f"- {name}: `{s.completions[i].strip()}` (proxy {s.proxy[i]:+.2f}, gold {s.gold[i]:+.2f})")
        lines.append("")
    path.write_text("\n".join(lines))


def _write_report(path: Path, config: RLHFConfig, summary: dict) -> None:
    stages = summary["stages"]
    n_bon, sft_same = summary.get("best_of_n_prompts", 64), summary.get("sft_on_best_of_n_prompts")
    lines = ["# RLHF on the built-in world", ""]
    if summary.get("smoke_test"):
        lines += [f"> **{SMOKE_TEST}.**", ""]
    n_eval = summary.get("eval_prompts", config.eval_prompts)
    lines += [
        (f"Held-out prompts ({n_eval}); proxy = the reward model trained in this run (stage 3); gold = the world's "
         "true sentiment; KL = summed log-ratio to the SFT model per completion."), "",
        "| model | proxy | gold (± s.e.) | KL to SFT | length |", "|---|---|---|---|---|",
    ]
    for name, s in stages.items():
        lines.append(f"| {name} | {s['proxy']:+.3f} | {s['gold']:+.3f} ± {s['gold_sem']:.3f} | {s['kl']:.2f} | {s['length']:.1f} |")
    lines += ["", "Best-of-N from the SFT model, chosen by the proxy (`frontier.png`; KL is the analytic "
              "log N − (N−1)/N):", "", "| N | proxy | gold | KL |", "|---|---|---|---|"]
    lines += [f"| {b['n']} | {b['proxy']:+.3f} | {b['gold']:+.3f} | {b['kl']:.2f} |" for b in summary["best_of_n"]]
    if sft_same:
        which = f"the same {n_bon} prompts" if n_bon >= n_eval else f"the first {n_bon} of the {n_eval} prompts"
        note = (f"Best-of-1 is the SFT model itself, but it need not match the SFT row: it is a fresh sample (another "
                f"seed) on {which}, so it differs by the prompts and by sampling noise (the standard error of a mean "
                f"of {n_bon} samples is about {sft_same.get('proxy_sem', float('nan')):.2f} for the proxy and "
                f"{sft_same.get('gold_sem', float('nan')):.2f} for gold). The SFT row's own samples on those {n_bon} "
                f"prompts score proxy {sft_same['proxy']:+.3f}, gold {sft_same['gold']:+.3f}.")
        lines += ["", note]
    rm = summary["reward_model"]
    lines += ["", f"Reward model (proxy): held-out accuracy {rm.get('accuracy', float('nan')):.3f} (label-noise ceiling "
              f"{summary['labels']['bayes_accuracy']:.3f}), accuracy against gold {rm.get('gold_accuracy', float('nan')):.3f}.",
              f"PPO training time: {summary['ppo_seconds']:.0f} s ({config.threads} thread(s)).", "",
              "Files: `curves.png`, `frontier.png`, `samples.md`, `ppo/metrics.csv`, `ppo/tb/` (TensorBoard), `summary.json`.", "",
              "Config: " + ", ".join(f"{f.name}={getattr(config, f.name)}" for f in fields(config)), ""]
    path.write_text("\n".join(lines))
