"""Training offline agents from a dataset, and fine-tuning one online.

A run directory is an :class:`agents.core.run.Run`: ``config.json``, ``metrics.csv`` and TensorBoard (one row per
``log_every`` gradient steps, with the evaluation where one was due), ``checkpoint/`` (written atomically;
resume continues bit-identically: networks, optimizers, LR schedules, the batch sampler and RNG states), and
``model.pt`` at the end.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.core.run import Run, check_range, set_rng_state
from agents.offline.data import ReplayBuffer


@dataclass
class OfflineResult:
    """A finished run: the trained algorithm, its metrics rows, its directory and its final evaluation."""

    algorithm: Any
    rows: list[dict[str, float]]
    path: Path
    final: dict[str, float] = field(default_factory=dict)


def evaluate_agent(agent, data, episodes: int, seed: int) -> dict[str, float]:
    """:func:`robotics.evaluation.evaluate` of ``agent.act`` on the dataset's env: mean/std return and D4RL score."""
    from robotics.evaluation import evaluate

    act = agent.episode_actor() if hasattr(agent, "episode_actor") else agent.act
    result = evaluate(act, data.env_id, episodes=episodes, seed=seed)
    row = {"eval_return": result.mean, "eval_return_std": result.std}
    if data.ref_min_score is not None and data.ref_max_score is not None:
        row["eval_score"] = float(data.normalized_score(result.mean))
    return row


def load_for(config):
    """The config's dataset, checked against its env."""
    import robotics  # noqa: F401  (registers the robotics ids)
    from robotics.datasets import load_dataset

    data = load_dataset(config.dataset)
    if data.env_id is None:
        raise ValueError(f"dataset {config.dataset!r} records no env id; it cannot be evaluated")
    data.check_env(data.env_id)
    return data


def _mean_rows(acc: dict[str, list[float]]) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in acc.items()}


def train_offline(config, run_dir: str | Path, data=None, resume: bool = True, progress: bool = True,
                  callback: Callable[[dict[str, float], Any], None] | None = None) -> OfflineResult:
    """Train ``config`` (any :mod:`agents.offline` config) for ``config.steps`` gradient steps on its dataset.

    ``data`` overrides loading ``config.dataset`` (it must match the env all the same). ``callback(row, agent)``
    runs after every metrics row. ``steps_per_s`` counts gradient steps (sampling included, evaluation not).
    """
    from tqdm.auto import tqdm

    torch.set_num_threads(config.threads)
    ignore = ("threads", "checkpoint_every", "eval_every", "eval_episodes", "log_every")
    run = Run(run_dir, config, ignore=ignore if config.schedule_spans_steps else (*ignore, "steps"))
    state = run.start(resume)
    if data is None:
        data = load_for(config)
    else:
        data.check_env(data.env_id)
    agent = config.create(data)
    sampler = agent.sampler(data) if hasattr(agent, "sampler") else ReplayBuffer.from_data(data, seed=config.seed)
    start, elapsed = 0, 0.0
    if state is not None:
        agent.load_state_dict(torch.load(run.checkpoint_dir / "policy.pt", weights_only=True))
        agent.load_trainer_state(state["trainer"])
        sampler.generator.set_state(state["sampler"])
        set_rng_state(state["rng"])  # create() seeded torch afresh
        start, elapsed = state["step"], state["elapsed"]
    run.begin()  # data, agent and state loaded: only now may resume=False remove the old checkpoint
    acc: dict[str, list[float]] = defaultdict(list)
    bar = tqdm(total=config.steps, initial=start, desc=f"{config.name} {data.dataset_id}", unit="step",
               disable=not progress, mininterval=1.0)
    final: dict[str, float] = {}
    try:
        tick = time.perf_counter()
        for step in range(start + 1, config.steps + 1):
            for k, v in agent.update(sampler.sample(config.batch_size)).items():
                acc[k].append(v)
            last = step == config.steps
            due_eval = bool(config.eval_every) and step % config.eval_every == 0
            due_checkpoint = step % config.checkpoint_every == 0
            if step % config.log_every and not (last or due_eval or due_checkpoint):
                continue
            elapsed += time.perf_counter() - tick
            row = {"iteration": step, **_mean_rows(acc), "steps_per_s": step / elapsed if elapsed else float("nan"),
                   "time_s": elapsed}
            acc.clear()
            if last or due_eval:
                row.update(evaluate_agent(agent, data, config.eval_episodes, config.seed))
                if last:
                    final = {k: row[k] for k in row if k.startswith("eval_")}
            if any(not math.isfinite(v) for k, v in row.items() if k.endswith("loss")):
                raise FloatingPointError(f"{config.name} diverged at step {step}: {row}")
            run.log(row)
            if callback is not None:
                callback(row, agent)
            bar.update(step - bar.n)
            if "eval_return" in row:
                bar.set_postfix(ret=f"{row['eval_return']:.1f}")
            if due_checkpoint or last:
                run.save(agent, {"trainer": agent.trainer_state(), "sampler": sampler.generator.get_state(),
                                 "step": step, "elapsed": elapsed})
            tick = time.perf_counter()
    finally:
        bar.close()
        run.close()
    torch.save(agent.state_dict(), run.path / "model.pt")
    if not final and run.rows:
        final = {k: v for k, v in run.rows[-1].items() if k.startswith("eval_")}
    return OfflineResult(agent, run.rows, run.path, final)


