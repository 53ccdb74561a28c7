"""KL shaping: per-token ``-β·KL_t`` against a frozen reference model, for the single and the batched env.

Two modes, reported in ``info["kl_mode"]``:

* ``"policy"`` (exact): ``KL_t`` is estimated from the acting policy's log-probability of the sampled token
  (estimators ``k1``, ``k2``, ``k3``) or from its whole next-token distribution (``full``). The agent already
  has these from sampling, so it hands them over before each ``step`` (no second forward of its model)::

      supply = env.get_wrapper_attr("supply_policy_logprobs")
      supply(logprob_of_action)          # or the (V,) / (N, V) log-softmax it sampled from
      env.step(action)

* ``"reference"`` (black-box agents): the env adds ``β·log π_ref(a_t|s_t)``. KL-regularised RL
  ``E[R] - β·KL(π‖π_ref)`` equals this reward plus an entropy bonus ``β·H(π)``, which the agent adds
  (e.g. Stable-Baselines3's ``ent_coef=β``).

β is fixed, or adaptive (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences"):
``β ← β·(1 + clip(KL/target − 1, −0.2, 0.2)·n/horizon)`` after every ``n`` finished episodes with mean
summed KL ``KL``. The controller's state is saved and restored with ``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from textenv.lm import IncrementalLM, context_length, load_causal_lm

ESTIMATORS = ("k1", "k2", "k3", "full")
MODES = ("policy", "reference")


def kl_estimate(
    policy_logprob: torch.Tensor,
    ref_logprob: torch.Tensor,
    estimator: str = "k1",
    policy_logprobs: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token estimate of ``KL(π‖π_ref)`` at the sampled token, shape of ``policy_logprob``.

    With ``r = log π(a) − log π_ref(a)`` for ``a ~ π`` (Schulman, "Approximating KL divergence", 2020):
    ``k1 = r`` (unbiased, can be negative), ``k2 = r²/2`` (biased, low variance),
    ``k3 = (e^{−r} − 1) + r`` (unbiased, ≥ 0), and ``full = Σ_v π(v)·(log π(v) − log π_ref(v))`` (exact; needs
    the whole distributions, ``(..., V)``).

    >>> kl_estimate(torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25)), "k3").item()  # e^-r - 1 + r, r = log 2
    0.1931471...
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"kl estimator {estimator!r} is unknown; expected one of {ESTIMATORS}")
    if estimator == "full":
        if policy_logprobs is None or ref_logprobs is None:
            raise ValueError("the 'full' KL estimator needs the whole policy and reference log-prob vectors (..., V)")
        return (policy_logprobs.exp() * (policy_logprobs - ref_logprobs)).sum(-1)
    log_ratio = policy_logprob - ref_logprob
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    return torch.expm1(-log_ratio) + log_ratio


@dataclass
class KLController:
    """The KL coefficient β: fixed when ``target`` is None, else adapted towards ``target`` (nats per episode)."""

    value: float
    """Current β."""
    target: float | None = None
    """Target summed KL per episode; None keeps β fixed."""
    horizon: int = 10_000
    """Episodes over which a ±20% error moves β by ±20%."""

    def __post_init__(self):
        if not (math.isfinite(self.value) and self.value >= 0):
            raise ValueError(f"kl_coef={self.value} must be a finite number >= 0")
        if self.target is not None and not self.target > 0:
            raise ValueError(f"kl_target={self.target} must be > 0 (or None for a fixed β)")
        if self.horizon < 1:
            raise ValueError(f"kl_horizon={self.horizon} must be >= 1")

    def update(self, current: float, n_steps: int) -> float:
        """Adapt β to the mean summed KL ``current`` of ``n_steps`` finished episodes; returns the new β."""
        if self.target is not None:
            error = float(np.clip(current / self.target - 1.0, -0.2, 0.2))
            self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class _ReferenceMixin:
    """What the single and the vector KL wrapper share: loading the reference, checks, the per-token term."""

    def _setup(self, task, kl_coef, estimator, mode, target, horizon, ref_model, device, batch_size):
        if estimator not in ESTIMATORS:
            raise ValueError(f"kl_estimator={estimator!r}; expected one of {ESTIMATORS}")
        if mode not in MODES:
            raise ValueError(f"kl_mode={mode!r}; expected one of {MODES}")
        if mode == "reference" and target is not None:
            raise ValueError("kl_target needs kl_mode='policy': in 'reference' mode the env cannot measure the KL")
        self.controller = KLController(float(kl_coef), target, horizon)
        self.estimator, self.mode = estimator, mode
        model = load_causal_lm(ref_model or task.model_name, device) if not isinstance(ref_model, torch.nn.Module) else ref_model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if model.config.vocab_size != task.vocab_size:
            raise ValueError(
                f"reference model vocabulary {model.config.vocab_size} differs from the env's {task.vocab_size} "
                f"({task.model_name}); the reference must share the policy's tokenizer"
            )
        self.ref = IncrementalLM(model, batch_size, task.pad_token_id, max_positions=context_length(model))
        self._supplied: torch.Tensor | None = None

    def supply_policy_logprobs(self, logprobs) -> None:
        """Hand over the acting policy's log-probs for the coming ``step``: of the chosen token(s), shape
        ``()``/``(N,)``, or the whole next-token log-softmax, ``(V,)``/``(N, V)`` (needed by ``full``)."""
        self._supplied = torch.as_tensor(logprobs, dtype=torch.float32).detach().cpu()

    def _kl_terms(self, actions: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(reward term added to the env reward, KL estimate) per row, each ``(batch,)``; consumes the supply."""
        ref_logprobs = self.ref.next_logprobs.cpu()  # (B, V)
        ref_lp = ref_logprobs.gather(1, actions.view(-1, 1)).squeeze(1)  # (B,)
        if self.mode == "reference":
            return self.controller.value * ref_lp, torch.full((batch,), float("nan"))
        supplied, self._supplied = self._supplied, None
        if supplied is None:
            raise RuntimeError(
                "KL shaping in kl_mode='policy' needs the acting policy's log-probs before each step: call "
                "env.get_wrapper_attr('supply_policy_logprobs')(logprobs) first, or make the env with "
                "kl_mode='reference' for black-box agents (and give the agent an entropy bonus of kl_coef)"
            )
        V = ref_logprobs.shape[-1]
        if supplied.shape in ((batch, V), (V,)):
            full = supplied.view(batch, V)
            policy_lp = full.gather(1, actions.view(-1, 1)).squeeze(1)
        elif supplied.numel() == batch and self.estimator != "full":
            full, policy_lp = None, supplied.view(batch)
        else:
            need = f"({V},)" if batch == 1 else f"({batch}, {V})"
            raise ValueError(
                f"supplied policy log-probs have shape {tuple(supplied.shape)}; expected {need} (the next-token "
                f"log-softmax){'' if self.estimator == 'full' else ' or one log-prob per env'} for estimator {self.estimator!r}"
            )
        kl = kl_estimate(policy_lp, ref_lp, self.estimator, full, ref_logprobs)
        if not torch.isfinite(kl).all():
            raise ValueError(f"KL estimate is not finite ({kl.tolist()[:4]}); check the supplied policy log-probs")
        return -self.controller.value * kl, kl

    def _info(self) -> dict[str, Any]:
        return {"kl_mode": self.mode, "kl_estimator": self.estimator, "kl_coef": self.controller.value}


