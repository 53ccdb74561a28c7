"""The agents' subcommands of ``textenv``: ``train <algorithm>``, ``datasets``, ``rlhf``, ``bench``, ``best-of-n``.

``textenv train <algorithm>`` takes one ``--flag`` per field of the algorithm's config dataclass (``--lr``,
``--kl-coef``, ``--env-id``, ...; ``textenv train ppo --help`` lists them with their defaults), so the command
line and the Python API cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agents.cli.flags import add_config_flags, config_values, make_config, plain

ABOUT = {
    "ppo": "PPO on a text env: value head, GAE, KL-shaped reward",
    "grpo": "GRPO: K samples per prompt, (return − mean) / std; no critic",
    "rloo": "RLOO: K samples per prompt, leave-one-out baseline; no critic",
    "reinforce": "REINFORCE with the group mean as baseline; no critic",
    "sft": "supervised fine-tuning on demonstrations",
    "dpo": "direct preference optimisation against a frozen reference",
    "ppo-control": "PPO for MuJoCo control (e.g. Hopper-v5; the mujoco extra)",
    "bc": "behaviour cloning on an offline dataset (Minari format)",
    "td3bc": "TD3+BC on an offline dataset",
    "cql": "conservative Q-learning (CQL) on an offline dataset",
    "iql": "implicit Q-learning (IQL) on an offline dataset",
    "dt": "Decision Transformer on an offline dataset",
    "iql-online": "IQL offline, then online with the dataset as replay buffer",
    "bc-language": "behaviour cloning of BabyAI's bot with an instruction-conditioned policy (the babyai extra)",
}
"""One line per ``train`` algorithm (``textenv train --help``); one not listed shows its config's first doc line."""


def _algorithms() -> dict:
    from agents.control import ControlPPOConfig, train_control_ppo
    from agents.control.language import LanguageBCConfig, train_language_bc
    from agents.offline import ALGORITHMS as OFFLINE
    from agents.offline import train_offline
    from agents.text.dpo import DPOConfig, train_dpo
    from agents.text.pg import PGConfig, train_pg
    from agents.text.ppo import PPOConfig, train_ppo
    from agents.text.sft import SFTConfig, train_sft

    return {
        "ppo": (PPOConfig, train_ppo, {}),
        "grpo": (PGConfig, train_pg, {"estimator": "grpo"}),
        "rloo": (PGConfig, train_pg, {"estimator": "rloo"}),
        "reinforce": (PGConfig, train_pg, {"estimator": "reinforce"}),
        "sft": (SFTConfig, train_sft, {}),
        "dpo": (DPOConfig, train_dpo, {}),
        "ppo-control": (ControlPPOConfig, train_control_ppo, {}),
        "bc-language": (LanguageBCConfig, train_language_bc, {}),
        **{name: (config_cls, train_offline, {}) for name, config_cls in OFFLINE.items()},
    }


def _train(args) -> None:
    config_cls, fn, preset = _algorithms()[args.algorithm]
    config = make_config(args, config_cls, preset)
    out = Path(args.out or f"runs/{args.algorithm}")
    result = fn(config, out, resume=not args.no_resume)
    rows = getattr(result, "rows", None)
    if rows:
        last = rows[-1]
        keys = ("iteration", "steps", "return", "episode_return", "proxy", "gold", "kl", "beta", "eval_return", "eval_score",
                "steps_per_s", "time_s")
        shown = {k: round(v, 4) for k, v in last.items() if k in keys}
        print(f"last iteration: {shown}")
    for split, rate in (getattr(result, "evaluation", None) or {}).items():
        print(f"success on {split} missions: {rate.success:.3f} ± {rate.stderr:.3f} ({rate.episodes} episodes)")
    policy = out / "policy.pt" if (out / "policy.pt").exists() else out / "policy"
    print(f"run directory: {out} (metrics.csv, tb/, checkpoint/); trained policy: {policy}")


def _iql_online(args) -> None:
    from agents.offline import IQLConfig, finetune_online
    from agents.offline.train import FinetuneSettings

    values = config_values(args)
    online = {k: values.pop(k) for k in list(values) if k in {f.name for f in dataclasses.fields(FinetuneSettings)}}
    iql = make_config(args, IQLConfig, values=values)
    settings = make_config(args, FinetuneSettings, values=online)
    _, result = finetune_online(iql, settings, args.out, resume=not args.no_resume)
    first, last = result.rows[0], result.rows[-1]
    print(f"offline policy: return {first['eval_return']:.1f} (score {first.get('eval_score', float('nan')):.1f}); after "
          f"{last['iteration']} online steps: {last['eval_return']:.1f} (score {last.get('eval_score', float('nan')):.1f})")
    print(f"run directory: {args.out} (offline/, online/: metrics.csv, tb/, checkpoint/, model.pt)")


