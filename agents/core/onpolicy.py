"""The on-policy training loop that PPO and REINFORCE/RLOO/GRPO share, on text envs and on small discrete envs.

One iteration: draw ``prompts_per_iter`` prompts (seeded by iteration), repeat each ``group_size`` times,
play one completion per env with :func:`agents.core.rollout.run_episodes` (the policy's KV cache while acting,
the env's KL shaping against the frozen reference fed with the log-probs the policy sampled from), score the
old policy in one teacher-forced pass, estimate advantages (GAE for PPO, the group baseline for the others),
and run :func:`agents.core.update.ppo_update`. Metrics per iteration (proxy reward, gold reward, KL, β, losses,
wall time) go to ``metrics.csv`` and TensorBoard; checkpoints are atomic and a run resumes where it stopped
with the same numbers as an uninterrupted one (tested).

An env id whose vector entry point is textenv's batched text env (``textenv/Sentiment-v1``, ``-v0``) gets an
:class:`agents.policies.lm.LMPolicy`; any other env id with a ``Box`` observation
(``textenv/Bandit-v0``, ``CartPole-v1``) gets an MLP policy (:func:`agents.policies.mlp.make_mlp_policy`: categorical
for discrete actions, Gaussian for continuous ones).

With LoRA (``lora_r > 0`` in PPO's and the group estimators' configs) the policy is built first and the env's KL
reference is the policy's own base with the adapter off (:func:`make_env_and_policy`): one copy of the weights.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.policies.lm import LMPolicy, LoRASettings, load_policy
from agents.policies.mlp import make_mlp_policy
from agents.core.rollout import EpisodeBatch, concat_episodes, run_episodes
from agents.core.run import Run, check_range
from agents.core.update import TrainingDiverged, UpdateSettings, ppo_update, score_old
from textenv.checkpoint import first_nonfinite
from textenv import kl_controller
from textenv.kl import kl_estimate


@dataclass
class OnPolicyConfig:
    """What every on-policy text agent is configured with (PPO and the group estimators add their own)."""

    env_id: str = "textenv/Sentiment-v1"
    """A registered Gymnasium id: a text env (batched through its vector entry point) or a small discrete env."""
    model: str | None = None
    """Name or path of the initial policy (and the env's tokenizer and KL reference); None: the env's default."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``gymnasium.make_vec`` (e.g. ``reward_model``, ``prompts``)."""
    iterations: int = 60
    """Rollout + update iterations."""
    prompts_per_iter: int = 32
    """Distinct prompts per iteration."""
    group_size: int = 1
    """Completions per prompt (K); the batch is ``prompts_per_iter · group_size`` episodes."""
    max_new_tokens: int = 24
    """Token cap of a completion."""
    temperature: float = 1.0
    """Sampling temperature while acting (log-probs are taken at the same temperature)."""
    lr: float = 1e-4
    """AdamW learning rate (constant)."""
    epochs: int = 4
    """Passes over each batch."""
    minibatch_rows: int = 16
    """Episodes (text) or steps (MLP) per minibatch; 0 = the whole batch."""
    clip: float = 0.2
    """PPO ratio clip ε."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm."""
    kl_coef: float = 0.05
    """β of the env's per-token KL shaping (0: none, and no reference model is loaded)."""
    kl_target: float | None = None
    """Adaptive β: target summed KL per completion (nats); None keeps β fixed."""
    kl_horizon: int = 10_000
    """Adaptive β horizon (episodes)."""
    kl_estimator: str = "k1"
    """Per-token KL estimator of the env's shaping: k1, k2, k3 or full."""
    kl_timing: str = "step"
    """When the env's reference scores the tokens: step (a forward per token) or end (one pass per finished
    completion; the same per-token KL, faster at real model sizes)."""
    kl_in_loss: bool = False
    """Put the KL in the update's loss (β·KL_t per token, estimator kl_estimator: k3 or k2) instead of the env's
    reward: the env then loads no reference model, and the reference scores each batch in one teacher-forced pass."""
    kl_clamp: float | None = 10.0
    """With kl_in_loss: clamp each token's KL term to ±kl_clamp (verl's ±10); None: unclamped."""
    max_episode_kl: float = 50.0
    """KL blow-up guard: a batch whose mean summed KL exceeds this is not trained on (reported, counted)."""
    max_skipped: int = 5
    """Stop the run (``TrainingDiverged``) after this many skipped updates (NaN/inf loss or KL blow-up)."""
    seed: int = 0
    """Seeds the policy's extra parameters, prompt draws, sampling and minibatch order."""
    threads: int = 1
    """torch threads (1 is fastest when anything else runs on a 2-core machine)."""
    checkpoint_every: int = 10
    """Iterations between checkpoints (and one at the end)."""

    def __post_init__(self):
        for name in ("iterations", "prompts_per_iter", "group_size", "max_new_tokens", "epochs", "kl_horizon",
                     "threads", "checkpoint_every"):
            check_range(name, getattr(self, name), 1, integer=True)
        check_range("minibatch_rows", self.minibatch_rows, 0, integer=True)
        check_range("max_skipped", self.max_skipped, 0, integer=True)
        for name in ("lr", "temperature", "max_grad_norm", "max_episode_kl"):
            check_range(name, getattr(self, name), 0, low_open=True)
        if self.clip is not None:  # None: a group loss type's own (PGConfig)
            check_range("clip", self.clip, 0, 1, low_open=True)
            if not self.clip < 1:  # the ratio is clipped to [1 − ε, 1 + ε]: ε ≥ 1 removes the lower clip
                raise ValueError(f"clip={self.clip!r} is out of range; expected a number > 0 and < 1")
        check_range("ent_coef", self.ent_coef, 0)
        check_range("kl_coef", self.kl_coef, 0)
        if self.kl_target is not None:
            check_range("kl_target", self.kl_target, 0, low_open=True)
            if not self.kl_coef > 0:
                raise ValueError("kl_target (adaptive β) needs an initial kl_coef > 0")
        if self.kl_estimator not in ("k1", "k2", "k3", "full"):
            raise ValueError(f"kl_estimator={self.kl_estimator!r}; expected one of k1, k2, k3, full")
        if self.kl_timing not in ("step", "end"):
            raise ValueError(f"kl_timing={self.kl_timing!r}; expected step or end")
        if self.kl_clamp is not None:
            check_range("kl_clamp", self.kl_clamp, 0, low_open=True)
        if self.kl_in_loss:
            if self.kl_estimator not in ("k2", "k3"):
                raise ValueError(
                    f"kl_estimator={self.kl_estimator!r} with kl_in_loss; expected k3 (TRL's and verl's) or k2 (its "
                    f"gradient is the exact reverse-KL gradient on-policy): k1 in the loss has zero expected gradient "
                    f"(E_π[∇log π] = 0), and full needs whole distributions the update does not keep")
            if self.kl_target is not None:
                raise ValueError("kl_target (adaptive β) is for the KL in the reward; with kl_in_loss β stays "
                                 "kl_coef (set kl_target=None)")
        owned = {"max_new_tokens": "max_new_tokens", "kl_coef": "kl_coef", "kl_target": "kl_target",
                 "kl_horizon": "kl_horizon", "kl_estimator": "kl_estimator", "kl_timing": "kl_timing", "model": "model",
                 "kl_temperature": "temperature"}
        clash = sorted(k for k in self.env_kwargs if k in owned)
        if clash:
            raise ValueError(f"env_kwargs sets {clash}; set the config fields {[owned[k] for k in clash]} instead "
                             f"(the agent and its evaluation read them)")
        if self.env_kwargs.get("kl_mode", "policy") != "policy":
            raise ValueError(f"env_kwargs kl_mode={self.env_kwargs['kl_mode']!r}: these agents supply their log-probs, "
                             f"so the env's KL shaping must be in 'policy' mode (the exact per-token KL)")
        if self.env_id not in gym.registry:
            import textenv  # noqa: F401  (registers the textenv ids)
        if self.env_id not in gym.registry:
            known = sorted(k for k in gym.registry if k.startswith("textenv/"))
            raise ValueError(f"env_id={self.env_id!r} is not registered; textenv ids: {known}")

    @property
    def batch_size(self) -> int:
        """Episodes per iteration."""
        return self.prompts_per_iter * self.group_size

    @property
    def is_text(self) -> bool:
        """A text env: its vector entry point is textenv's batched text env (``CartPole-v1`` has one too)."""
        from textenv.registration import is_text_env

        return is_text_env(self.env_id)

    def update_settings(self) -> UpdateSettings:
        return UpdateSettings(self.epochs, self.minibatch_rows, self.clip, None, 0.0, self.ent_coef, self.max_grad_norm,
                              **self.kl_loss_settings())

    def kl_loss_settings(self) -> dict:
        """The :class:`~agents.core.update.UpdateSettings` fields of the KL in the loss (β 0 without it)."""
        if not self.kl_in_loss:
            return dict(max_tokens=self.max_new_tokens)
        return dict(kl_coef=self.kl_coef, kl_estimator=self.kl_estimator, kl_clamp=self.kl_clamp,
                    max_tokens=self.max_new_tokens)

    def advantages(self, episodes: EpisodeBatch, batch: dict[str, torch.Tensor], policy) -> dict[str, torch.Tensor]:
        """Fill ``advantages`` (and for PPO ``returns``/``old_values``) into ``batch``; each algorithm's config says how."""
        raise NotImplementedError


# ------------------------------------------------------------------------------------------------ env and policy
def make_env(config: OnPolicyConfig, num_envs: int | None = None, **overrides):
    """The batched env of ``config`` (text: ``autoreset_mode="disabled"`` with KL shaping; else a SyncVectorEnv)."""
    n = num_envs or config.batch_size
    if config.is_text:
        kl_coef = 0.0 if config.kl_in_loss else config.kl_coef  # KL in the loss: the env shapes nothing
        kwargs = dict(max_new_tokens=config.max_new_tokens, kl_coef=kl_coef, kl_estimator=config.kl_estimator,
                      kl_timing=config.kl_timing,
                      kl_target=config.kl_target, kl_horizon=config.kl_horizon, kl_temperature=config.temperature)
        if config.model is not None:
            kwargs["model"] = config.model
        kwargs.update(config.env_kwargs)
        kwargs.update(overrides)
        if not kwargs["kl_coef"] > 0:
            for key in ("kl_estimator", "kl_target", "kl_horizon", "kl_temperature", "kl_timing"):
                kwargs.pop(key)
        return gym.make_vec(config.env_id, num_envs=n, autoreset_mode="disabled", **kwargs)
    return gym.make_vec(config.env_id, num_envs=n, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}, **config.env_kwargs)


