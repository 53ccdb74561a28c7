"""Language-conditioned control on the BabyAI tasks (:mod:`robotics.language`): behaviour cloning of the bot, then
PPO fine-tuning, and success rates on seen missions, held-out ones and paraphrases.

* :func:`train_language_bc` — cross-entropy on bot demonstrations (collected by
  :func:`robotics.language.collect_bot_episodes`
  or loaded from a Minari dataset), a run directory with metrics, atomic checkpoints and resume, like every
  trainer here.
* PPO fine-tuning is control PPO itself: ``ControlPPOConfig(env_id=..., env_kwargs={"observation": "tokens"},
  policy="rt1", init_policy=<BC run>/policy.pt)`` (:mod:`agents.control.ppo`).
* :func:`evaluate_success` — success rate and return of a policy on one split.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.core.run import Run, check_range
from agents.policies.language import check_policy_options, make_language_policy


@dataclass
class SuccessRate:
    """Evaluation on one split: success rate (with its binomial standard error) and mean return."""

    split: str
    episodes: int
    success: float
    mean_return: float

    @property
    def stderr(self) -> float:
        return float(np.sqrt(self.success * (1 - self.success) / self.episodes))


EVAL_SEED = 2**30
"""Evaluation episodes reset with seeds from here: far from any demonstration's (``seed·1_000_003 + k``)."""


def evaluate_success(policy, env_id: str, split: str = "train", episodes: int = 200, seed: int = EVAL_SEED,
                     deterministic: bool = False, batch: int = 32) -> SuccessRate:
    """Run ``episodes`` episodes of ``policy`` on ``env_id``'s ``split`` (token observations), ``batch`` envs
    stepped together; episode ``k`` resets with seed ``seed + k``, so every policy meets the same missions and
    layouts. Actions are sampled (BabyAI's evaluation samples too) unless ``deterministic``, from torch's generator
    seeded with ``seed`` inside a forked RNG state (the caller's is left as it was): the same call gives the same
    rate."""
    import gymnasium as gym

    import robotics  # noqa: F401  (registers the ids)

    check_range("episodes", episodes, 1, integer=True)
    check_range("batch", batch, 1, integer=True)
    envs = [gym.make(env_id, split=split, observation="tokens") for _ in range(min(batch, episodes))]
    successes, returns = [], []
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            obs = {i: env.reset(seed=seed + i)[0] for i, env in enumerate(envs)}
            running, next_episode = {i: 0.0 for i in obs}, len(envs)
            while obs:
                ids = sorted(obs)
                actions = policy.act(np.stack([obs[i] for i in ids]), deterministic=deterministic).action.numpy()
                for i, action in zip(ids, actions):
                    o, reward, terminated, truncated, info = envs[i].step(int(action))
                    running[i] += reward
                    if not (terminated or truncated):
                        obs[i] = o
                        continue
                    successes.append(info["success"])
                    returns.append(running[i])
                    running[i] = 0.0
                    if next_episode < episodes:
                        obs[i], _ = envs[i].reset(seed=seed + next_episode)
                        next_episode += 1
                    else:
                        del obs[i]
    finally:
        for env in envs:
            env.close()
    return SuccessRate(split, episodes, float(np.mean(successes)), float(np.mean(returns)))


@dataclass
class LanguageBCConfig:
    """Behaviour cloning of BabyAI's bot with an instruction-conditioned policy."""

    env_id: str = "robotics/BabyAI-GoToLocal-v0"
    """A :mod:`robotics.language` id."""
    policy: str = "rt1"
    """``"rt1"`` (transformer) or ``"film"`` (BabyAI's FiLM baseline)."""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """Size options of the policy (e.g. ``{"d_model": 64, "layers": 2}``)."""
    demos: int = 2000
    """Bot episodes on the ``train`` split to clone (ignored when ``dataset`` is given)."""
    noise: float = 0.0
    """Fraction of random actions in the demonstrations (collected ones)."""
    dataset: str | None = None
    """A local Minari dataset id to clone instead of collecting demonstrations."""
    steps: int = 2000
    """Gradient steps."""
    batch_size: int = 256
    """Transitions per step."""
    lr: float = 1e-3
    """Adam learning rate (cosine-decayed to 10 % over ``steps``)."""
    seed: int = 0
    """Seeds the demonstrations, the policy and the batches."""
    threads: int = 1
    """torch threads."""
    eval_episodes: int = 200
    """Episodes per split in the final evaluation (0: none)."""
    checkpoint_every: int = 500
    """Steps between checkpoints."""

    def __post_init__(self):
        for name in ("demos", "steps", "batch_size", "threads", "checkpoint_every"):
            check_range(name, getattr(self, name), 1, integer=True)
        check_range("eval_episodes", self.eval_episodes, 0, integer=True)
        check_range("lr", self.lr, 0, low_open=True)
        check_range("noise", self.noise, 0, 1)
        check_policy_options(self.policy, self.policy_kwargs)
        from robotics.language import LANGUAGE_IDS

        if self.env_id not in LANGUAGE_IDS:
            raise ValueError(f"env_id={self.env_id!r}: expected one of {list(LANGUAGE_IDS)}")
        if self.dataset is not None and self.noise:
            raise ValueError(f"noise={self.noise} with dataset={self.dataset!r}: noise is for collected "
                             f"demonstrations; a dataset's noise was set when it was collected")
        if self.dataset is not None:
            from robotics.datasets import _path, local_dataset_ids

            if not (_path(self.dataset) / "data" / "metadata.json").is_file():
                raise FileNotFoundError(f"dataset={self.dataset!r} is not a local dataset; local ones: "
                                        f"{local_dataset_ids() or 'none'} (textenv datasets collect-babyai)")


