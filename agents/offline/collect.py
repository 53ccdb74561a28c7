"""D4RL-style dataset collection: train a PPO policy, keep what it saw, roll out its medium and expert stages.

One PPO run (:func:`agents.control.train_control_ppo`, CleanRL's MuJoCo settings) gives every dataset:

- ``random``: uniformly random actions.
- ``medium``: the policy at the first iteration whose training return reached ``medium_fraction`` of the way
  from the random to the expert reference return (D4RL: "about a third of expert"), acting stochastically.
- ``expert``: the final policy, acting stochastically.
- ``medium-replay``: every episode the training envs finished until that medium iteration.
- ``medium-expert``: ``medium`` followed by ``expert``.

Reference returns are D4RL's where :data:`robotics.evaluation.REFERENCE_RETURNS` has them; otherwise the random
one is measured and the expert one is the final policy's deterministic evaluation. Collection time, behaviour
returns and the PPO settings go into each dataset's ``textenv.json``.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agents.core.run import check_range


@dataclass
class CollectConfig:
    """What ``textenv datasets collect`` builds."""

    env_id: str = "Hopper-v5"
    """The task (a Gymnasium id with Box observations and actions)."""
    steps: int = 100_000
    """Transitions in each of ``random``, ``medium`` and ``expert`` (``medium-replay`` holds what training saw
    until the medium stage; ``medium-expert`` twice ``steps``)."""
    train_steps: int = 1_000_000
    """PPO env steps for the expert."""
    medium_fraction: float = 1 / 3
    """Where the medium policy stops, as a fraction of the way from random to expert return."""
    kinds: tuple[str, ...] = ("random", "medium", "expert", "medium-replay", "medium-expert")
    """Which datasets to write."""
    seed: int = 0
    """Seeds PPO and the collection episodes."""
    threads: int = 1
    """torch threads."""
    overwrite: bool = False
    """Replace datasets that already exist (otherwise they are kept and skipped)."""

    def __post_init__(self):
        from robotics.datasets import KINDS

        for name in ("steps", "train_steps", "threads"):
            check_range(name, getattr(self, name), 1, integer=True)
        check_range("medium_fraction", self.medium_fraction, 0, 1, low_open=True)
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"kinds={self.kinds!r}: expected a non-empty selection of {KINDS}")
        import robotics  # noqa: F401
        from robotics import check_env_id

        check_env_id(self.env_id)


def ppo_config(config: CollectConfig):
    """The PPO run behind the datasets (CleanRL's MuJoCo settings; 1M steps reach about 3300 on Hopper)."""
    from agents.control import ControlPPOConfig

    return ControlPPOConfig(env_id=config.env_id, total_steps=config.train_steps, normalize_obs=True,
                            normalize_reward=True, anneal_lr=True, seed=config.seed, threads=config.threads,
                            checkpoint_every=50)


def collect_datasets(config: CollectConfig, run_dir: str | Path, progress: bool = True) -> dict[str, dict]:
    """Collect ``config.kinds`` for ``config.env_id``; return ``{dataset_id: summary}``.

    The PPO run lives in ``run_dir/ppo`` (its ``policy.pt`` is the expert, ``medium_policy.pt`` beside it). It is
    always trained from the start, since ``medium-replay`` is everything it saw; datasets that already exist are
    skipped unless ``overwrite``.
    """
    import gymnasium as gym

    from agents.control import train_control_ppo
    from agents.policies.mlp import make_mlp_policy
    from robotics.datasets import (
        Episode,
        EpisodeRecorder,
        dataset_id,
        local_dataset_ids,
        rollout_episodes,
        write_dataset,
    )
    from robotics.evaluation import REFERENCE_RETURNS, evaluate_policy, random_return

    torch.set_num_threads(config.threads)
    run_dir = Path(run_dir)
    wanted = {kind: dataset_id(config.env_id, kind) for kind in config.kinds}
    existing = set(local_dataset_ids())
    todo = {k: i for k, i in wanted.items() if config.overwrite or i not in existing}
    summaries: dict[str, dict] = {}
    if not todo:
        return {i: {"skipped": "exists"} for i in wanted.values()}

    # ------------------------------------------------ the training run (what medium-replay is made of)
    recorded: list[Episode] = []
    snapshots: list[tuple[float, int, dict]] = []  # (training return, episodes recorded so far, policy state)

    def keep(row, policy):
        snapshots.append((row["episode_return"], len(recorded), copy.deepcopy(policy.state_dict())))

    tick = time.perf_counter()
    needs_policy = any(k != "random" for k in todo)
    ppo = ppo_config(config)
    if needs_policy:
        result = train_control_ppo(ppo, run_dir / "ppo", resume=False, progress=progress, callback=keep,
                                   wrap_env=lambda env: EpisodeRecorder(env, recorded))
        expert = result.policy
    train_time = time.perf_counter() - tick

    env = gym.make(config.env_id)
    if config.env_id in REFERENCE_RETURNS:
        ref_min, ref_max = REFERENCE_RETURNS[config.env_id]
        ref_source = "robotics.evaluation.REFERENCE_RETURNS (D4RL's for the locomotion tasks)"
    else:
        ref_min = random_return(config.env_id, episodes=20, seed=config.seed).mean
        if not needs_policy:
            raise ValueError(f"{config.env_id} has no reference returns; collecting only random data cannot set "
                             f"the expert reference. Add an expert dataset to kinds")
        ref_max = evaluate_policy(expert, config.env_id, episodes=10, seed=config.seed).mean
        ref_source = "measured (random actions; final PPO policy, deterministic)"

    def stochastic(policy):
        return lambda obs: policy.act(np.asarray(obs, dtype=np.float32)[None]).action[0].numpy()

    episodes: dict[str, list[Episode]] = {}
    behaviour: dict[str, dict] = {}
    if needs_policy:
        target = ref_min + config.medium_fraction * (ref_max - ref_min)
        reached = [i for i, (ret, _, _) in enumerate(snapshots) if np.isfinite(ret) and ret >= target]
        if not reached:
            best = max((s[0] for s in snapshots if np.isfinite(s[0])), default=float("nan"))
            raise RuntimeError(f"PPO never reached the medium return {target:.1f} (best training return {best:.1f}); "
                               f"raise train_steps={config.train_steps} or lower medium_fraction")
        medium_ret, medium_episodes, medium_state = snapshots[reached[0]]
        medium = make_mlp_policy(env.observation_space, env.action_space, value=True, hidden=ppo.hidden,
                                 log_std_init=ppo.log_std_init, normalize_obs=ppo.normalize_obs)
        medium.load_state_dict(medium_state)
        torch.save(medium_state, run_dir / "ppo" / "medium_policy.pt")
        behaviour["medium"] = {"iteration": reached[0] + 1, "training_return": medium_ret, "target_return": target}
        episodes["medium-replay"] = recorded[:medium_episodes]
        torch.manual_seed(config.seed)
        if {"medium", "medium-expert"} & set(todo):
            episodes["medium"] = rollout_episodes(env, stochastic(medium), config.steps, seed=config.seed * 10**6 + 1,
                                                  progress=progress and "medium")
        if {"expert", "medium-expert"} & set(todo):
            episodes["expert"] = rollout_episodes(env, stochastic(expert), config.steps, seed=config.seed * 10**6 + 2 * 10**5,
                                                  progress=progress and "expert")
        if "medium-expert" in todo:
            episodes["medium-expert"] = episodes["medium"] + episodes["expert"]
    if "random" in todo:
        env.action_space.seed(config.seed)
        episodes["random"] = rollout_episodes(env, lambda obs: env.action_space.sample(), config.steps,
                                              seed=config.seed * 10**6 + 4 * 10**5, progress=progress and "random")
    env.close()

    descriptions = {
        "random": "uniformly random actions",
        "medium": f"PPO stopped at {config.medium_fraction:.2f} of the way from random to expert return, stochastic",
        "expert": f"PPO after {config.train_steps} steps, stochastic",
        "medium-replay": "every episode PPO's training envs finished until the medium policy",
        "medium-expert": "the medium and expert datasets together",
    }
    for kind, did in todo.items():
        eps = episodes[kind]
        tick = time.perf_counter()
        returns = [e.ret for e in eps]
        extra = {"kind": kind, "env_id": config.env_id, "seed": config.seed, "reference_source": ref_source,
                 "behaviour_return_mean": float(np.mean(returns)), "behaviour_return_std": float(np.std(returns)),
                 "ppo_train_steps": config.train_steps if kind != "random" else None,
                 "ppo_train_time_s": round(train_time, 1) if kind != "random" else None, **behaviour.get(kind, {})}
        path = write_dataset(did, eps, config.env_id, ref_min, ref_max, algorithm_name=f"textenv PPO ({kind})",
                             description=descriptions[kind], overwrite=config.overwrite, extra_metadata=extra)
        size = sum(f.stat().st_size for f in path.glob("**/*") if f.is_file())
        summaries[did] = {**extra, "steps": int(sum(len(e) for e in eps)), "episodes": len(eps),
                          "size_mb": round(size / 2**20, 2), "write_time_s": round(time.perf_counter() - tick, 2)}
        (path / "data" / "textenv.json").write_text(json.dumps(summaries[did], indent=2) + "\n")
    for did in wanted.values():
        summaries.setdefault(did, {"skipped": "exists"})
    return summaries
