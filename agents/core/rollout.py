"""Rollout collection from Gymnasium vector envs, one layout for every agent: tensors ``(T, N)``, time first.

Two ways to collect, for the two families of algorithms:

* :func:`collect_steps` — a fixed number of steps from every env, episodes running across calls (PPO on
  control tasks). Needs ``autoreset_mode`` ``SAME_STEP`` so that a finished episode's last observation is in
  ``info["final_obs"]``: where an episode is **truncated**, its value there is the ``bootstrap`` that GAE
  adds; where it is **terminated**, nothing is added.
* :func:`run_episodes` — exactly one whole episode per env (the K completions of a prompt for GRPO/RLOO, a
  batch of completions for LM PPO, a batch of bandit pulls). Steps after an env's episode ended are masked
  out (``valid``), whatever the env's autoreset mode; the text envs' ``"disabled"`` mode simply freezes them.

With a text env's KL shaping at ``kl_timing="end"`` the env adds an episode's summed KL terms to its last
step; :func:`run_episodes` puts each token's term back on its token (``info["reward_kl_tokens"]``), so the
rewards are those of ``kl_timing="step"``. :func:`collect_steps` leaves them where the env put them.

``terminated`` and ``truncated`` are kept apart throughout (CleanRL's ``done = terminated or truncated``
would drop the bootstrap on time limits). A single (non-vector) env is wrapped into a one-env
``SyncVectorEnv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from agents.policies.base import Policy
from textenv import supply_policy_logprobs


def as_vector_env(env) -> gym.vector.VectorEnv:
    """``env`` itself if it is a vector env, else a one-env ``SyncVectorEnv`` with same-step autoreset."""
    if isinstance(env, gym.vector.VectorEnv):
        return env
    if isinstance(env, gym.Env):
        return gym.vector.SyncVectorEnv([lambda: env], autoreset_mode=AutoresetMode.SAME_STEP)
    raise TypeError(f"expected a gymnasium Env or VectorEnv, got {type(env).__name__}")


def _supply(envs):
    """A function that hands the policy's log-probs to ``envs``' KL shaping before each step
    (:func:`textenv.supply_policy_logprobs`: through any wrappers, split among a ``SyncVectorEnv``'s sub-envs; it
    takes nothing when the env has no KL shaping or shapes in ``"reference"`` mode)."""
    return lambda logprobs: supply_policy_logprobs(envs, logprobs)


def _row_info(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s entries of a vector env's batched info dict (nested dicts, e.g. ``episode``, too)."""
    return {k: _row_info(v, i) if isinstance(v, dict) else v[i] for k, v in infos.items()
            if not k.startswith("_") and f"_{k}" in infos and infos[f"_{k}"][i]}


def _obs_tensor(obs) -> torch.Tensor | dict[str, torch.Tensor]:
    if isinstance(obs, dict):
        return {k: torch.as_tensor(v) for k, v in obs.items()}
    return torch.as_tensor(np.asarray(obs))


def _stack_obs(frames: list) -> torch.Tensor | dict[str, torch.Tensor]:
    if isinstance(frames[0], dict):
        return {k: torch.stack([f[k] for f in frames]) for k in frames[0]}
    return torch.stack(frames)


