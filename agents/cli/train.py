"""The agents' subcommands of ``textenv``: ``train <algorithm>``, ``datasets``, ``rlhf``, ``bench``, ``best-of-n``.

``textenv train <algorithm>`` takes one ``--flag`` per field of the algorithm's config dataclass (``--lr``,
``--kl-coef``, ``--env-id``, ...; ``textenv train ppo --help`` lists them with their defaults), so the command
line and the Python API cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path


def _algorithms() -> dict:
    from agents.control import ControlPPOConfig, train_control_ppo
    from agents.text.dpo import DPOConfig, train_dpo
    from agents.offline import ALGORITHMS as OFFLINE
    from agents.offline import train_offline
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
        **{name: (config_cls, train_offline, {}) for name, config_cls in OFFLINE.items()},
    }


def _parse_value(kind):
    """An argparse ``type`` for a dataclass field annotation (``int``, ``float | None``, ``tuple[int, ...]``...)."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    optional = type(None) in typing.get_args(kind)
    base = args[0] if (optional or isinstance(kind, types.UnionType)) and args else kind
    if typing.get_origin(base) is tuple:
        inner = typing.get_args(base)[0]
        return lambda text: tuple(inner(x) for x in text.split(",") if x)
    if typing.get_origin(base) is dict:
        return json.loads
    if base is bool:
        return lambda text: text.lower() in ("1", "true", "yes", "on")

    def parse(text):
        if optional and text.lower() == "none":
            return None
        return base(text)

    return parse