def _datasets_collect(args) -> None:
    from agents.offline.collect import CollectConfig, collect_datasets

    config = make_config(args, CollectConfig)
    summaries = collect_datasets(config, args.out or f"runs/collect-{config.env_id}")
    print("| id | steps | episodes | behaviour return | size MB |\n|---|---|---|---|---|")
    for did, s in summaries.items():
        if "skipped" in s:
            print(f"| {did} | (exists, kept; --overwrite true to replace) | | | |")
        else:
            print(f"| {did} | {s['steps']} | {s['episodes']} | {s['behaviour_return_mean']:.1f} | {s['size_mb']:.1f} |")


def _datasets_collect_babyai(args) -> None:
    from robotics.language import collect_language_datasets

    summaries = collect_language_datasets(args.env_id, args.episodes, seed=args.seed, noise=args.noise,
                                          kinds=tuple(args.kinds), overwrite=args.overwrite)
    print("| id | episodes | transitions | success | seconds |\n|---|---|---|---|---|")
    for did, s in summaries.items():
        if s.get("kept"):
            print(f"| {did} | (exists, kept; --overwrite to replace) | | | |")
        else:
            print(f"| {did} | {s['episodes']} | {s['transitions']} | {s['success']:.3f} | {s['collect_s']:.1f} |")


def _datasets_list(args) -> None:
    from robotics.datasets import dataset_info, datasets_root, local_dataset_ids

    ids = [i for i in local_dataset_ids() if i.startswith(args.prefix)]
    print(f"datasets under {datasets_root()} (MINARI_DATASETS_PATH):")
    if not ids:
        print("  none; make some with: textenv datasets collect --env-id Hopper-v5")
        return
    print("| id | env | steps | episodes | mean return | D4RL score | size MB |\n|---|---|---|---|---|---|---|")
    for did in ids:
        try:
            i = dataset_info(did)
        except (OSError, ValueError) as err:
            print(f"| {did} | unreadable: {err} | | | | | |")
            continue
        score = f"{i['normalized_mean']:.1f}" if "normalized_mean" in i else "—"
        print(f"| {did} | {i['env_id']} | {i['steps']} | {i['episodes']} | {i['mean_return']:.1f} | {score} | {i['size_mb']:.1f} |")


def _rlhf(args) -> None:
    from agents.text.pipeline import RLHFConfig, run_rlhf

    config = make_config(args, RLHFConfig, base=RLHFConfig.quick() if args.quick else RLHFConfig())
    run_rlhf(config, rlhf_out(args), resume=not args.no_resume, smoke_test=args.quick)


def rlhf_out(args) -> Path:
    """``--out``, else ``runs/rlhf`` (``runs/rlhf-quick`` with ``--quick``, so a smoke test never meets a real run)."""
    return Path(args.out or ("runs/rlhf-quick" if args.quick else "runs/rlhf"))


def _bench(args) -> None:
    from agents.cli.bench import BenchConfig, run_bench

    config = make_config(args, BenchConfig)
    run_bench(config, args.out)
    print((Path(args.out) / "results.md").read_text())
    print(f"wrote {Path(args.out) / 'results.md'}, results.json and frontier.png")


def _best_of_n(args) -> None:
    import torch

    from agents.policies.lm import LMPolicy
    from agents.text.evaluation import best_of_n, eval_prompts
    from textenv import world

    torch.set_num_threads(args.threads)
    policy = LMPolicy.from_pretrained(args.model or world.lm_path())
    rows = best_of_n(policy, eval_prompts(args.prompts), tuple(args.n), seed=args.seed, max_new_tokens=args.max_new_tokens)
    print("| N | proxy | gold | KL (analytic) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['proxy']:+.3f} | {r['gold']:+.3f} | {r['kl']:.3f} |")