# ---------------------------------------------------------------- offline → online
@dataclass
class FinetuneSettings:
    """Online fine-tuning of an offline-trained agent (IQL's ``explore`` samples its Gaussian policy)."""

    online_steps: int = 100_000
    """Env steps online, one gradient step after each."""
    online_eval_every: int = 10_000
    """Env steps between evaluations."""
    online_eval_episodes: int = 10
    """Episodes per evaluation."""
    online_checkpoint_every: int = 10_000
    """Env steps between checkpoints."""
    online_actor_lr: float | None = None
    """A constant actor learning rate online (None: the config's ``actor_lr``; the offline cosine decay ends)."""

    def __post_init__(self):
        for name in ("online_steps", "online_eval_every", "online_eval_episodes", "online_checkpoint_every"):
            check_range(name, getattr(self, name), 1, integer=True)


def finetune_online(config, settings: FinetuneSettings, run_dir: str | Path, data=None, resume: bool = True,
                    progress: bool = True) -> tuple[OfflineResult, OfflineResult]:
    """Pre-train ``config`` offline (``run_dir/offline``), then keep training online (``run_dir/online``).

    The replay buffer starts as the whole dataset and grows by every online transition (``terminated`` is the
    terminal flag; a time limit bootstraps). Returns the offline and online results; the online rows have
    ``iteration`` = env steps, and row 0 is the offline policy's evaluation under the same protocol. A resumed
    online phase restarts the env from a reset (a faithful continuation, not a bit-identical replay).
    """
    from tqdm.auto import tqdm

    if not hasattr(config.algorithm, "explore"):
        raise TypeError(f"{config.algorithm.__name__} has no explore(); online fine-tuning supports IQL")
    data = data if data is not None else load_for(config)
    offline = train_offline(config, Path(run_dir) / "offline", data=data, resume=resume, progress=progress)
    agent = offline.algorithm
    run = Run(Path(run_dir) / "online", config, ignore=("steps", "threads", "checkpoint_every", "eval_every",
                                                        "eval_episodes", "log_every"))
    state = run.start(resume)
    buffer = ReplayBuffer.from_data(data, capacity=len(data) + settings.online_steps, seed=config.seed + 1)
    agent.schedulers.clear()
    for group in agent.actor_opt.param_groups:
        group["lr"] = settings.online_actor_lr if settings.online_actor_lr is not None else config.actor_lr
    env = gym.make(data.env_id)
    start = 0
    if state is not None:
        agent.load_state_dict(torch.load(run.checkpoint_dir / "policy.pt", weights_only=True))
        agent.load_trainer_state(state["trainer"])
        buffer.load_online_state(state["buffer"])
        start = state["step"]
    else:
        run.begin()
        run.log({"iteration": 0, **evaluate_agent(agent, data, settings.online_eval_episodes, config.seed)})
    obs, _ = env.reset(seed=config.seed * 10**6 + 7 + start)
    returns: list[float] = []
    ret = 0.0
    acc: dict[str, list[float]] = defaultdict(list)
    bar = tqdm(total=settings.online_steps, initial=start, desc=f"online {data.env_id}", unit="step",
               disable=not progress, mininterval=1.0)
    try:
        for step in range(start + 1, settings.online_steps + 1):
            action = agent.explore(obs)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            buffer.add(obs, action, float(reward), next_obs, terminated)
            ret += float(reward)
            obs = next_obs
            if terminated or truncated:
                returns.append(ret)
                ret = 0.0
                obs, _ = env.reset(seed=config.seed * 10**6 + 7 + step)
            for k, v in agent.update(buffer.sample(config.batch_size)).items():
                acc[k].append(v)
            if step % settings.online_eval_every == 0 or step == settings.online_steps:
                row = {"iteration": step, **_mean_rows(acc), "train_return": float(np.mean(returns[-10:])) if returns else float("nan"),
                       **evaluate_agent(agent, data, settings.online_eval_episodes, config.seed)}
                acc.clear()
                run.log(row)
                bar.update(step - bar.n)
                bar.set_postfix(ret=f"{row['eval_return']:.1f}")
            if step % settings.online_checkpoint_every == 0 or step == settings.online_steps:
                run.save(agent, {"trainer": agent.trainer_state(), "buffer": buffer.online_state(), "step": step})
    finally:
        bar.close()
        run.close()
        env.close()
    torch.save(agent.state_dict(), run.path / "model.pt")
    online = OfflineResult(agent, run.rows, run.path, {k: v for k, v in run.rows[-1].items() if k.startswith("eval_")})
    return offline, online
