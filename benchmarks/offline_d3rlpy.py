"""Offline RL side by side with d3rlpy: BC, IQL and CQL on the same transitions, hyperparameters and evaluation.

For each algorithm and seed, ours runs and then d3rlpy's, each in a fresh process on ``--threads`` torch threads
(``OMP_NUM_THREADS`` too). Both train on the transitions of our loader (:func:`robotics.datasets.load_dataset`,
exported to an ``.npz`` for d3rlpy, see :func:`export_for_d3rlpy`) for the same number of gradient steps, and
both final policies are scored by :func:`robotics.evaluation.evaluate` in this venv on the same episode seeds
(d3rlpy's through its exported TorchScript policy). Reports gradient steps/s (ours: sampling and updates, no
evaluation; d3rlpy: its whole ``fit`` after the networks are built) and the D4RL-normalised score.

d3rlpy pins ``gymnasium==1.0.0``, so it lives in its own venv and runs ``offline_d3rlpy_side.py``::

    python -m venv venv-d3rlpy && venv-d3rlpy/bin/pip install torch==2.13.0 d3rlpy==2.8.1
    OMP_NUM_THREADS=1 python benchmarks/offline_d3rlpy.py --algos bc iql cql --steps 5000 --cql-steps 1000 --seeds 0 1 2

The hyperparameters are ours (the configs' defaults), mapped onto d3rlpy's names in :func:`d3rlpy_spec`;
:data:`MISMATCHES` lists what d3rlpy cannot be told to do our way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIDE = Path(__file__).resolve().parent / "offline_d3rlpy_side.py"
INSTALL = "python -m venv venv-d3rlpy && venv-d3rlpy/bin/pip install torch==2.13.0 d3rlpy==2.8.1"

MISMATCHES = {
    "bc": [],
    "iql": [
        ("actor std: d3rlpy parameterises log σ = −5 + 7·sigmoid(p), p = 0 (σ₀ = e^−1.5 ≈ 0.22); ours clamps a free "
         "log σ to [−5, 2], starting at 0 (σ₀ = 1)"),
        "actor weights exp(β·A): d3rlpy recomputes A with V after this step's value update; ours uses A from before it",
        ("Q and V: d3rlpy steps one Adam on Q-loss (sum over critics) + V-loss; ours two Adams, Q-loss averaged over "
         "critics (same update up to Adam's ε)"),
    ],
    "cql": [
        "order: d3rlpy updates critic, then temperature and actor; ours temperature, actor, then critic",
        "policy log σ bounds: d3rlpy [−20, 2], ours [−5, 2]",
        ("temperature loss (d: action dimension): d3rlpy −α·(log π − d), ours −log α·(log π − d) (gradient scaled "
         "by α; Adam mostly cancels it)"),
        ("terminal transitions ({terminal_share:.2f}% of these): d3rlpy's next observation is zeros, so the penalty's "
         "policy actions at s' differ there"),
        ("the conservative term is 5·(logsumexp − Q − 10) in d3rlpy (threshold 10, α fixed at 1): the same gradient, "
         "a shifted loss value"),
    ],
}


# ---------------------------------------------------------------- data
def export_for_d3rlpy(data, path: Path) -> dict:
    """Write ``data``'s transitions to ``path`` (npz), with the rows d3rlpy's ``MDPDataset`` needs to rebuild
    them exactly, and return a summary.

    d3rlpy (2.8.1) ends an episode at a ``terminals`` or ``timeouts`` flag; a terminated episode of ``T`` rows gives
    ``T`` transitions, any other ``T − 1`` (the last row has no next observation). So each episode that ends
    without a terminal gets a padding row (its final next observation, zero action and reward) with the timeout
    flag, and its last real transition keeps its next observation.
    """
    obs, acts, rews, terms, touts, pads = [], [], [], [], [], 0
    for k in range(data.num_episodes):
        ep = data.episode(k)
        T = ep.stop - ep.start
        if data.terminals[ep.start:ep.stop - 1].any():
            raise ValueError(f"episode {k} of {data.dataset_id} has a terminal before its end; d3rlpy would split it")
        terminal = bool(data.terminals[ep.stop - 1])
        o, a, r = data.observations[ep], data.actions[ep], data.rewards[ep]
        end_t, end_o = np.zeros(T, np.float32), np.zeros(T, np.float32)
        if terminal:
            end_t[-1] = 1.0
        else:  # a timeout, or an end without a flag: pad with the final next observation
            pads += 1
            o = np.concatenate([o, data.next_observations[ep.stop - 1][None]])
            a, r = np.concatenate([a, np.zeros_like(a[:1])]), np.concatenate([r, np.zeros(1, r.dtype)])
            end_t, end_o = np.zeros(T + 1, np.float32), np.zeros(T + 1, np.float32)
            end_o[-1] = 1.0
        for store, value in zip((obs, acts, rews, terms, touts), (o, a, r, end_t, end_o)):
            store.append(value)
    low, high = np.asarray(data.action_space.low), np.asarray(data.action_space.high)
    returns = data.episode_returns()
    np.savez(path, observations=data.observations, actions=data.actions, rewards=data.rewards,
             next_observations=data.next_observations, terminals=data.terminals,
             d3_observations=np.concatenate(obs), d3_actions=np.concatenate(acts), d3_rewards=np.concatenate(rews),
             d3_terminals=np.concatenate(terms), d3_timeouts=np.concatenate(touts),
             obs_mean=data.observations.mean(0), obs_std=data.observations.std(0),  # as OfflineAlgorithm computes them
             act_low=low.astype(np.float32), act_high=high.astype(np.float32))
    return {"transitions": len(data), "episodes": data.num_episodes, "terminals": int(data.terminals.sum()),
            "timeouts": int(data.timeouts.sum()), "padding_rows": pads,
            "return_spread": float(returns.max() - returns.min())}


# ---------------------------------------------------------------- configs
def our_config(algo: str, args, seed: int):
    from agents.offline import ALGORITHMS

    extra = {"backup_entropy": args.cql_backup == "soft"} if algo == "cql" else {}
    steps = args.cql_steps if algo == "cql" and args.cql_steps else args.steps
    return ALGORITHMS[algo](dataset=args.dataset, steps=steps, eval_every=0, eval_episodes=args.eval_episodes,
                            log_every=min(1000, steps), seed=seed, threads=args.threads, checkpoint_every=10**9,
                            **extra)


def d3rlpy_spec(config, summary: dict) -> dict:
    """Our config in d3rlpy's words: the keyword arguments of its ``*Config`` plus what the side script builds
    (256×256 ``VectorEncoderFactory`` for every network, ``StandardObservationScaler`` with our mean/std,
    ``MultiplyRewardScaler``, Adam with a cosine actor schedule for IQL)."""
    c, common = config, {"batch_size": config.batch_size}
    spec = {"algo": c.name, "steps": c.steps, "seed": c.seed, "threads": c.threads, "hidden": list(c.hidden),
            "normalize_obs": c.normalize_obs, "reward_multiplier": 1.0}
    if c.name == "bc":
        spec["kwargs"] = {**common, "learning_rate": c.lr, "policy_type": "deterministic"}
        return spec
    common.update(gamma=c.gamma, tau=c.tau, n_critics=2)
    if c.name == "iql":
        if c.deterministic or c.value_lr != c.critic_lr:
            raise ValueError("d3rlpy's IQL has a Gaussian actor and one learning rate for Q and V; keep "
                             f"deterministic=False and value_lr == critic_lr (got {c.deterministic}, {c.value_lr})")
        spread = summary["return_spread"]
        spec["reward_multiplier"] = 1000.0 / spread if c.normalize_reward and spread > 0 else 1.0
        spec["kwargs"] = {**common, "actor_learning_rate": c.actor_lr, "critic_learning_rate": c.critic_lr,
                          "expectile": c.expectile, "weight_temp": c.beta, "max_weight": c.max_weight}
    elif c.name == "cql":
        if c.cql_temperature != 1.0:
            raise ValueError(f"cql_temperature={c.cql_temperature}: d3rlpy's logsumexp has no temperature; use 1.0")
        spec["kwargs"] = {**common, "actor_learning_rate": c.actor_lr, "critic_learning_rate": c.critic_lr,
                          "temp_learning_rate": c.temperature_lr, "initial_temperature": c.initial_temperature,
                          "conservative_weight": c.conservative_weight, "n_action_samples": c.n_actions,
                          "soft_q_backup": c.backup_entropy, "max_q_backup": False,
                          # no Lagrange: α = 1 fixed, so the penalty is conservative_weight·(logsumexp − Q − threshold)
                          "alpha_learning_rate": 0.0, "initial_alpha": 1.0}
    else:
        raise ValueError(f"algo {c.name!r}: this benchmark maps bc, iql and cql")
    return spec


# ---------------------------------------------------------------- runs
def _subprocess(cmd: list[str], log: Path, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, check=False).returncode
    if rc:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}); last lines of {log}:\n{tail}")


def run_ours(config, run_dir: Path) -> dict:
    """``train_offline`` in a fresh process; steps/s and the final evaluation come from its last row."""
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = run_dir / "ours_spec.json"
    spec.write_text(json.dumps({"algo": config.name, "fields": dataclasses.asdict(config), "run_dir": str(run_dir)}))
    _subprocess([sys.executable, __file__, "--ours-worker", str(spec)], run_dir / "ours.log", config.threads)
    return json.loads((run_dir / "result.json").read_text())


def _ours_worker(spec_path: str) -> None:
    from agents.offline import ALGORITHMS
    from agents.offline.train import train_offline

    spec = json.loads(Path(spec_path).read_text())
    fields = {**spec["fields"], "hidden": tuple(spec["fields"]["hidden"])}
    config = ALGORITHMS[spec["algo"]](**fields)
    result = train_offline(config, spec["run_dir"], resume=False, progress=False)
    last = result.rows[-1]
    out = {"impl": "ours", "algo": config.name, "seed": config.seed, "steps": config.steps,
           "train_s": last["time_s"], "steps_per_s": last["steps_per_s"], **result.final}
    (Path(spec["run_dir"]) / "result.json").write_text(json.dumps(out, indent=2) + "\n")


def run_d3rlpy(spec: dict, python: str, run_dir: Path, data, episodes: int) -> dict:
    """The side script in d3rlpy's venv, then its TorchScript policy under our evaluation protocol."""
    import torch

    from robotics.evaluation import evaluate

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "d3rlpy_spec.json").write_text(json.dumps({**spec, "out_dir": str(run_dir)}, indent=2))
    _subprocess([python, str(SIDE), str(run_dir / "d3rlpy_spec.json")], run_dir / "d3rlpy.log", spec["threads"])
    result = json.loads((run_dir / "result.json").read_text())
    policy = torch.jit.load(result["policy"])

    def act(obs):
        with torch.inference_mode():
            return policy(torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1))[0].numpy()

    ev = evaluate(act, data.env_id, episodes=episodes, seed=spec["seed"])
    return {**result, "eval_return": ev.mean, "eval_return_std": ev.std,
            "eval_score": float(data.normalized_score(ev.mean))}


