"""Offline agents × Hopper-v5 datasets × seeds: D4RL-normalised scores of the final policies.

Trains every algorithm on every dataset (made by ``textenv datasets collect --env-id Hopper-v5``) for the same
number of gradient steps, evaluates the final policy with the shared protocol (10 seeded episodes, deterministic
actions) and writes ``benchmarks/results/offline_hopper.{json,md}``. Finished runs are kept in the JSON and
skipped when the script runs again, so it can be run in pieces::

    OMP_NUM_THREADS=1 python benchmarks/offline_hopper.py --algos bc td3bc iql --steps 5000 --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/offline_hopper.py --algos cql --steps 1000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ANCHORS = {"bc": 52.9, "td3bc": 59.3, "cql": 58.5, "iql": 66.3, "dt": 67.6}  # D4RL hopper-medium-v2, 1M steps


def main() -> None:
    from agents.offline import ALGORITHMS, train_offline
    from robotics.datasets import dataset_id, dataset_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--datasets", nargs="+", default=["random", "medium", "medium-replay", "expert"])
    parser.add_argument("--algos", nargs="+", default=list(ALGORITHMS))
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "offline_hopper.json"))
    parser.add_argument("--runs", default="runs/offline_hopper")
    args = parser.parse_args()

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else []
    done = {(r["algo"], r["dataset"], r["seed"], r["steps"]) for r in results}
    for kind in args.datasets:
        did = dataset_id(args.env, kind)
        for algo in args.algos:
            for seed in args.seeds:
                if (algo, did, seed, args.steps) in done:
                    continue
                config = ALGORITHMS[algo](dataset=did, steps=args.steps, seed=seed, eval_every=0,
                                          eval_episodes=args.eval_episodes, threads=args.threads,
                                          log_every=min(1000, args.steps), checkpoint_every=args.steps)
                result = train_offline(config, Path(args.runs) / f"{kind}_{algo}_s{seed}", resume=False, progress=False)
                row = {"algo": algo, "dataset": did, "seed": seed, "steps": args.steps, **result.final,
                       "steps_per_s": result.rows[-1]["steps_per_s"]}
                print(json.dumps(row), flush=True)
                results.append(row)
                out.write_text(json.dumps(results, indent=1) + "\n")
    write_table(results, out.with_suffix(".md"), {k: dataset_info(dataset_id(args.env, k)) for k in args.datasets})


def write_table(results: list[dict], path: Path, infos: dict) -> None:
    kinds = list(infos)
    algos = [a for a in ANCHORS if any(r["algo"] == a for r in results)]
    lines = ["| dataset (behaviour score) | " + " | ".join(f"{a} (steps)" for a in algos) + " |",
             "|---|" + "---|" * len(algos)]
    for kind in kinds:
        did = infos[kind]["id"]
        cells = []
        for algo in algos:
            rows = [r for r in results if r["algo"] == algo and r["dataset"] == did]
            if not rows:
                cells.append("—")
                continue
            steps = max(r["steps"] for r in rows)
            scores = [r["eval_score"] for r in rows if r["steps"] == steps]
            spread = f" ± {np.std(scores, ddof=1):.1f}" if len(scores) > 1 else ""
            cells.append(f"{np.mean(scores):.1f}{spread} ({steps // 1000}k, {len(scores)} seeds)")
        lines.append(f"| {kind} ({infos[kind].get('normalized_mean', float('nan')):.1f}) | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("D4RL hopper-medium-v2 anchors after 1M steps (orientation only): "
                 + ", ".join(f"{a} {v}" for a, v in ANCHORS.items()) + ".")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
