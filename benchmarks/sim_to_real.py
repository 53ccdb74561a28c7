"""Sim-to-real on Hopper-v5: PPO trained on nominal physics against PPO trained with domain randomization, both
evaluated on physics shifted inside and outside the randomization ranges.

Training (one run at a time, 1 torch thread): :func:`agents.control.train_control_ppo` with the settings of
``examples/sim_to_real.py`` and ``ppo_hopper_1m.py`` (SB3/CleanRL PPO defaults, observation and reward
normalisation, learning rate annealed to 0) on ``Hopper-v5`` ("nominal") and on ``robotics/Hopper-DR-v0``
("randomized": every episode draws each body's mass ×0.8–1.2, each geom's friction ×0.7–1.3, each joint's damping
×0.8–1.2, each actuator's gain ×0.9–1.1, independently per element), for every seed.

Evaluation: every final policy on ``DomainRandomization(gym.make("Hopper-v5"), fixed=shift)``, one physical scale
at a time (the same factor for every body / geom / joint / actuator) over a sweep that crosses the training range
and goes well beyond it, plus three combined shifts (the worst corner inside the ranges, and the example's two
shifts outside them); 10 deterministic episodes per point with the fixed reset seeds ``100_000 + k``
(:func:`robotics.evaluation.evaluate_policy`, seed 100).

Everything resumes: a run whose checkpoint reached its last iteration is loaded, not retrained (an interrupted
one continues from its checkpoint), and each evaluation point is written to the results JSON as soon as it is
measured and skipped next time (it is redone if the policy file changed). Writes
``benchmarks/results/sim_to_real.json`` (every episode return and length; per-seed means; mean, std (ddof 1),
min and max over seeds) and ``sim_to_real.png``. The study::

    OMP_NUM_THREADS=1 python benchmarks/sim_to_real.py                # 3 seeds × 2 conditions × 1M steps

The committed results are the same study at half that budget, which is what fitted the time we had with other
jobs busy on the machine (2-core CPU, one torch thread, 2026-12-08)::

    OMP_NUM_THREADS=1 python benchmarks/sim_to_real.py --steps 500000 --out runs/benchmarks/sim_to_real_500k

53 minutes in all: 7–9 minutes per 500k-step run (915–1,190 steps/s; 47 minutes for the six) and 35–70 s to
evaluate each policy on the 33 shifts (6 minutes). At those rates the 1M-step study takes about 1 h 45 min; on an
idle core (2,200–2,500 steps/s, ``ppo_hopper_1m.py``) about 50 minutes. A smoke run (20k steps, seed 0, both
ends of each sweep, 2 episodes; results in its ``--out`` folder; about 40 s)::

    OMP_NUM_THREADS=1 python benchmarks/sim_to_real.py --quick
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "sim_to_real.json"
CONDITIONS = {"nominal": "Hopper-v5", "randomized": "robotics/Hopper-DR-v0"}
PARAMS = ("mass", "friction", "gain", "damping")
SWEEP = {  # scales evaluated, one parameter at a time; the training ranges are RandomizationConfig()'s
    "mass": (0.5, 0.65, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4, 1.7, 2.0),
    "friction": (0.3, 0.5, 0.7, 0.85, 1.0, 1.15, 1.3, 1.5, 1.7),
    "gain": (0.6, 0.75, 0.9, 1.0, 1.1, 1.25, 1.4),
    "damping": (0.5, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0),
}
COMBINED = (  # all at once: the training ranges' worst corner, then the example's two shifts outside them
    {"mass": 1.2, "friction": 0.7, "damping": 1.2, "gain": 0.9},
    {"mass": 1.3, "friction": 0.7},
    {"mass": 1.5, "gain": 0.8},
)
EVAL_SEED = 100  # reset seeds 100_000 + k: the same initial states for every policy and every shift


def training_ranges() -> dict[str, tuple[float, float]]:
    from robotics.randomization import RandomizationConfig

    config = RandomizationConfig()
    return {name: tuple(getattr(config, name)) for name in PARAMS}


def point_key(shift: dict[str, float]) -> str:
    """``"mass=1.3,friction=0.7"`` (the scales that differ from 1, in ``PARAMS`` order), ``"nominal"`` for none."""
    parts = [f"{name}={shift[name]:g}" for name in PARAMS if shift.get(name, 1.0) != 1.0]
    return ",".join(parts) or "nominal"


def shift_points(quick: bool = False) -> dict[str, dict[str, float]]:
    """Every shift to evaluate, ``{key: {mass, friction, gain, damping}}`` (all four named: ``fixed={}`` would
    make ``DomainRandomization`` sample its training ranges instead of holding the nominal model)."""
    points = {}
    for name, scales in SWEEP.items():
        for scale in (scales[0], scales[-1]) if quick else scales:
            shift = {**dict.fromkeys(PARAMS, 1.0), name: scale}
            points[point_key(shift)] = shift
    points["nominal"] = dict.fromkeys(PARAMS, 1.0)
    for combined in COMBINED[:1] if quick else COMBINED:
        shift = {**dict.fromkeys(PARAMS, 1.0), **combined}
        points[point_key(shift)] = shift
    return points


def make_config(condition: str, steps: int, seed: int):
    from agents.control import ControlPPOConfig

    return ControlPPOConfig(env_id=CONDITIONS[condition], total_steps=steps, normalize_obs=True, normalize_reward=True,
                            anneal_lr=True, seed=seed, threads=1)


def _load_finished(config, run_dir: Path):
    """The policy of a run whose checkpoint reached its last iteration, or None (no run, or an unfinished one).

    Raises ``ValueError`` when the run went past ``config``'s budget or was trained with other settings, so that
    a policy is never reported under a budget or config it does not have."""
    import gymnasium as gym
    import torch

    from agents.core.run import CHECKPOINT, config_dict, read_marker
    from agents.policies.mlp import make_mlp_policy

    marker = read_marker(run_dir / CHECKPOINT)
    if marker is None:
        return None
    done = int(str(marker.get("progress", "iteration 0")).split()[-1])
    saved = json.loads((run_dir / CHECKPOINT / "config.json").read_text())
    if saved.get("total_steps") != config.total_steps:  # train_control_ppo would resume it, its lr schedule bent
        raise ValueError(f"{run_dir} holds a run of --steps {saved.get('total_steps')} ({done} iterations done), "
                         f"not {config.total_steps}; use another --out")
    if done < config.iterations:
        return None
    now, default = config_dict(config), config_dict(type(config)())  # a field added since: its default then
    diff = sorted(k for k in now if k not in ("total_steps", "threads", "checkpoint_every", "gif")
                  and saved.get(k, default[k]) != now[k])
    if diff:
        raise ValueError(f"{run_dir} was trained with other settings ({', '.join(diff)}); use another --out")
    env = gym.make(config.env_id)
    policy = make_mlp_policy(env.observation_space, env.action_space, value=True, hidden=config.hidden,
                             log_std_init=config.log_std_init, normalize_obs=config.normalize_obs)
    env.close()
    policy.load_state_dict(torch.load(run_dir / CHECKPOINT / "policy.pt", weights_only=True))
    return policy


def train_or_load(config, run_dir: Path, progress: bool = True) -> tuple[object, dict]:
    """The final policy of ``run_dir`` (trained, resumed, or loaded when finished) and its training record."""
    from agents.control import train_control_ppo
    from agents.core.run import CHECKPOINT

    run_dir = Path(run_dir)
    tick = time.perf_counter()
    policy = _load_finished(config, run_dir)
    trained = policy is None
    if trained:
        policy = train_control_ppo(config, run_dir, resume=True, progress=progress).policy
    with open(run_dir / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    record = {"env_id": config.env_id, "seed": config.seed, "steps": int(last["steps"]),
              "train_time_s": float(last["time_s"]), "steps_per_s": float(last["steps_per_s"]),
              "final_train_return": float(last["episode_return"]),
              "policy_sha256": hashlib.sha256((run_dir / CHECKPOINT / "policy.pt").read_bytes()).hexdigest()[:16]}
    if trained:
        record["wall_s_this_call"] = time.perf_counter() - tick
    return policy, record


def evaluate_shifts(policy, points: dict[str, dict[str, float]], episodes: int, seed: int = EVAL_SEED,
                    cached: dict | None = None, on_point=None, desc: str = "shifts") -> dict[str, dict]:
    """``{key: {"shift", "returns", "lengths", "mean", "std", "seed"}}`` for every point of ``points``: ``episodes``
    deterministic episodes of Hopper-v5 with the shift fixed. Entries of ``cached`` with the same episodes and
    seed are kept; ``on_point(key, entry)`` runs after each new point (to write results as they come)."""
    import gymnasium as gym
    from tqdm.auto import tqdm

    from robotics import DomainRandomization
    from robotics.evaluation import evaluate_policy

    out = {}
    for key, shift in tqdm(points.items(), desc=desc, unit="shift"):
        old = (cached or {}).get(key)
        if old is not None and len(old["returns"]) == episodes and old["seed"] == seed:
            out[key] = old
            continue
        ev = evaluate_policy(policy, "Hopper-v5", episodes=episodes, seed=seed,
                             make=lambda shift=shift: DomainRandomization(gym.make("Hopper-v5"), fixed=shift))
        out[key] = {"shift": shift, "returns": ev.returns, "lengths": ev.lengths, "mean": ev.mean, "std": ev.std,
                    "seed": seed}
        if on_point is not None:
            on_point(key, out[key])
    return out


def summarize(results: dict, seeds: list[int], points: dict[str, dict[str, float]]) -> dict:
    """Per shift and condition: the per-seed mean returns, their mean, std (ddof 1), min and max, and the share
    of episodes that ran to the 1000-step limit (did not fall)."""
    summary = {}
    for key, shift in points.items():
        row = {"shift": shift}
        for condition in CONDITIONS:
            evals = [results["evals"].get(f"{condition}_s{s}", {}).get(key) for s in seeds]
            evals = [(s, e) for s, e in zip(seeds, evals) if e is not None]
            if not evals:
                continue
            means = np.array([e["mean"] for _, e in evals])
            lengths = np.concatenate([e["lengths"] for _, e in evals])
            row[condition] = {"mean": float(means.mean()), "std": float(means.std(ddof=1)) if len(means) > 1 else 0.0,
                              "min": float(means.min()), "max": float(means.max()),
                              "per_seed": {str(s): e["mean"] for s, e in evals},
                              "full_length": float(np.mean(lengths >= 1000))}
        summary[key] = row
    return summary


def plot(results: dict, seeds: list[int], points: dict, path: Path, runs: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, ranges = results["summary"], results["meta"]["training_ranges"]
    colors = {"nominal": "C0", "randomized": "C3"}
    labels = {"nominal": "trained on nominal", "randomized": "trained with randomization"}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, name in zip(axes.flat, PARAMS):
        scales = sorted({shift[name] for shift in points.values()
                         if all(v == 1.0 for k, v in shift.items() if k != name)})
        keys = [point_key({name: s}) for s in scales]
        for condition, color in colors.items():
            rows = [summary[k].get(condition) for k in keys]
            xs = [s for s, r in zip(scales, rows) if r]
            rows = [r for r in rows if r]
            if not rows:
                continue
            ax.plot(xs, [r["mean"] for r in rows], "o-", color=color, label=f"{labels[condition]} (mean)")
            ax.fill_between(xs, [r["min"] for r in rows], [r["max"] for r in rows], color=color, alpha=0.18)
            for seed in seeds:
                ax.plot(xs, [r["per_seed"].get(str(seed), np.nan) for r in rows], color=color, lw=0.6, alpha=0.5)
        ax.axvspan(*ranges[name], color="0.85", zorder=0, label="training range (randomized)")
        ax.axvline(1.0, color="0.5", ls=":", lw=1)
        ax.set(xlabel=f"{name} scale (every element)", ylabel="return", title=f"{name} ×{ranges[name][0]:g}–{ranges[name][1]:g} in training")
        ax.grid(alpha=0.3)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=9)

    ax = axes.flat[4]  # the combined shifts, and the nominal model for reference
    keys = ["nominal"] + [k for k in summary if k.count(",") >= 1]
    x = np.arange(len(keys))
    for j, (condition, color) in enumerate(colors.items()):
        rows = [summary[k].get(condition) for k in keys]
        if not all(rows):
            continue
        pos = x + (j - 0.5) * 0.38
        means = np.array([r["mean"] for r in rows])
        ax.bar(pos, means, 0.38, color=color, alpha=0.7, label=labels[condition],
               yerr=[means - [r["min"] for r in rows], [r["max"] for r in rows] - means], capsize=3)
        for p, r in zip(pos, rows):
            ax.plot([p] * len(r["per_seed"]), list(r["per_seed"].values()), "k.", ms=4)
    ax.set_xticks(x, [k.replace(",", "\n") for k in keys], fontsize=7)
    ax.set(ylabel="return", title="combined shifts (bars: mean, whiskers: min–max over seeds)")
    ax.grid(alpha=0.3, axis="y")

    ax = axes.flat[5]  # training curves: what each condition saw while training (its own dynamics)
    for condition, color in colors.items():
        curves = []
        for seed in seeds:
            metrics = runs / f"{condition}_s{seed}" / "metrics.csv"
            if metrics.exists():
                with open(metrics) as f:
                    rows = list(csv.DictReader(f))
                curves.append(([int(r["steps"]) for r in rows], [float(r["episode_return"]) for r in rows]))
        if not curves:
            continue
        n = min(len(c[0]) for c in curves)
        steps, ys = np.array(curves[0][0][:n]), np.array([c[1][:n] for c in curves])
        ax.plot(steps, ys.mean(0), color=color, label=labels[condition])
        ax.fill_between(steps, ys.min(0), ys.max(0), color=color, alpha=0.18)
    ax.set(xlabel="env steps", ylabel="training return (last 20 episodes)",
           title="training curves (each on its own dynamics)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    meta = results["meta"]
    fig.suptitle(f"Hopper-v5 PPO, {meta['steps'] // 1000}k steps, seeds {seeds}: return on shifted physics "
                 f"({meta['episodes']} deterministic episodes per point; lines: mean and each seed, bands: min–max)")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_json(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--out", default=None, help="run folders (default runs/benchmarks/sim_to_real[_quick])")
    parser.add_argument("--results", default=None,
                        help=f"results JSON (the PNG goes beside it); default {RESULTS.relative_to(ROOT)}, "
                             "with --quick <out>/sim_to_real.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20k steps, seed 0, 2 points per "
                                                             "parameter, 2 episodes")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.episodes = 20_000, [0], 2
    out = Path(args.out or ("runs/benchmarks/sim_to_real" + ("_quick" if args.quick else "")))
    path = Path(args.results) if args.results else (out / "sim_to_real.json" if args.quick else RESULTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    points = shift_points(args.quick)

    import gymnasium
    import mujoco

    results = json.loads(path.read_text()) if path.exists() else {}
    results = {k: results[k] for k in ("runs", "evals") if "meta" in results}  # an older file's format: start over
    results["meta"] = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/sim_to_real.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "steps": args.steps, "seeds": args.seeds, "episodes": args.episodes, "eval_seed": EVAL_SEED,
        "torch_threads": torch.get_num_threads(), "training_ranges": training_ranges(),
        "sweep": {k: list(v) for k, v in SWEEP.items()}, "combined": list(COMBINED),
        "conditions": CONDITIONS, "versions": {"torch": torch.__version__, "gymnasium": gymnasium.__version__,
                                               "mujoco": mujoco.__version__},
        "note": "per-seed value = mean return of the policy's deterministic episodes; mean/std (ddof 1)/min/max "
                "over seeds; full_length = share of episodes that reached the 1000-step limit",
    }
    results.setdefault("runs", {})
    results.setdefault("evals", {})

    def save() -> None:
        results["summary"] = summarize(results, args.seeds, points)
        write_json(path, results)

    for seed in args.seeds:
        for condition in CONDITIONS:
            name = f"{condition}_s{seed}"
            config = make_config(condition, args.steps, seed)
            policy, record = train_or_load(config, out / name, progress=not args.no_progress)
            if "wall_s_this_call" not in record:  # loaded: keep the wall time of the call that trained it
                record["wall_s_this_call"] = results["runs"].get(name, {}).get("wall_s_this_call")
            stale = results["runs"].get(name, {}).get("policy_sha256") != record["policy_sha256"]
            results["runs"][name] = record
            print(json.dumps({"run": name, **record}), flush=True)
            if stale:
                results["evals"][name] = {}
            evals = results["evals"].setdefault(name, {})

            def on_point(key, entry, evals=evals):
                evals[key] = entry
                save()

            evaluate_shifts(policy, points, args.episodes, cached=evals, on_point=on_point, desc=name)
            save()
    save()
    plot(results, args.seeds, points, path.with_suffix(".png"), out)
    print_table(results["summary"])
    print(f"wrote {path} and {path.with_suffix('.png')}")


def print_table(summary: dict) -> None:
    print(f"{'shift':44s} {'trained on nominal':>22s} {'trained with randomization':>28s}")
    for key, row in summary.items():
        cells = [f"{row[c]['mean']:7.0f} ± {row[c]['std']:4.0f} [{row[c]['min']:5.0f}–{row[c]['max']:5.0f}]"
                 if c in row else "—" for c in CONDITIONS]
        print(f"{key:44s} {cells[0]:>22s} {cells[1]:>28s}")


if __name__ == "__main__":
    main()