def make_policy(config: OnPolicyConfig, env, value_head: bool, path: str | Path | None = None):
    """A fresh (or checkpointed, from ``path``) policy for ``env`` (with the config's LoRA adapter, if any)."""
    torch.manual_seed(config.seed)
    if config.is_text:
        source = path or config.model or env.unwrapped.task.model_name
        policy = load_policy(source, _lora(config), checkpoint=path is not None, value_head=value_head,
                             temperature=config.temperature, gradient_checkpointing=_checkpointing(config))
        _check_vocab(policy, env, source)
        return policy
    policy = make_mlp_policy(env.single_observation_space, env.single_action_space, value=value_head)
    if path is not None:
        policy.load_state_dict(torch.load(Path(path).parent / "policy.pt", weights_only=True))
    return policy


def make_env_and_policy(config: OnPolicyConfig, value_head: bool, path: str | Path | None = None):
    """``(env, policy)`` of a run. With LoRA the policy comes first and the env's KL reference is the policy's own
    base with the adapter off (:meth:`agents.policies.lm.LMPolicy.reference_model`), never a second copy (unless
    ``env_kwargs`` names a ``ref_model`` of its own)."""
    lora = _lora(config)
    if (lora is None or not config.is_text or not config.kl_coef > 0 or config.kl_in_loss
            or "ref_model" in config.env_kwargs):
        env = make_env(config)
        return env, make_policy(config, env, value_head, path)
    torch.manual_seed(config.seed)
    source = path or config.model or gym.spec(config.env_id).kwargs.get("model") or _default_model(config)
    policy = load_policy(source, lora, checkpoint=path is not None, value_head=value_head,
                         temperature=config.temperature, gradient_checkpointing=_checkpointing(config))
    env = make_env(config, ref_model=policy.reference_model())  # textenv.kl neither freezes nor switches its mode
    _check_vocab(policy, env, source)
    return env, policy


