"""Sim-to-real in miniature: PPO on Hopper-v5 with and without domain randomization, tested on shifted physics.

Shows: ``robotics/Hopper-DR-v0`` (each episode draws each body's mass ×0.8–1.2, each geom's friction ×0.7–1.3,
each joint's damping ×0.8–1.2 and each actuator's gain ×0.9–1.1), ``ControlPPOConfig``, and the shared evaluation
protocol on the nominal model and on "real" dynamics outside (or, for friction −30%, at the edge of) the training
ranges, the same shift for every body/geom/actuator: mass +30%, friction −30%, and a harsher mass +50%, gain −20%.
Writes ``runs/examples/sim_to_real/returns.png``. About 13 minutes of one CPU core (2 × 200k steps; 784 s
of CPU time measured, longer in wall-clock time on a busy machine).

A demo of the pieces, not a result: at 200k steps Hopper barely hops and PPO's return varies by thousands
between seeds (987–3445 at 200k in ``benchmarks/ppo_hopper_1m.py``'s runs), so one seed cannot tell the two
training schemes apart. The study, 3 seeds and longer training with each physical scale swept inside and outside
the training ranges, is ``benchmarks/sim_to_real.py`` (``benchmarks/results/sim_to_real.{json,png}``): there,
randomization makes the policy much less sensitive to lower friction and somewhat to heavier bodies, at a large
cost on the nominal model and under the shifts that the nominal policy tolerates.

    MUJOCO_GL=egl python examples/sim_to_real.py
"""

import json
from pathlib import Path

import gymnasium as gym
import matplotlib
import numpy as np
import torch

import robotics  # noqa: F401  (registers robotics/Hopper-DR-v0)
from agents.control import ControlPPOConfig, train_control_ppo
from robotics import DomainRandomization
from robotics.evaluation import evaluate_policy

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

torch.set_num_threads(1)
out = Path("runs/examples/sim_to_real")
STEPS = 200_000
TESTS = {
    "nominal": {"mass": 1.0, "friction": 1.0, "damping": 1.0, "gain": 1.0},
    "mass +30%, friction −30%": {"mass": 1.3, "friction": 0.7, "damping": 1.0, "gain": 1.0},
    "mass +50%, gain −20%": {"mass": 1.5, "friction": 1.0, "damping": 1.0, "gain": 0.8},
}
results = {}
for name, env_id in (("trained on nominal", "Hopper-v5"), ("trained with randomization", "robotics/Hopper-DR-v0")):
    config = ControlPPOConfig(env_id=env_id, total_steps=STEPS, normalize_obs=True, normalize_reward=True,
                              anneal_lr=True, seed=0)
    policy = train_control_ppo(config, out / name.replace(" ", "_"), resume=False).policy
    results[name] = {}
    for test, fixed in TESTS.items():
        ev = evaluate_policy(policy, "Hopper-v5", episodes=10, seed=1,
                             make=lambda fixed=fixed: DomainRandomization(gym.make("Hopper-v5"), fixed=fixed))
        results[name][test] = (ev.mean, ev.std)
        print(f"{name:28s} on {test:26s}: {ev.mean:7.1f} ± {ev.std:6.1f}")

(out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
fig, ax = plt.subplots(figsize=(8, 4))
width = 0.38
for k, (name, row) in enumerate(results.items()):
    x = np.arange(len(TESTS)) + (k - 0.5) * width
    ax.bar(x, [m for m, _ in row.values()], width, yerr=[s for _, s in row.values()], label=name, capsize=3)
ax.set_xticks(np.arange(len(TESTS)), list(TESTS))
ax.set(ylabel="return (10 episodes, deterministic)", title=f"Hopper-v5 PPO, {STEPS // 1000}k steps, seed 0")
ax.legend()
fig.tight_layout()
fig.savefig(out / "returns.png", dpi=110)
print(f"wrote {out / 'returns.png'}")
print(f"{STEPS // 1000}k steps and one seed: a demo of the pieces, not a comparison of the two training schemes "
      "(seeds differ by more than the gap); the study is benchmarks/sim_to_real.py (3 seeds, longer training, "
      "shifts inside and outside the training ranges).")