def add_config_flags(parser: argparse.ArgumentParser, config_cls, preset: dict) -> None:
    """One ``--field-name`` per dataclass field, defaulting to the config's own default."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.name in preset:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f"cfg_{f.name}", type=_parse_value(hints[f.name]),
                            default=argparse.SUPPRESS, metavar=type(default).__name__.upper() if default is not None else "X",
                            help=f"default: {shown}")


def _config_from(args, config_cls, preset: dict):
    values = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
    return config_cls(**{**preset, **values})


def _train(args) -> None:
    config_cls, fn, preset = _algorithms()[args.algorithm]
    config = _config_from(args, config_cls, preset)
    out = Path(args.out or f"runs/{args.algorithm}")
    result = fn(config, out, resume=not args.no_resume)
    rows = getattr(result, "rows", None)
    if rows:
        last = rows[-1]
        keys = ("iteration", "steps", "return", "episode_return", "proxy", "gold", "kl", "beta", "eval_return", "eval_score",
                "steps_per_s", "time_s")
        shown = {k: round(v, 4) for k, v in last.items() if k in keys}
        print(f"last iteration: {shown}")
    policy = out / "policy.pt" if (out / "policy.pt").exists() else out / "policy"
    print(f"run directory: {out} (metrics.csv, tb/, checkpoint/); trained policy: {policy}")


def _iql_online(args) -> None:
    from agents.offline import IQLConfig, finetune_online
    from agents.offline.train import FinetuneSettings

    values = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
    online = {k: values.pop(k) for k in list(values) if k in {f.name for f in dataclasses.fields(FinetuneSettings)}}
    _, result = finetune_online(IQLConfig(**values), FinetuneSettings(**online), args.out, resume=not args.no_resume)
    first, last = result.rows[0], result.rows[-1]
    print(f"offline policy: return {first['eval_return']:.1f} (score {first.get('eval_score', float('nan')):.1f}); after "
          f"{last['iteration']} online steps: {last['eval_return']:.1f} (score {last.get('eval_score', float('nan')):.1f})")
    print(f"run directory: {args.out} (offline/, online/: metrics.csv, tb/, checkpoint/, model.pt)")


def _datasets_collect(args) -> None:
    from agents.offline.collect import CollectConfig, collect_datasets

    config = _config_from(args, CollectConfig, {})
    summaries = collect_datasets(config, args.out or f"runs/collect-{config.env_id}")
    print("| id | steps | episodes | behaviour return | size MB |\n|---|---|---|---|---|")
    for did, s in summaries.items():
        if "skipped" in s:
            print(f"| {did} | (exists, kept; --overwrite true to replace) | | | |")
        else:
            print(f"| {did} | {s['steps']} | {s['episodes']} | {s['behaviour_return_mean']:.1f} | {s['size_mb']:.1f} |")


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

    base = RLHFConfig.quick() if args.quick else RLHFConfig()
    values = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
    run_rlhf(dataclasses.replace(base, **values), args.out)


def _bench(args) -> None:
    from agents.cli.bench import BenchConfig, run_bench

    config = _config_from(args, BenchConfig, {})
    run_bench(config, args.out)
    print((Path(args.out) / "results.md").read_text())
    print(f"wrote {Path(args.out) / 'results.md'}, results.json and frontier.png")


def _best_of_n(args) -> None:
    import torch

    from agents.text.evaluation import best_of_n, eval_prompts
    from agents.policies.lm import LMPolicy
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

    p = sub.add_parser("train", help="train one agent (ppo, grpo, rloo, reinforce, sft, dpo on text envs; "
                                     "ppo-control on control tasks such as Hopper-v5; bc, td3bc, cql, iql, dt, "
                                     "iql-online on offline datasets); resumes by default")
    algos = p.add_subparsers(dest="algorithm", required=True)
    for name, (config_cls, _, preset) in _algorithms().items():
        a = algos.add_parser(name, help=f"{config_cls.__name__}{' ' + str(preset) if preset else ''}",
                             description=(config_cls.__doc__ or "").strip().splitlines()[0])
        a.add_argument("--out", default=None, help=f"run directory (default: runs/{name})")
        a.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists (it is "
                       "removed once the new run has loaded its env, policy and data)")
        add_config_flags(a, config_cls, preset)
        a.set_defaults(fn=_train)

    a = algos.add_parser("iql-online", help="IQL offline, then fine-tuned online with the dataset as its replay buffer",
                         description="IQL pre-trained offline, then online with a replay buffer")
    a.add_argument("--out", default="runs/iql-online", help="run directory (default: runs/iql-online)")
    a.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    add_config_flags(a, IQLConfig, {})
    add_config_flags(a, FinetuneSettings, {})
    a.set_defaults(fn=_iql_online)

    p = sub.add_parser("datasets", help="offline datasets in Minari format: collect (D4RL-style) and list")
    ds = p.add_subparsers(dest="datasets_command", required=True)
    a = ds.add_parser("collect", help="train PPO, then write random/medium/expert/medium-replay/medium-expert",
                      description=(CollectConfig.__doc__ or "").strip())
    a.add_argument("--out", default=None, help="where the PPO run goes (default: runs/collect-<env-id>)")
    add_config_flags(a, CollectConfig, {})
    a.set_defaults(fn=_datasets_collect)
    a = ds.add_parser("list", help="the local datasets with their size and returns")
    a.add_argument("--prefix", default="", help="only ids starting with this (e.g. robotics/hopper)")
    a.set_defaults(fn=_datasets_list)

    p = sub.add_parser("rlhf", help="SFT → preference data → reward model → PPO on the built-in world, with a report")
    p.add_argument("--out", default="runs/rlhf")
    p.add_argument("--quick", action="store_true", help="a small pipeline (under a minute) to check the setup")
    add_config_flags(p, RLHFConfig, {})
    p.set_defaults(fn=_rlhf)

    p = sub.add_parser("bench", help="agents × seeds at equal budgets → results table and frontier plot")
    p.add_argument("--out", default="runs/bench")
    add_config_flags(p, BenchConfig, {})
    p.set_defaults(fn=_bench)

    p = sub.add_parser("best-of-n", help="best-of-N sampling by the proxy reward model: proxy, gold, analytic KL")
    p.add_argument("--model", default=None, help="policy to sample from (default: the built-in base LM)")
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--prompts", type=int, default=128, help="held-out prompts")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(fn=_best_of_n)
