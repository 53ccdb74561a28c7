"""PPO on control tasks (MuJoCo, classic control): fixed-horizon rollouts from N envs, the same maths as the LM agents.

One iteration: ``n_steps`` steps of each of ``num_envs`` envs (:func:`agents.core.rollout.collect_steps`, which
bootstraps time-limit truncations with ``V(final_obs)``), rewards optionally scaled by a running std of the
discounted return (SB3's ``VecNormalize``), GAE, then :func:`agents.core.update.ppo_update` over minibatches of
``batch_size`` steps. Observation normalisation lives in the policy (:class:`agents.policies.mlp.RunningNorm`) so a
saved policy carries its statistics; they are updated after each update, so acting and learning within an
iteration see the same normalisation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers.utils import RunningMeanStd

from agents.core.advantages import gae, whiten
from agents.core.onpolicy import TrainResult
from agents.core.rollout import collect_steps, start_rollout
from agents.core.run import Run, check_range
from agents.core.update import UpdateSettings, ppo_update
from agents.policies.mlp import make_mlp_policy


@dataclass
class ControlPPOConfig:
    """PPO for control tasks (defaults: SB3's PPO defaults)."""

    env_id: str = "InvertedPendulum-v5"
    """Any registered Gymnasium id with a Box observation (MuJoCo tasks: ``pip install "textenv[mujoco]"``)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``gymnasium.make``."""
    total_steps: int = 100_000
    """Env steps to train for (all envs together)."""
    num_envs: int = 1
    """Envs stepped together (``SyncVectorEnv``; on 2 cores the async one is slower)."""
    n_steps: int = 2048
    """Steps per env per iteration."""
    batch_size: int = 64
    """Steps per minibatch."""
    epochs: int = 10
    """Passes over each rollout."""
    lr: float = 3e-4
    """Adam learning rate."""
    anneal_lr: bool = False
    """Decay the learning rate linearly to 0."""
    gamma: float = 0.99
    """Discount."""
    lam: float = 0.95
    """GAE λ."""
    clip: float = 0.2
    """Ratio clip ε."""
    value_clip: float | None = None
    """Value clipping (None: off, as SB3's default)."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    ent_coef: float = 0.0
    """Entropy bonus."""
    max_grad_norm: float = 0.5
    """Gradient clipping."""
    target_kl: float | None = None
    """Early stop of the epochs on approx KL."""
    normalize_obs: bool = False
    """Running observation normalisation inside the policy."""
    normalize_reward: bool = False
    """Scale rewards by a running std of the discounted return."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of the actor and the critic."""
    log_std_init: float = 0.0
    """Initial log std of the Gaussian policy."""
    policy: str = "mlp"
    """``"mlp"`` (the MLP actor-critic), or an instruction-conditioned policy for the BabyAI tasks' token
    observations (:mod:`agents.policies.language`): ``"rt1"`` or ``"film"``."""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """Size options of a ``"rt1"``/``"film"`` policy."""
    init_policy: str | None = None
    """A saved ``policy.pt`` of the same kind and size to start from (e.g. a behaviour-cloned one: fine-tuning)."""
    critic_warmup: int = 0
    """First iterations that train only the critic (``policy.critic``), the rest frozen: a cloned policy's value
    head starts untrained, and its first advantages are noise."""
    seed: int = 0
    """Seeds the policy, the envs and the minibatch order."""
    threads: int = 1
    """torch threads."""
    checkpoint_every: int = 10
    """Iterations between checkpoints."""
    gif: bool = False
    """At the end, write ``episode.gif`` of one deterministic episode (skipped where the machine cannot render)."""

    def __post_init__(self):
        for name in ("total_steps", "num_envs", "n_steps", "batch_size", "epochs", "threads", "checkpoint_every"):
            check_range(name, getattr(self, name), 1, integer=True)
        check_range("critic_warmup", self.critic_warmup, 0, integer=True)
        for name in ("lr", "clip", "max_grad_norm"):
            check_range(name, getattr(self, name), 0, low_open=True)
        check_range("gamma", self.gamma, 0, 1)
        check_range("lam", self.lam, 0, 1)
        check_range("vf_coef", self.vf_coef, 0)
        check_range("ent_coef", self.ent_coef, 0)
        from agents.policies.language import LANGUAGE_POLICIES, check_policy_options

        if self.policy not in ("mlp", *LANGUAGE_POLICIES):
            raise ValueError(f"policy={self.policy!r}: expected 'mlp' or one of {list(LANGUAGE_POLICIES)}")
        if self.policy == "mlp" and self.policy_kwargs:
            raise ValueError(f"policy_kwargs={self.policy_kwargs!r} are for 'rt1'/'film'; the MLP's size is hidden=")
        if self.policy != "mlp":
            check_policy_options(self.policy, self.policy_kwargs)
            if self.env_kwargs.get("observation") != "tokens":
                raise ValueError(f"policy={self.policy!r} reads a BabyAI task's token observation: pass env_kwargs="
                                 f"{{\"observation\": \"tokens\"}} with a robotics/BabyAI-*-v0 env_id; got "
                                 f"env_kwargs={self.env_kwargs!r}")
            if self.normalize_obs:
                raise ValueError(f"normalize_obs=True with policy={self.policy!r}: that policy reads token ids, which "
                                 f"must not be normalised")
            if self.gif:
                raise ValueError(f"gif=True with policy={self.policy!r}: record a BabyAI episode with "
                                 f"robotics.language.record_episode")
        if self.critic_warmup >= self.iterations:
            raise ValueError(f"critic_warmup={self.critic_warmup} leaves none of the {self.iterations} iterations to "
                             f"train the policy")
        if self.init_policy is not None and not Path(self.init_policy).is_file():
            raise FileNotFoundError(f"init_policy={self.init_policy!r}: no such file (a policy.pt a run wrote)")
        if self.num_envs * self.n_steps < self.batch_size:
            raise ValueError(f"batch_size={self.batch_size} is larger than a rollout of num_envs·n_steps="
                             f"{self.num_envs * self.n_steps} steps")
        import robotics  # noqa: F401  (registers the robotics ids)
        from robotics import check_env_id

        check_env_id(self.env_id)

    @property
    def iterations(self) -> int:
        return max(1, self.total_steps // (self.num_envs * self.n_steps))


class ReturnScaler:
    """Divides rewards by the running std of each env's discounted return (what SB3's ``VecNormalize`` does); the
    statistics are Gymnasium's ``RunningMeanStd`` (count starts at 1e-4 with variance 1, as SB3's and
    Gymnasium's ``NormalizeReward``)."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0):
        self.gamma, self.clip = gamma, clip
        self.ret = np.zeros(num_envs)
        self.stats = RunningMeanStd(shape=())

    def __call__(self, rewards: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """Scale ``(T, N)`` rewards in time order, updating the statistics."""
        out = torch.empty_like(rewards)
        for t in range(rewards.shape[0]):
            self.ret = self.ret * self.gamma + rewards[t].numpy()
            self.stats.update(self.ret)
            out[t] = (rewards[t] / float(np.sqrt(self.stats.var + 1e-8))).clamp(-self.clip, self.clip)
            self.ret[done[t].numpy()] = 0.0
        return out

    def state_dict(self) -> dict:
        return {"ret": self.ret.copy(), "mean": float(self.stats.mean), "var": float(self.stats.var),
                "count": float(self.stats.count)}

    def load_state_dict(self, state: dict) -> None:
        self.ret = state["ret"].copy()
        self.stats.mean, self.stats.var, self.stats.count = (np.float64(state[k]) for k in ("mean", "var", "count"))


def make_vector_env(config: ControlPPOConfig, wrap: Callable[[gym.Env], gym.Env] | None = None) -> gym.vector.VectorEnv:
    from robotics import make_env

    return gym.vector.SyncVectorEnv([lambda: make_env(config.env_id, wrap=wrap, **config.env_kwargs)] * config.num_envs,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def make_policy(config: ControlPPOConfig, observation_space: gym.Space, action_space: gym.Space):
    """The config's policy for the spaces, with ``init_policy``'s weights when given (names and shapes checked)."""
    if config.policy == "mlp":
        policy = make_mlp_policy(observation_space, action_space, value=True, hidden=config.hidden,
                                 log_std_init=config.log_std_init, normalize_obs=config.normalize_obs)
    else:
        from agents.policies.language import make_language_policy

        policy = make_language_policy(config.policy, observation_space, action_space, **config.policy_kwargs)
    if config.init_policy is not None:
        weights = torch.load(config.init_policy, weights_only=True)
        try:
            policy.load_state_dict(weights)
        except RuntimeError as err:
            raise ValueError(f"init_policy={config.init_policy!r} does not fit policy={config.policy!r} with "
                             f"{config.policy_kwargs or 'its default sizes'}: {err}") from None
    return policy


@contextmanager
def _critic_only(policy, active: bool):
    """While active, only ``policy.critic``'s parameters require gradients; each flag is restored afterwards."""
    flags = [(p, p.requires_grad) for p in policy.parameters()]
    if active:
        critic = {id(p) for p in policy.critic.parameters()}
        for p, _ in flags:
            p.requires_grad_(id(p) in critic)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def train_control_ppo(config: ControlPPOConfig, run_dir: str | Path, resume: bool = True, progress: bool = True,
                      callback: Callable[[dict[str, float], Any], None] | None = None,
                      wrap_env: Callable[[gym.Env], gym.Env] | None = None) -> TrainResult:
    """Train into ``run_dir`` (``metrics.csv``, ``tb/``, ``checkpoint/``, ``policy.pt``, ``learning_curve.png``).

    ``callback(row, policy)`` runs after every iteration; ``wrap_env`` wraps each bare env (inside the standard
    wrappers), e.g. to record what training saw.

    Resuming restores the policy (with its observation statistics), optimizer, reward scaler and iteration; the
    envs restart from a reset, so a resumed run is a faithful continuation, not a bit-identical replay. A resume
    with more ``total_steps`` extends the run, except with ``anneal_lr`` (the learning rate decays over the
    budget), where another budget is refused.
    """
    from tqdm.auto import tqdm

    torch.set_num_threads(config.threads)
    # a run may be extended (resumed with more total_steps), unless its learning rate anneals over them
    extendable = () if config.anneal_lr else ("total_steps",)
    run = Run(run_dir, config, ignore=(*extendable, "threads", "checkpoint_every", "gif"))
    state = run.start(resume)
    envs = make_vector_env(config, wrap_env)
    torch.manual_seed(config.seed)
    policy = make_policy(config, envs.single_observation_space, envs.single_action_space)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr, eps=1e-5, fused=True)
    scaler = ReturnScaler(config.num_envs, config.gamma) if config.normalize_reward else None
    start, elapsed, steps = 0, 0.0, 0
    if state is not None:
        policy.load_state_dict(torch.load(run.checkpoint_dir / "policy.pt", weights_only=True))
        optimizer.load_state_dict(state["optimizer"])
        start, elapsed, steps = state["iteration"], state["elapsed"], state["steps"]
        if scaler is not None:
            scaler.load_state_dict(state["scaler"])
            scaler.ret[:] = 0.0  # the envs restart from a reset: no episode is under way
    run.begin()  # envs, policy and state loaded: only now may resume=False remove the old checkpoint
    rollout = start_rollout(envs, seed=config.seed + 1000 * start)
    settings = UpdateSettings(config.epochs, config.batch_size, config.clip, config.value_clip, config.vf_coef,
                              config.ent_coef, config.max_grad_norm, config.target_kl)
    recent: list[float] = []
    bar = tqdm(total=config.iterations, initial=start, desc=f"PPO {config.env_id}", unit="iter", disable=not progress)
    try:
        for iteration in range(start, config.iterations):
            tick = time.perf_counter()
            if config.anneal_lr:
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * (1.0 - iteration / config.iterations)
            torch.manual_seed(config.seed * 1_000_003 + iteration)
            batch = collect_steps(envs, policy, config.n_steps, rollout)
            rewards = scaler(batch.rewards, batch.terminated | batch.truncated) if scaler else batch.rewards
            advantages, returns = gae(rewards, batch.values, batch.terminated, batch.truncated, batch.next_value,
                                      batch.bootstrap, config.gamma, config.lam)
            flat = {"obs": batch.obs.reshape(-1, *batch.obs.shape[2:]), "actions": batch.actions.reshape(-1, *batch.actions.shape[2:]),
                    "old_logprobs": batch.logprobs.reshape(-1), "old_values": batch.values.reshape(-1),
                    "advantages": whiten(advantages.reshape(-1)), "returns": returns.reshape(-1),
                    "mask": torch.ones(advantages.numel(), dtype=torch.bool)}
            with _critic_only(policy, iteration < config.critic_warmup):
                update = ppo_update(policy, optimizer, flat, settings, np.random.default_rng([config.seed, iteration]))
            if getattr(policy, "norm", None) is not None:
                policy.norm.update(flat["obs"])
            steps += config.num_envs * config.n_steps
            elapsed += time.perf_counter() - tick
            recent = (recent + batch.episodes.returns)[-20:]
            row = {"iteration": iteration + 1, "steps": steps, "episode_return": float(np.mean(recent)) if recent else float("nan"),
                   "episodes": len(batch.episodes.returns), **{k: v for k, v in update.items() if k != "skipped"},
                   "steps_per_s": steps / elapsed if elapsed else float("nan"), "time_s": elapsed}
            run.log(row)
            if callback is not None:
                callback(row, policy)
            bar.update(1)
            bar.set_postfix(ret=f"{row['episode_return']:.1f}")
            if (iteration + 1) % config.checkpoint_every == 0 or iteration + 1 == config.iterations:
                run.save(policy, {"optimizer": optimizer.state_dict(), "iteration": iteration + 1, "elapsed": elapsed,
                                  "steps": steps, "scaler": scaler.state_dict() if scaler else None})
                torch.save(policy.state_dict(), run.path / "policy.pt")  # after save's finiteness check
    finally:
        bar.close()
        run.close()
    plot_learning_curve(run.rows, run.path / "learning_curve.png", config.env_id)
    if config.gif:
        from robotics.render import record_gif

        record_gif(policy, config.env_id, run.path / "episode.gif", seed=config.seed)
    return TrainResult(policy, run.rows, run.path)


def plot_learning_curve(rows: list[dict], path: Path, title: str) -> None:
    """Mean training episode return (last 20 episodes) against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([r["steps"] for r in rows], [r["episode_return"] for r in rows])
    ax.set(xlabel="env steps", ylabel="episode return (last 20)", title=f"PPO on {title}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
