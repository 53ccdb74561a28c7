"""Our PPO for 1M steps on Hopper-v5, several seeds (not in CI; about 7 minutes per seed on one thread).

CleanRL's ``ppo_continuous_action.py`` settings: one env, 2048 steps per rollout, 32 minibatches of 64, 10 epochs,
lr 3e-4 annealed to 0, γ 0.99, λ 0.95, clip 0.2, observation and reward normalisation. The policy is evaluated
every 100k steps on 10 seeded episodes with deterministic actions. Published anchors at 1M steps: CleanRL PPO on
Hopper-v4 2383 ± 272, RL-Zoo PPO on Hopper-v3 2410.

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/ppo_hopper_1m.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    from agents.control import ControlPPOConfig, train_control_ppo
    from robotics.evaluation import evaluate_policy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-every", type=int, default=100_000)
    parser.add_argument("--out", default="runs/ppo_hopper_1m")
    args = parser.parse_args(argv)
    out = Path(args.out)
    results = []
    for seed in args.seeds:
        curve = []

        def callback(row, policy, curve=curve, seed=seed):
            if row["steps"] % args.eval_every < 2048 or row["iteration"] == config.iterations:
                ev = evaluate_policy(policy, args.env, episodes=10, seed=seed)
                curve.append({"steps": row["steps"], "eval_mean": ev.mean, "eval_std": ev.std,
                              "train_return": row["episode_return"], "steps_per_s": row["steps_per_s"]})
                print(seed, curve[-1], flush=True)

        config = ControlPPOConfig(env_id=args.env, total_steps=args.steps, normalize_obs=True, normalize_reward=True,
                                  anneal_lr=True, seed=seed, checkpoint_every=50)
        train_control_ppo(config, out / f"s{seed}", progress=False, callback=callback)
        results.append({"seed": seed, "curve": curve, "final": curve[-1]})
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    finals = [r["final"]["eval_mean"] for r in results]
    print(f"{args.env} after {args.steps} steps: {np.mean(finals):.0f} ± {np.std(finals, ddof=1) if len(finals) > 1 else 0:.0f} "
          f"over seeds {args.seeds} (per seed {[round(f) for f in finals]})")


if __name__ == "__main__":
    main()