class KLShaping(_ReferenceMixin, gym.Wrapper):
    """Adds ``-β·KL_t`` (``"policy"`` mode) or ``β·log π_ref`` (``"reference"`` mode) to every token's reward.

    Args:
        env: a :class:`textenv.env.TextGenerationEnv` (possibly wrapped).
        kl_coef: β (initial β when adaptive).
        kl_estimator: ``"k1"``, ``"k2"``, ``"k3"`` or ``"full"`` (see :func:`kl_estimate`).
        kl_mode: ``"policy"`` or ``"reference"`` (module docstring).
        kl_target, kl_horizon: adaptive β (``kl_target=None``: fixed).
        ref_model: name/path or model of the frozen reference; default: a fresh copy of the env's model.
        device: where the reference model runs.

    ``info`` gains ``reward_kl`` (the term added), ``kl`` (policy mode), ``kl_mode``, ``kl_estimator``,
    ``kl_coef`` on every step, and ``episode_kl`` (summed KL, policy mode) at the end.
    """

    def __init__(self, env, kl_coef=0.05, kl_estimator="k1", kl_mode="policy", kl_target=None, kl_horizon=10_000, ref_model=None, device="cpu"):
        gym.Wrapper.__init__(self, env)
        self._setup(env.unwrapped.task, kl_coef, kl_estimator, kl_mode, kl_target, kl_horizon, ref_model, device, 1)
        self._episode_kl = 0.0

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.ref.reset_rows([0], [self.env.unwrapped.prompt_token_ids()])
        self._episode_kl, self._supplied = 0.0, None
        return obs, {**info, **self._info()}

    def step(self, action):
        token = self.env.unwrapped.task.check_action(action)
        term, kl = self._kl_terms(torch.tensor([token]), 1)
        obs, reward, terminated, truncated, info = self.env.step(action)
        info.update(self._info(), reward_kl=float(term[0]))
        if self.mode == "policy":
            info["kl"] = float(kl[0])
            self._episode_kl += float(kl[0])
        if terminated or truncated:
            if self.mode == "policy":
                info["episode_kl"] = self._episode_kl
                self.controller.update(self._episode_kl, 1)
        else:
            self.ref.step(torch.tensor([token]))
        return obs, reward + float(term[0]), terminated, truncated, info