# ---------------------------------------------------------------- report
def _mean_std(values) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def format_table(runs: list[dict], args, meta: dict) -> str:
    lines = [(f"Offline RL, ours vs d3rlpy {meta['d3rlpy']}: `{args.dataset}` ({meta['data']['transitions']} "
              f"transitions), seeds {args.seeds}, {args.threads} torch thread(s), torch {meta['torch']}, "
              f"{meta['cpu']}; {args.eval_episodes} evaluation episodes per run (D4RL-normalised score, mean ± std "
              "over seeds)."), "",
             "| algo | steps | ours steps/s | d3rlpy steps/s | ours / d3rlpy | ours score | d3rlpy score |",
             "|---|---|---|---|---|---|---|"]
    for algo in args.algos:
        ours = [r for r in runs if r["algo"] == algo and r["impl"] == "ours"]
        theirs = [r for r in runs if r["algo"] == algo and r["impl"] == "d3rlpy"]
        if not ours or not theirs:
            continue
        sps_o, sps_d = np.mean([r["steps_per_s"] for r in ours]), np.mean([r["steps_per_s"] for r in theirs])
        score_o, score_d = _mean_std([r["eval_score"] for r in ours]), _mean_std([r["eval_score"] for r in theirs])
        lines.append(f"| {algo} | {ours[0]['steps']} | {sps_o:.0f} | {sps_d:.0f} | **{sps_o / sps_d:.2f}×** | "
                     f"{score_o} | {score_d} |")
    lines += ["", f"Command: `OMP_NUM_THREADS={args.threads} python {' '.join(meta['argv'])}`", "",
              ("Same transitions (d3rlpy's checked against ours), networks (256×256 ReLU), batch 256, learning rates, "
               "γ, τ, observation standardisation (our mean/std), IQL's reward scale and cosine actor schedule, CQL's "
               f"penalty (weight, sampled actions, no Lagrange). CQL backup: {args.cql_backup}. What differs:")]
    for algo in args.algos:
        notes = MISMATCHES[algo] + ([("hard backup: ours bootstraps from a sampled a' ~ π(s'), d3rlpy from its mean "
                                      "action tanh(μ(s'))")] if algo == "cql" and args.cql_backup == "hard" else [])
        share = 100 * meta["data"]["terminals"] / meta["data"]["transitions"]
        lines += [f"- {algo}: {m.format(terminal_share=share)}" for m in notes] or [f"- {algo}: nothing"]
    lines += ["", "d3rlpy's own timers, per step (sampling is a Python loop over transitions):"]
    for algo in args.algos:
        theirs = [r["metrics"] for r in runs if r["algo"] == algo and r["impl"] == "d3rlpy"]
        if theirs:
            lines.append(f"- {algo}: sample {1e3 * np.mean([m['time_sample_batch'] for m in theirs]):.1f} ms, update "
                         f"{1e3 * np.mean([m['time_algorithm_update'] for m in theirs]):.1f} ms")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="robotics/hopper/medium-v0")
    parser.add_argument("--algos", nargs="+", choices=("bc", "iql", "cql"), default=["bc", "iql", "cql"])
    parser.add_argument("--steps", type=int, default=5000, help="gradient steps per run")
    parser.add_argument("--cql-steps", type=int, default=None, help="gradient steps of CQL runs (default: --steps)")
    parser.add_argument("--cql-backup", choices=("soft", "hard"), default="soft",
                        help="soft: both subtract α·log π at s' (identical targets); hard: each library's default "
                             "(ours a sampled a', d3rlpy the mean action)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/offline_d3rlpy.json")
    parser.add_argument("--work-dir", default="runs/bench_offline_d3rlpy", help="run folders, logs and the npz")
    parser.add_argument("--d3rlpy-python", default="/work/venv-d3rlpy/bin/python")
    parser.add_argument("--ours-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ours_worker:
        return _ours_worker(args.ours_worker)
    if not Path(args.d3rlpy_python).is_file():
        sys.exit(f"no d3rlpy python at {args.d3rlpy_python}; create it from the repository root with\n    {INSTALL}\n"
                 "and pass --d3rlpy-python venv-d3rlpy/bin/python")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    from agents.offline.train import load_for

    torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    data = load_for(our_config(args.algos[0], args, args.seeds[0]))
    summary = export_for_d3rlpy(data, work / "transitions.npz")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs, specs = [], {}

    def save(meta: dict) -> None:  # after every run, so a crash keeps what finished
        out.write_text(json.dumps({"args": vars(args), "meta": meta, "d3rlpy_specs": specs, "mismatches": MISMATCHES,
                                   "runs": runs}, indent=2) + "\n")

    meta = {"torch": torch.__version__, "cpu": f"{os.cpu_count()}-core {platform.machine()}", "data": summary,
            "argv": ["benchmarks/offline_d3rlpy.py", *(argv if argv is not None else sys.argv[1:])]}
    for algo in args.algos:
        for seed in args.seeds:
            config = our_config(algo, args, seed)
            spec = {**d3rlpy_spec(config, summary), "npz": str((work / "transitions.npz").resolve())}
            specs[algo] = spec
            for impl in ("ours", "d3rlpy"):
                run_dir = (work / f"{algo}-s{seed}" / impl).resolve()
                runs.append(run_ours(config, run_dir) if impl == "ours" else
                            run_d3rlpy(spec, args.d3rlpy_python, run_dir, data, args.eval_episodes))
                print(json.dumps(runs[-1]), flush=True)
                if "d3rlpy" in runs[-1]:
                    meta["d3rlpy"] = runs[-1]["d3rlpy"]
                save(meta)
    table = format_table(runs, args, meta)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