def loss_reference(config: OnPolicyConfig, env, policy):
    """The KL reference of ``kl_in_loss``: the policy's base with the adapter off (LoRA), else a frozen copy of the
    run's starting model (``config.model`` or the env's), never a checkpoint the run wrote. None without it."""
    if not (config.is_text and config.kl_in_loss and config.kl_coef > 0):
        return None
    if policy.is_lora:
        return policy.reference_model()
    from textenv.lm import load_causal_lm

    reference = load_causal_lm(config.model or env.unwrapped.task.model_name)
    reference.requires_grad_(False)
    return reference.eval()


def token_logprobs(model, batch: dict[str, torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """``(B, T)`` log-probs of ``batch["actions"]`` under the causal LM ``model`` (logits ÷ ``temperature``), one
    teacher-forced pass without gradients; the layout of :meth:`agents.policies.lm.LMPolicy.evaluate`."""
    from agents.policies.lm import at_actions

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        logits = at_actions(logits, batch["prompt_len"], batch["actions"].shape[1], batch.get("positions"))
        logprobs = torch.log_softmax(logits.float() / temperature, -1)
        return logprobs.gather(-1, batch["actions"].long()[..., None]).squeeze(-1)


def _lora(config) -> LoRASettings | None:
    """The config's LoRA settings when LoRA is on, else None (configs without LoRA fields: None)."""
    return config.lora if isinstance(config, LoRASettings) else None


def _checkpointing(config) -> bool:
    """The config's ``gradient_checkpointing`` (False for configs without the field)."""
    return bool(getattr(config, "gradient_checkpointing", False))


def _default_model(config: OnPolicyConfig) -> str:
    """The model the env of ``config`` loads by default (an env without KL shaping is made to read it)."""
    probe = make_env(config, num_envs=1, kl_coef=0.0)
    try:
        return probe.unwrapped.task.model_name
    finally:
        probe.close()


def _check_vocab(policy: LMPolicy, env, source) -> None:
    if policy.vocab_size != env.unwrapped.task.vocab_size:
        raise ValueError(
            f"policy vocabulary {policy.vocab_size} ({source}) differs from the env's {env.unwrapped.task.vocab_size} "
            f"({env.unwrapped.task.model_name}); the policy must use the env's tokenizer"
        )


def training_batch(episodes: EpisodeBatch, is_text: bool, obs_frames=None) -> dict[str, torch.Tensor]:
    """Rows to train on: one per completion (text; ``(N, T)`` tokens) or one per valid step (MLP), with the log-probs
    the actions were sampled with (``sample_logprobs``, for the sampler–trainer gap the update reports)."""
    if is_text:
        final = episodes.final_obs
        ids = torch.as_tensor(np.stack([o["input_ids"] for o in final]))  # (N, L)
        mask = torch.as_tensor(np.stack([o["attention_mask"] for o in final]))  # (N, L)
        width = int(mask.sum(1).max())  # drop padding columns no row uses
        prompt_len = torch.as_tensor(episodes.first_obs["attention_mask"]).sum(1)  # (N,)
        batch = {"input_ids": ids[:, :width], "attention_mask": mask[:, :width], "prompt_len": prompt_len,
                 "actions": episodes.actions.T.contiguous(), "mask": episodes.valid.T.contiguous(),
                 "sample_logprobs": episodes.logprobs.T.contiguous()}
        if "env_mask" in final[0]:  # multi-turn: the actions stand between the env's tokens
            batch["positions"] = action_positions(ids, mask, torch.as_tensor(np.stack([o["env_mask"] for o in final])),
                                                  prompt_len, batch["actions"], batch["mask"])
        return batch
    t, i = episodes.valid.nonzero(as_tuple=True)  # valid (step, env) pairs
    return {"obs": obs_frames[t, i], "actions": episodes.actions[t, i], "mask": torch.ones(len(t), dtype=torch.bool),
            "row_episode": i, "sample_logprobs": episodes.logprobs[t, i]}


def action_positions(ids, attention, env_mask, prompt_len, actions, valid) -> torch.Tensor:
    """``(N, T)`` offset after the prompt of each agent token of a multi-turn episode (the tokens that are not the
    env's), 0 past an episode's end. Checks that the tokens there are the actions the agent took (token in, token
    out: nothing was re-tokenized)."""
    N, T = actions.shape
    positions = torch.zeros(N, T, dtype=torch.long)
    for i in range(N):
        agent = ((attention[i] == 1) & (env_mask[i] == 0)).nonzero().squeeze(1)
        agent = agent[agent >= prompt_len[i]] - prompt_len[i]
        n = int(valid[i].sum())
        if len(agent) != n or not torch.equal(ids[i, prompt_len[i] + agent], actions[i, :n].to(ids.dtype)):
            raise RuntimeError(f"episode {i}: the agent's tokens in the final observation differ from the actions it "
                               f"took ({len(agent)} vs {n} tokens); the env must keep the agent's ids as they were")
        positions[i, :n] = agent
    return positions


def episode_metrics(episodes: EpisodeBatch) -> dict[str, float]:
    """Means over the batch: return, proxy score, gold reward, summed KL, completion length."""
    infos = episodes.infos

    def mean(key):
        values = [float(info[key]) for info in infos if key in info]
        return float(np.mean(values)) if values else float("nan")

    return {"return": float(episodes.returns.mean()), "proxy": mean("score"), "gold": mean("reward_gold"),
            "kl": mean("episode_kl"), "length": float(episodes.lengths.float().mean())}


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    policy: Any
    rows: list[dict[str, float]]
    run_dir: Path


def _options(config: OnPolicyConfig, env, iteration: int, attempt: int = 0) -> dict | None:
    if not config.is_text:
        return None
    prompts = env.unwrapped.task.prompts
    key = [config.seed, iteration, 1] + ([attempt] if attempt else [])
    picks = np.random.default_rng(key).integers(len(prompts), size=config.prompts_per_iter)
    return {"prompts": [prompts[j] for j in picks for _ in range(config.group_size)]}


def collect(config: OnPolicyConfig, env, policy, iteration: int) -> tuple[EpisodeBatch, EpisodeBatch, dict[str, float]]:
    """One iteration's episodes → ``(to_train_on, first_rollout, stats)``.

    Without dynamic sampling both are the one rollout. With it (DAPO; ``config.dynamic_sampling_on``), groups whose
    returns are all equal are dropped (their advantages are 0: no signal, and they dilute the token mean) and
    rollouts of fresh prompts are added, up to ``config.max_rollouts``, until ``prompts_per_iter`` informative groups
    are found; the update takes at most that many (fewer if the rollouts ran out). Metrics are read from the first
    rollout, which is unfiltered: its rewards are the policy's, not the filter's.
    """
    episodes = run_episodes(env, policy, seed=config.seed + iteration * config.batch_size,
                            options=_options(config, env, iteration))
    if not getattr(config, "dynamic_sampling_on", False):
        return episodes, episodes, {}
    parts, kept, rollouts = [], 0, 0
    batch = episodes
    while True:
        rollouts += 1
        groups = config.informative_groups(batch)[: config.prompts_per_iter - kept]
        parts.append((batch, groups))
        kept += len(groups)
        if kept >= config.prompts_per_iter or rollouts >= config.max_rollouts:
            break
        batch = run_episodes(env, policy, seed=None, options=_options(config, env, iteration, rollouts))
    K = config.group_size
    columns = [(b, (g[:, None] * K + torch.arange(K)).flatten()) for b, g in parts if len(g)]
    stats = {"groups_kept": kept, "rollouts": rollouts,
             "informative_first": float(len(config.informative_groups(episodes))) / config.prompts_per_iter}
    return (concat_episodes(columns) if columns else None), episodes, stats


class _FiniteActs:
    """Wraps a policy's ``act`` to stop the run, as divergence, when its sampling distribution is not finite
    (weights blown up by too high a learning rate); attributes other than ``act`` are the policy's own."""

    def __init__(self, policy, diverged: Callable[[str], TrainingDiverged]):
        self.policy, self.diverged = policy, diverged

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def act(self, obs):
        out = self.policy.act(obs)
        probs = out.dist_logprobs if getattr(out, "dist_logprobs", None) is not None else out.logprob
        if not bool(torch.isfinite(out.logprob).all()) or bool(torch.isnan(probs).any()):
            raise self.diverged("the policy's sampling distribution is not finite (NaN/inf log-probs)")
        return out


class _RecordObs:
    """Wraps an MLP policy's ``act`` to keep the observations (run_episodes does not store them)."""

    def __init__(self, policy):
        self.policy, self.frames = policy, []

    def act(self, obs):
        self.frames.append(torch.as_tensor(np.asarray(obs), dtype=torch.float32))
        return self.policy.act(obs)


def train(config: OnPolicyConfig, run_dir: str | Path, resume: bool = True, progress: bool = True,
          callback: Callable[[dict[str, float], Any], None] | None = None, value_head: bool = False,
          extra_loss_factory: Callable[[Any, np.random.Generator], Callable[[], torch.Tensor] | None] | None = None,
          warmup_iterations: int = 0) -> TrainResult:
    """Train with ``config`` into ``run_dir`` (resuming a checkpoint there unless ``resume=False``).

    ``callback(row, policy)`` sees each iteration's metrics row (``time_s`` is training wall time so far, rollouts
    and updates, without loading or checkpointing) and the policy. The trained policy is saved in ``run_dir/policy``.
    """
    from tqdm.auto import tqdm

    torch.set_num_threads(config.threads)
    run = Run(run_dir, config, ignore=("iterations", "threads", "checkpoint_every"))
    state = run.start(resume)
    env, policy = make_env_and_policy(config, value_head, run.policy_path() if state else None)
    reference = loss_reference(config, env, policy)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.0)
    controller = kl_controller(env)
    start, skipped, elapsed = 0, 0, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start, skipped, elapsed = state["iteration"], state["skipped"], state["elapsed"]
        if controller is not None and state.get("kl_controller"):
            controller.load_state_dict(state["kl_controller"])
    settings = config.update_settings()
    run.begin()  # env, policy and state loaded: only now may resume=False remove the old checkpoint

    def diverged(what: str, iteration: int) -> TrainingDiverged:
        return TrainingDiverged(f"training diverged at iteration {iteration + 1}: {what}. The learning rate is too "
                                f"high for this run (lr={config.lr}): lower it. {run.last_good()}")

    def checkpoint(iteration):
        run.save(policy, {"optimizer": optimizer.state_dict(), "iteration": iteration, "skipped": skipped,
                          "elapsed": elapsed, "kl_controller": controller.state_dict() if controller else None})

    bar = tqdm(total=config.iterations, initial=start, desc=getattr(config, "estimator", "ppo").upper(),
               unit="iter", disable=not progress)
    try:
        for iteration in range(start, config.iterations):
            tick = time.perf_counter()
            policy.generator = torch.Generator().manual_seed(config.seed * 1_000_003 + iteration)
            torch.manual_seed(config.seed * 1_000_003 + iteration)
            recorder = None if config.is_text else _RecordObs(policy)
            acting = _FiniteActs(recorder or policy, lambda what: diverged(what, iteration))
            episodes, first, sampling = collect(config, env, acting, iteration)
            beta = controller.value if controller else (config.kl_coef if config.kl_in_loss else 0.0)  # this batch's β
            if controller is not None:
                controller.end_batch()  # adaptive β: one update with this batch's mean KL (Ziegler et al.)
            obs_frames = torch.stack(recorder.frames) if recorder else None
            metrics = {**episode_metrics(first), **sampling}
            batch = None
            if episodes is not None and reference is not None:  # KL in the loss: scored once, before the guard
                batch = training_batch(episodes, config.is_text, obs_frames)
                batch["ref_logprobs"] = token_logprobs(reference, batch, config.temperature)
                per_token = kl_estimate(batch["sample_logprobs"], batch["ref_logprobs"], config.kl_estimator)
                metrics["kl"] = float((per_token * batch["mask"]).sum(1).mean())  # summed per completion, as the env's
            blown = np.isfinite(metrics["kl"]) and metrics["kl"] > config.max_episode_kl
            if blown:  # checked first: a batch not trained on costs no scoring pass
                warnings.warn(f"iteration {iteration + 1}: mean KL {metrics['kl']:.1f} nats exceeds max_episode_kl="
                              f"{config.max_episode_kl}; update skipped", RuntimeWarning, stacklevel=2)
                update = {"skipped": 1, "epochs": 0}
            elif episodes is None:  # dynamic sampling found no group with any signal: nothing to learn from
                update = {"skipped": 0, "epochs": 0}
            else:
                if batch is None:
                    batch = training_batch(episodes, config.is_text, obs_frames)
                rng = np.random.default_rng([config.seed, iteration, 2])
                if value_head or settings.needs_old(len(batch["actions"])):
                    score_old(policy, batch, settings, rng)  # the old policy, in the update's own first-epoch passes
                # else one step on the whole batch: the update's own log-probs are the old ones (ratio 1), no extra pass
                batch.update(config.advantages(episodes, batch, policy))
                settings.train_policy = iteration >= warmup_iterations
                extra = extra_loss_factory(policy, rng) if extra_loss_factory else None
                update = ppo_update(policy, optimizer, batch, settings, rng, extra)
                bad = first_nonfinite({n: p for n, p in policy.named_parameters() if p.requires_grad}, "weight")
                bad = bad and f"{bad} is NaN/inf"
                if bad is None:  # finite weights can still be too large: ~1e20 makes attention scores overflow
                    with torch.no_grad():
                        rows = {k: v[:1] for k, v in batch.items()}  # blown-up weights show in any row
                        if not bool(torch.isfinite(policy.evaluate(rows, entropy_grad=False).logprob[rows["mask"]]).all()):
                            bad = "the policy's log-probs of its own actions are NaN/inf"
                if bad is not None:
                    raise diverged(f"{bad} after the update", iteration)
            skipped += update["skipped"]
            elapsed += time.perf_counter() - tick
            row = {"iteration": iteration + 1, **metrics, "beta": beta,
                   **{k: v for k, v in update.items() if k != "skipped"}, "skipped_total": skipped, "time_s": elapsed}
            run.log(row)
            if callback is not None:
                callback(row, policy)
            bar.update(1)
            bar.set_postfix({k: f"{row[k]:+.3f}" for k in ("proxy", "gold", "kl") if np.isfinite(row[k])} or
                            {"return": f"{row['return']:+.3f}"})
            if skipped > config.max_skipped:
                checkpoint(iteration + 1)
                raise TrainingDiverged(
                    f"{skipped} updates skipped (non-finite loss or KL above max_episode_kl={config.max_episode_kl}) "
                    f"by iteration {iteration + 1}, more than max_skipped={config.max_skipped}; lower lr or raise kl_coef. "
                    f"The last checkpoint is in {run.checkpoint_dir}"
                )
            if (iteration + 1) % config.checkpoint_every == 0 or iteration + 1 == config.iterations:
                checkpoint(iteration + 1)
    finally:
        bar.close()
        run.close()
    if config.is_text:
        policy.save_pretrained(run.path / "policy")
    else:
        torch.save(policy.state_dict(), run.path / "policy.pt")
    return TrainResult(policy, run.rows, run.path)