def add_commands(sub) -> None:
    """Register the agents' subcommands on the ``textenv`` parser's subparsers."""
    from agents.cli.bench import BenchConfig
    from agents.offline import IQLConfig
    from agents.offline.collect import CollectConfig
    from agents.offline.train import FinetuneSettings
    from agents.text.pipeline import RLHFConfig

    p = sub.add_parser("train", help="train one agent: text, control or offline",
                       description="Train one agent. Each algorithm's flags are the fields of its config, with their "
                                   "defaults: `textenv train ALGORITHM --help`. A run directory (--out) holds "
                                   "config.json, metrics.csv, tb/ and checkpoint/; running the same command again "
                                   "resumes it.")
    algos = p.add_subparsers(dest="algorithm", required=True, title="algorithms", metavar="ALGORITHM")
    for name, (config_cls, _, preset) in _algorithms().items():
        about = ABOUT.get(name) or plain((config_cls.__doc__ or name).strip().splitlines()[0])
        a = algos.add_parser(name, help=about, description=about[0].upper() + about[1:] + ". Resumes by default.")
        a.add_argument("--out", default=None, help=f"run directory (default: runs/{name})")
        a.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists (it is "
                       "removed once the new run has loaded its env, policy and data)")
        add_config_flags(a, config_cls, preset)
        a.set_defaults(fn=_train)

    a = algos.add_parser("iql-online", help=ABOUT["iql-online"],
                         description="IQL pre-trained offline, then fine-tuned online with the dataset as its replay "
                                     "buffer. Resumes by default.")
    a.add_argument("--out", default="runs/iql-online", help="run directory (default: runs/iql-online)")
    a.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    add_config_flags(a, IQLConfig, {})
    add_config_flags(a, FinetuneSettings, {})
    a.set_defaults(fn=_iql_online)

    p = sub.add_parser("datasets", help="offline datasets (Minari): collect and list")
    ds = p.add_subparsers(dest="datasets_command", required=True)
    a = ds.add_parser("collect", help="train PPO, then write random/medium/expert/medium-replay/medium-expert",
                      description=(CollectConfig.__doc__ or "").strip())
    a.add_argument("--out", default=None, help="where the PPO run goes (default: runs/collect-<env-id>)")
    add_config_flags(a, CollectConfig, {})
    a.set_defaults(fn=_datasets_collect)
    a = ds.add_parser("collect-babyai", help="write BabyAI bot and noisy-bot demonstrations (the babyai extra)",
                      description="Run BabyAI's bot on a language-conditioned task's train split and write Minari "
                                  "datasets <namespace>/babyai-<level>/bot-v0 and noisy-bot-v0 (token observations, "
                                  "missions in textenv.json).")
    a.add_argument("--env-id", default="robotics/BabyAI-GoToLocal-v0", help="a robotics/BabyAI-*-v0 id")
    a.add_argument("--episodes", type=int, default=2000, help="episodes per dataset (default 2000)")
    a.add_argument("--noise", type=float, default=0.3, help="random-action probability of noisy-bot (default 0.3)")
    a.add_argument("--kinds", nargs="+", default=["bot", "noisy-bot"], choices=["bot", "noisy-bot"])
    a.add_argument("--seed", type=int, default=0, help="the k-th episode tried resets with seed + k (seeds stored)")
    a.add_argument("--overwrite", action="store_true", help="replace datasets that exist")
    a.set_defaults(fn=_datasets_collect_babyai)
    a = ds.add_parser("list", help="the local datasets with their size and returns")
    a.add_argument("--prefix", default="", help="only ids starting with this (e.g. robotics/hopper)")
    a.set_defaults(fn=_datasets_list)

    p = sub.add_parser("rlhf", help="SFT → preferences → RM → PPO, with a report",
                       description="The InstructGPT pipeline on the built-in world: SFT, preference data labelled "
                                   "by noisy gold, a reward model, PPO against it; a report puts gold beside every "
                                   "proxy number. Each finished stage is kept: running it again resumes.")
    p.add_argument("--out", default=None, help="run directory (default: runs/rlhf; runs/rlhf-quick with --quick)")
    quick = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in dataclasses.asdict(RLHFConfig.quick()).items()
                      if v != getattr(RLHFConfig(), k))
    p.add_argument("--quick", action="store_true", help=f"a smoke test ({quick}; about a minute): sizes far too "
                   "small for the figures to mean anything, to check that the pipeline runs")
    p.add_argument("--no-resume", action="store_true", help="start over in --out, replacing the run there (after "
                   "the flags have been checked)")
    add_config_flags(p, RLHFConfig)
    p.set_defaults(fn=_rlhf)

    p = sub.add_parser("bench", help="agents × seeds at equal budgets: table, frontier")
    p.add_argument("--out", default="runs/bench")
    add_config_flags(p, BenchConfig, {})
    p.set_defaults(fn=_bench)

    p = sub.add_parser("best-of-n", help="best-of-N by the proxy RM: proxy, gold and KL")
    p.add_argument("--model", default=None, help="policy to sample from (default: the built-in base LM)")
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--prompts", type=int, default=128, help="held-out prompts")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(fn=_best_of_n)