@dataclass
class EpisodeLog:
    """Finished episodes: return, length and the env's last info of each, in the order they ended."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)

    def mean(self, key: str, default: float = float("nan")) -> float:
        """Mean of ``info[key]`` over the episodes that report it."""
        values = [float(info[key]) for info in self.infos if key in info]
        return float(np.mean(values)) if values else default


@dataclass
class StepBatch:
    """``collect_steps`` output; every tensor ``(T, N)`` unless noted."""

    obs: torch.Tensor | dict[str, torch.Tensor]  # (T, N, ...)
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    bootstrap: torch.Tensor
    """V(final observation) where ``truncated``, else 0."""
    next_value: torch.Tensor
    """(N,) V of the observation after the last step."""
    episodes: EpisodeLog


@dataclass
class RolloutState:
    """What :func:`collect_steps` carries between calls: the current observation and running episode sums."""

    obs: Any
    returns: np.ndarray
    lengths: np.ndarray


def start_rollout(envs, seed: int | None = None) -> RolloutState:
    """Reset ``envs`` (seeded) and return the state :func:`collect_steps` continues from."""
    obs, _ = envs.reset(seed=seed)
    return RolloutState(obs, np.zeros(envs.num_envs), np.zeros(envs.num_envs, dtype=np.int64))


def collect_steps(envs, policy: Policy, n_steps: int, state: RolloutState) -> StepBatch:
    """Step every env ``n_steps`` times with ``policy`` (which must have a critic); ``state`` is updated."""
    mode = envs.metadata.get("autoreset_mode")
    if mode != AutoresetMode.SAME_STEP:
        raise ValueError(
            f"collect_steps needs a vector env with autoreset_mode=SAME_STEP (got {mode}); make it with "
            f"gym.make_vec(..., vector_kwargs={{'autoreset_mode': gym.vector.AutoresetMode.SAME_STEP}})"
        )
    supply = _supply(envs)
    N = envs.num_envs
    obs_frames, actions, logprobs, values, rewards, terms, truncs = [], [], [], [], [], [], []
    bootstrap = torch.zeros(n_steps, N)
    log = EpisodeLog()
    for t in range(n_steps):
        out = policy.act(state.obs)
        if out.value is None:
            raise ValueError("collect_steps needs a policy with a critic (act must return values)")
        if supply is not None:
            supply(out.dist_logprobs if out.dist_logprobs is not None else out.logprob)
        obs_frames.append(_obs_tensor(state.obs))
        next_obs, reward, terminated, truncated, infos = envs.step(out.action.numpy())
        actions.append(out.action)
        logprobs.append(out.logprob)
        values.append(out.value)
        rewards.append(torch.as_tensor(reward, dtype=torch.float32))
        terms.append(torch.as_tensor(terminated))
        truncs.append(torch.as_tensor(truncated))
        state.returns += reward
        state.lengths += 1
        finished = np.flatnonzero(terminated | truncated)
        if len(finished):
            final_info = infos.get("final_info", {})
            cut = [i for i in finished if truncated[i]]
            if cut:
                final_obs = infos["final_obs"]
                batch = np.stack([final_obs[i] for i in cut]) if not isinstance(final_obs[cut[0]], dict) else {
                    k: np.stack([final_obs[i][k] for i in cut]) for k in final_obs[cut[0]]}
                bootstrap[t, cut] = policy.value(batch).float()
            for i in finished:
                log.returns.append(float(state.returns[i]))
                log.lengths.append(int(state.lengths[i]))
                log.infos.append(_row_info(final_info, i) if final_info else {})
            state.returns[finished], state.lengths[finished] = 0.0, 0
        state.obs = next_obs
    return StepBatch(
        _stack_obs(obs_frames), torch.stack(actions), torch.stack(logprobs), torch.stack(values).float(),
        torch.stack(rewards), torch.stack(terms), torch.stack(truncs), bootstrap, policy.value(state.obs).float(), log,
    )


@dataclass
class EpisodeBatch:
    """``run_episodes`` output: one episode per env; tensors ``(T, N)`` with ``T`` the longest episode."""

    actions: torch.Tensor
    logprobs: torch.Tensor
    rewards: torch.Tensor
    valid: torch.Tensor
    """True on the steps of each env's episode, False after it ended."""
    terminated: torch.Tensor
    truncated: torch.Tensor
    first_obs: Any
    """The observation each episode started from (as the env returned it, numpy)."""
    final_obs: list
    """Each episode's last observation."""
    infos: list[dict[str, Any]]
    """Each episode's last info (for the text envs: prompt, completion, score, reward_gold, episode_kl, ...)."""
    values: torch.Tensor | None = None
    """``(T, N)`` values from ``act``, when the policy gave them."""

    @property
    def returns(self) -> torch.Tensor:
        """(N,) undiscounted episode returns."""
        return (self.rewards * self.valid).sum(0)

    @property
    def lengths(self) -> torch.Tensor:
        return self.valid.sum(0)


