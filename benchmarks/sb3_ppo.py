"""PPO side by side with Stable-Baselines3 on a control task: same hyperparameters, same budget, alternating.

Both run SB3's PPO defaults (or the values given): ``n_steps``, ``batch_size``, ``epochs``, lr, γ, λ, clip,
``vf_coef``, ``max_grad_norm``, 64×64 tanh MLPs, state-independent log-std, one env, no normalisation unless
asked. Reports env steps/s and the final evaluation return (the shared protocol of
:mod:`robotics.evaluation`: deterministic actions, ``--eval-episodes`` episodes on fixed seeds) of each, and the ratio of steps/s ours / SB3.

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/sb3_ppo.py --env InvertedPendulum-v5 --steps 30720 --seeds 0 1

Timing covers ``learn`` on both sides (ours: ``train_control_ppo``, which also writes its CSV, checkpoints and
learning curve). Known differences: advantages are whitened over the whole rollout (SB3: per minibatch), the value
loss is ``½·MSE`` (SB3: ``MSE``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from robotics.evaluation import evaluate, evaluate_policy


def run_sb3(args, seed: int) -> dict:
    import gymnasium as gym
    from stable_baselines3 import PPO

    env = gym.make(args.env)
    model = PPO("MlpPolicy", env, n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.epochs,
                learning_rate=args.lr, gamma=args.gamma, gae_lambda=args.lam, seed=seed, device="cpu", verbose=0)
    tick = time.perf_counter()
    model.learn(args.steps)
    seconds = time.perf_counter() - tick
    ev = evaluate(lambda o: model.predict(o, deterministic=True)[0], args.env, args.eval_episodes, seed)
    steps = int(model.num_timesteps)  # SB3 rounds the budget up to whole rollouts
    return {"impl": "sb3", "seed": seed, "steps": steps, "steps_per_s": steps / seconds, "eval_mean": ev.mean,
            "eval_std": ev.std}


def run_ours(args, seed: int, out: Path) -> dict:
    from agents.control import ControlPPOConfig, train_control_ppo

    config = ControlPPOConfig(env_id=args.env, total_steps=args.steps, n_steps=args.n_steps, batch_size=args.batch_size,
                              epochs=args.epochs, lr=args.lr, gamma=args.gamma, lam=args.lam, seed=seed,
                              checkpoint_every=10**6)
    tick = time.perf_counter()
    result = train_control_ppo(config, out / f"ours-s{seed}", resume=False, progress=False)
    seconds = time.perf_counter() - tick
    ev = evaluate_policy(result.policy, args.env, args.eval_episodes, seed)
    steps = int(result.rows[-1]["steps"])  # ours rounds it down
    return {"impl": "ours", "seed": seed, "steps": steps, "steps_per_s": steps / seconds, "eval_mean": ev.mean,
            "eval_std": ev.std}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="InvertedPendulum-v5")
    parser.add_argument("--steps", type=int, default=30_720)
    parser.add_argument("--n-steps", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--lam", type=float, default=0.95)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--out", default="runs/bench_sb3_ppo")
    args = parser.parse_args(argv)
    if args.steps % args.n_steps:
        parser.error(f"--steps {args.steps} must be a multiple of --n-steps {args.n_steps} (both sides then run the same steps)")
    torch.set_num_threads(1)
    out = Path(args.out)
    rows = []
    for seed in args.seeds:
        for impl in (("sb3", "ours") if seed % 2 == 0 else ("ours", "sb3")):
            rows.append(run_sb3(args, seed) if impl == "sb3" else run_ours(args, seed, out))
            print(rows[-1], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    for impl in ("sb3", "ours"):
        group = [r for r in rows if r["impl"] == impl]
        print(f"{impl}: {np.mean([r['steps_per_s'] for r in group]):.0f} steps/s, eval "
              f"{np.mean([r['eval_mean'] for r in group]):.1f} (per seed {[round(r['eval_mean'], 1) for r in group]})")
    ratio = np.mean([r["steps_per_s"] for r in rows if r["impl"] == "ours"]) / np.mean(
        [r["steps_per_s"] for r in rows if r["impl"] == "sb3"])
    print(f"steps/s ours / SB3: {ratio:.2f}x")


if __name__ == "__main__":
    main()