@dataclass
class LanguageBCResult:
    policy: Any
    rows: list[dict]
    path: Path
    evaluation: dict[str, SuccessRate]


def demonstrations(config: LanguageBCConfig, progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The (observations, actions) to clone and a summary (source, episodes, transitions, time)."""
    tick = time.perf_counter()
    if config.dataset is not None:
        from robotics.datasets import load_dataset

        data = load_dataset(config.dataset)
        if data.env_id != config.env_id:
            raise ValueError(f"dataset {config.dataset!r} was collected on {data.env_id!r}, not "
                             f"env_id={config.env_id!r}")
        obs, actions = data.observations, data.actions.reshape(-1).astype(np.int64)
        summary = {"source": config.dataset, "episodes": data.num_episodes}
    else:
        from robotics.language import collect_bot_episodes

        episodes, _, dropped = collect_bot_episodes(config.env_id, config.demos, seed=config.seed * 1_000_003,
                                                    noise=config.noise,
                                                    progress="bot demos" if progress else False)
        obs = np.concatenate([ep.observations[:-1] for ep in episodes])
        actions = np.concatenate([ep.actions for ep in episodes]).astype(np.int64)
        summary = {"source": "bot", "episodes": len(episodes), "dropped": dropped}
    return obs, actions, {**summary, "transitions": len(actions), "collect_s": time.perf_counter() - tick}


def train_language_bc(config: LanguageBCConfig, run_dir: str | Path, resume: bool = True,
                      progress: bool = True) -> LanguageBCResult:
    """Clone the bot into ``run_dir`` (``metrics.csv``, ``checkpoint/``, ``policy.pt``, ``evaluation.json``), then
    evaluate on the ``train``, ``heldout`` and ``paraphrase`` splits. Resuming restores the policy, optimizer,
    schedule, step and the metrics window, and draws the same batches, so a resumed run ends with the weights and
    metrics of an uninterrupted one (tested); the demonstrations are collected again from the seed (they are
    deterministic). ``steps`` is part of the run (the schedule decays over it): a resume with another is refused."""
    import json

    import gymnasium as gym
    from tqdm.auto import tqdm

    import robotics  # noqa: F401

    torch.set_num_threads(config.threads)
    run = Run(run_dir, config, ignore=("threads", "checkpoint_every", "eval_episodes"))
    state = run.start(resume)
    obs, actions, summary = demonstrations(config, progress)
    env = gym.make(config.env_id, observation="tokens")
    torch.manual_seed(config.seed)
    policy = make_language_policy(config.policy, env.observation_space, env.action_space, **config.policy_kwargs)
    env.close()
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / config.steps)))
    start, elapsed, losses, accs = 0, 0.0, [], []
    if state is not None:
        policy.load_state_dict(torch.load(run.checkpoint_dir / "policy.pt", weights_only=True))
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start, elapsed, losses, accs = state["step"], state["elapsed"], list(state["losses"]), list(state["accs"])
    run.begin()
    obs_t, act_t = torch.from_numpy(obs), torch.from_numpy(actions)
    rng = np.random.default_rng([config.seed, 17])
    for _ in range(start):  # the same batches as an uninterrupted run
        rng.integers(len(act_t), size=config.batch_size)
    bar = tqdm(total=config.steps, initial=start, desc=f"BC {config.policy} {config.env_id.split('/')[-1]}",
               unit="step", disable=not progress, mininterval=1.0)
    tick = time.perf_counter() - elapsed
    try:
        for step in range(start, config.steps):
            idx = torch.from_numpy(rng.integers(len(act_t), size=config.batch_size))
            logits = policy.action_logits(obs_t[idx])
            loss = torch.nn.functional.cross_entropy(logits, act_t[idx])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            accs.append((logits.argmax(-1) == act_t[idx]).float().mean().item())
            bar.update(1)
            if (step + 1) % 100 == 0 or step + 1 == config.steps:
                row = {"iteration": step + 1, "loss": float(np.mean(losses)), "accuracy": float(np.mean(accs)),
                       "lr": schedule.get_last_lr()[0], "time_s": time.perf_counter() - tick}
                run.log(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.3f}")
                losses, accs = [], []
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                run.save(policy, {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                                  "step": step + 1, "elapsed": time.perf_counter() - tick, "losses": losses,
                                  "accs": accs})
                torch.save(policy.state_dict(), run.path / "policy.pt")
    finally:
        bar.close()
        run.close()
    evaluation = {}
    if config.eval_episodes:
        evaluation = {split: evaluate_success(policy, config.env_id, split, config.eval_episodes)
                      for split in ("train", "heldout", "paraphrase")}
        (run.path / "evaluation.json").write_text(json.dumps(
            {"data": summary, **{s: vars(r) | {"stderr": r.stderr} for s, r in evaluation.items()}}, indent=2) + "\n")
    return LanguageBCResult(policy, run.rows, run.path, evaluation)