def run_episodes(envs, policy: Policy, seed: int | None = None, options: dict | None = None,
                 max_steps: int = 100_000) -> EpisodeBatch:
    """Reset every env (``seed``, ``options``, e.g. ``{"prompts": [...]}`` for the text envs) and play one
    episode in each with ``policy``; steps after an env's episode ended are masked out."""
    envs = as_vector_env(envs)
    supply = _supply(envs)
    N = envs.num_envs
    obs, _ = envs.reset(seed=seed, options=options)
    if hasattr(policy, "start"):
        policy.start(envs)
    first_obs = obs
    live = np.ones(N, dtype=bool)
    final_obs: list = [None] * N
    final_infos: list[dict] = [{} for _ in range(N)]
    actions, logprobs, values, rewards, valid, terms, truncs = [], [], [], [], [], [], []
    for _ in range(max_steps):
        out = policy.act(obs)
        if supply is not None:
            supply(out.dist_logprobs if out.dist_logprobs is not None else out.logprob)
        obs, reward, terminated, truncated, infos = envs.step(out.action.numpy())
        actions.append(out.action)
        logprobs.append(out.logprob)
        if out.value is not None:
            values.append(out.value)
        rewards.append(np.where(live, reward, 0.0))  # float64 until the KL terms of kl_timing="end" are spread
        valid.append(torch.as_tensor(live.copy()))
        terms.append(torch.as_tensor(live & terminated))
        truncs.append(torch.as_tensor(live & truncated))
        ended = np.flatnonzero(live & (terminated | truncated))
        for i in ended:
            same_step = "final_obs" in infos and infos["_final_obs"][i]
            final_obs[i] = infos["final_obs"][i] if same_step else (
                {k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i])
            final_infos[i] = _row_info(infos["final_info"] if same_step else infos, i)
        live[ended] = False
        if not live.any():
            break
        if hasattr(policy, "advance"):  # after the check: no forward for a step nobody takes
            policy.advance(out.action)
    else:
        raise RuntimeError(f"run_episodes: {int(live.sum())} episodes still running after max_steps={max_steps}")
    rewards = spread_end_kl(np.stack(rewards), final_infos)  # (T, N)
    return EpisodeBatch(
        torch.stack(actions), torch.stack(logprobs), torch.as_tensor(rewards, dtype=torch.float32), torch.stack(valid), torch.stack(terms),
        torch.stack(truncs), first_obs, final_obs, final_infos, torch.stack(values).float() if values else None,
    )


def concat_episodes(parts: list[tuple[EpisodeBatch, torch.Tensor]]) -> EpisodeBatch:
    """The episodes ``columns`` of each ``(batch, columns)`` of ``parts``, side by side in that order, as one
    :class:`EpisodeBatch` (shorter batches padded in time with invalid steps).

    >>> def one(reward):  # one env, one step
    ...     t = lambda x, d=torch.float32: torch.tensor([[x]], dtype=d)
    ...     return EpisodeBatch(t(0, torch.long), t(-1.0), t(reward), t(True, torch.bool), t(True, torch.bool),
    ...                         t(False, torch.bool), {"ids": np.array([[7]])}, [None], [{"r": reward}])
    >>> both = concat_episodes([(one(1.0), torch.tensor([0])), (one(2.0), torch.tensor([0]))])
    >>> both.returns.tolist(), both.first_obs["ids"].tolist(), [i["r"] for i in both.infos]
    ([1.0, 2.0], [[7], [7]], [1.0, 2.0])
    """
    T = max(b.actions.shape[0] for b, _ in parts)

    def cat(name):
        tensors = [getattr(b, name)[:, cols] for b, cols in parts]
        if any(t is None for t in tensors):
            return None
        return torch.cat([torch.nn.functional.pad(t, (0, 0, 0, T - t.shape[0])) for t in tensors], 1)

    def rows(obs, cols):
        cols = cols.numpy()
        return {k: v[cols] for k, v in obs.items()} if isinstance(obs, dict) else np.asarray(obs)[cols]

    firsts = [rows(b.first_obs, cols) for b, cols in parts]
    first_obs = ({k: np.concatenate([f[k] for f in firsts]) for k in firsts[0]} if isinstance(firsts[0], dict)
                 else np.concatenate(firsts))
    pick = lambda name: [getattr(b, name)[int(i)] for b, cols in parts for i in cols]  # noqa: E731
    return EpisodeBatch(cat("actions"), cat("logprobs"), cat("rewards"), cat("valid"), cat("terminated"),
                        cat("truncated"), first_obs, pick("final_obs"), pick("infos"),
                        None if parts[0][0].values is None else cat("values"))


def spread_end_kl(rewards: np.ndarray, infos: list[dict[str, Any]]) -> np.ndarray:
    """Rewards ``(T, N)`` of one episode per env, started together, with each episode's KL terms on their tokens.

    A text env's KL shaping with ``kl_timing="end"`` adds an episode's summed terms (``info["reward_kl"]``) to
    its last step and reports each token's (``info["reward_kl_tokens"]``); this moves them back, giving the
    rewards of ``kl_timing="step"``. Episodes without those entries are left as they are. Returns ``rewards``.

    >>> r = np.array([[0.0], [0.0], [1.0 - 0.6]])  # score 1 at the end, plus the summed KL terms −0.6
    >>> spread_end_kl(r, [{"reward_kl": -0.6, "reward_kl_tokens": np.array([-0.1, -0.2, -0.3])}])[:, 0].round(12).tolist()
    [-0.1, -0.2, 0.7]
    """
    for i, info in enumerate(infos):
        terms = info.get("reward_kl_tokens")
        if terms is None:
            continue
        n = len(terms)
        rewards[n - 1, i] -= float(info["reward_kl"])
        rewards[:n, i] += np.asarray(terms, dtype=np.float64)
    return rewards