class KLShapingVector(_ReferenceMixin, gym.vector.VectorWrapper):
    """:class:`KLShaping` for :class:`textenv.vector_env.TextGenerationVectorEnv`: the reference model steps
    all N envs in one KV-cached forward per token and re-prefills only the envs that restart."""

    def __init__(self, env, kl_coef=0.05, kl_estimator="k1", kl_mode="policy", kl_target=None, kl_horizon=10_000, ref_model=None, device="cpu"):
        gym.vector.VectorWrapper.__init__(self, env)
        self._setup(env.unwrapped.task, kl_coef, kl_estimator, kl_mode, kl_target, kl_horizon, ref_model, device, env.num_envs)
        self._episode_kl = torch.zeros(env.num_envs, dtype=torch.float64)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)
        rows = np.flatnonzero(mask).tolist()
        self.ref.reset_rows(rows, self.env.unwrapped.prompt_token_ids(rows))
        self._episode_kl[rows] = 0.0
        return obs, info

    def step(self, actions):
        base = self.env.unwrapped
        live = ~base.done  # (N,) before the step
        tokens = base._check_actions(actions)  # (N,)
        term, kl = self._kl_terms(tokens.clamp(0, base.task.vocab_size - 1), self.num_envs)
        term = torch.where(live, term, torch.zeros_like(term))
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        finished = torch.as_tensor(terminated | truncated)
        n = self.num_envs
        infos.update({k: np.full(n, v, dtype=object if isinstance(v, str) else None) for k, v in self._info().items()})
        infos.update({f"_{k}": live.numpy().copy() for k in self._info()})
        infos["reward_kl"], infos["_reward_kl"] = term.double().numpy(), live.numpy().copy()
        if self.mode == "policy":
            kl = torch.where(live, kl, torch.zeros_like(kl)).double()
            infos["kl"], infos["_kl"] = kl.numpy(), live.numpy().copy()
            self._episode_kl += kl
            if finished.any():
                infos["episode_kl"] = self._episode_kl.numpy().copy()
                infos["_episode_kl"] = finished.numpy().copy()
                self.controller.update(float(self._episode_kl[finished].mean()), int(finished.sum()))
                self._episode_kl[finished] = 0.0
        restarted = finished.nonzero().squeeze(1).tolist() if base.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP else []
        if len(restarted) < n and not bool(base.done.all()):  # rows that go on advance; all frozen: nothing to do
            self.ref.step(torch.where(live, tokens, torch.full_like(tokens, base.task.pad_token_id)))
        if restarted:
            self.ref.reset_rows(restarted, base.prompt_token_ids(restarted))
        return obs, rewards + term.double().numpy(), terminated, truncated, infos
