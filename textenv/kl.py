"""KL shaping: per-token ``-β·KL_t`` against a frozen reference model, for the single and the batched env.

Two modes, reported in ``info["kl_mode"]``:

* ``"policy"`` (exact): ``KL_t`` is estimated from the acting policy's log-probability of the sampled token
  (estimators ``k1``, ``k2``, ``k3``) or from its whole next-token distribution (``full``). The agent already
  has these from sampling, so it hands them over before each ``step`` (no second forward of its model)::

      import textenv

      textenv.supply_policy_logprobs(env, logprobs)  # the chosen token's log-prob(s), or the (V,)/(N, V)
      env.step(action)                               # log-softmax it sampled from

  :func:`supply_policy_logprobs` and :func:`kl_controller` find the KL wrapper under any stack of Gymnasium
  wrappers, single or vector (``RecordEpisodeStatistics``, ``TimeLimit``, ...), and in the sub-envs of a
  ``SyncVectorEnv`` (rows are split among them); sub-envs of an ``AsyncVectorEnv`` live in other processes
  and cannot be reached.

* ``"reference"`` (black-box agents): the env adds ``β·log π_ref(a_t|s_t)``, which needs no policy log-prob.
  The KL-regularised objective ``E[Σ_t r_t] − β·E[Σ_t KL(π(·|s_t)‖π_ref(·|s_t))]`` equals the return of this
  reward **plus** ``β·Σ_t H(π(·|s_t))`` counted inside the return (soft / maximum-entropy RL, undiscounted).
  An entropy bonus in the loss, as Stable-Baselines3's ``ent_coef=β`` adds it, only approximates that: it
  adds ``β·∇H(π(·|s_t))`` at each visited state, but gives an action no credit for the entropy of the states
  it leads to (which the soft return does), the reward part is discounted (γ < 1) and, with advantage
  normalisation (SB3 PPO's default), divided by the advantages' standard deviation, which rescales β. It is
  exact only for one-token episodes without advantage normalisation; on longer episodes the policy it
  converges to can differ from the KL-regularised optimum even when the reward is 0.

When the reference runs, ``kl_timing`` (reported in ``info["kl_timing"]``):

* ``"step"`` (default): one KV-cached forward of the reference per token, for all envs together; every step's
  reward carries its own ``-β·KL_t``.
* ``"end"``: nothing runs while the episode goes on; when it ends, the reference scores the whole completion in
  one teacher-forced pass (batched over the envs that finish together), giving the same per-token values (to
  float rounding, within 1e-5: the same model without the KV cache). Their sum is added to the **last** step's
  reward; ``info`` there holds the per-token values, ``kl_tokens`` and ``reward_kl_tokens`` (lists of floats; in
  the batched env, object arrays with one float array per env), and ``reward_kl`` (the sum added). Earlier steps carry ``reward_kl = 0``. At real model sizes a one-token
  forward costs as much as reading all the weights, so the step mode's reference costs about as much as the
  policy's whole decode; the end mode runs it once per episode (``benchmarks/README.md``). A black-box agent
  (Stable-Baselines3) sees the KL as a terminal reward, which leaves the undiscounted return unchanged but
  moves the penalty's credit to the last token when it discounts; :func:`agents.core.rollout.run_episodes`
  puts the per-token values back on their tokens, so our agents learn exactly as with ``"step"``. The acting
  policy's log-probs are still handed over before every step (they are kept until the episode ends; with the
  ``full`` estimator that is a ``(V,)`` row per token per env). A reference that gives a sampled token
  probability 0 is refused when the episode ends, after the env's step (the wrapper stays usable). An episode cut
  **outside** the KL wrapper never reaches its scoring: a ``TimeLimit`` added by ``gymnasium.make(...,
  max_episode_steps=...)`` or a ``reset`` in mid-episode drops its KL with a warning; bound episodes with
  ``max_new_tokens`` instead, or use ``"step"``.

The reference is scored at the policy's sampling temperature: ``kl_temperature=T`` divides the reference
logits by ``T`` before the log-softmax (as TRL does), so a policy equal to the reference and sampled at ``T``
has KL 0.

β is fixed, or adaptive (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences"; TRL's
``AdaptiveKLController``): the wrappers only record each finished episode's summed KL
(:meth:`KLController.observe`), and whoever ends a batch of rollouts calls :meth:`KLController.end_batch`,
which applies ``β ← β·(1 + clip(KL/target − 1, −0.2, 0.2)·n/horizon)`` once, with ``KL`` the mean summed KL of
the ``n`` episodes recorded since the previous call. β never changes in the middle of a rollout. The
controller's state (pending episodes included) is saved and restored with ``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from textenv.lm import IncrementalLM, at_completion, completion_batch, context_length, load_causal_lm

ESTIMATORS = ("k1", "k2", "k3", "full")
MODES = ("policy", "reference")
TIMINGS = ("step", "end")


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

    Tokens the policy gives probability 0 (log-prob ``−inf``, e.g. suppressed tokens) add nothing to ``full``
    (``0·log 0 = 0``). Where the reference gives ``−inf`` to a token the policy can take, the KL is ``+inf``
    by definition and is returned as such (the KL wrappers refuse it with an error naming the token).

    >>> kl_estimate(torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25)), "k3").item()  # e^-r - 1 + r, r = log 2
    0.1931471...
    >>> p, q = torch.tensor([0.5, 0.5, 0.0]).log(), torch.tensor([0.25, 0.25, 0.5]).log()
    >>> kl_estimate(None, None, "full", p, q).item()  # 2 · 0.5·log 2; the third token adds 0·(log 0 − log 0.5) = 0
    0.6931471...
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"kl estimator {estimator!r} is unknown; expected one of {ESTIMATORS}")
    if estimator == "full":
        if policy_logprobs is None or ref_logprobs is None:
            raise ValueError("the 'full' KL estimator needs the whole policy and reference log-prob vectors (..., V)")
        has_mass = policy_logprobs > -math.inf  # (..., V)
        log_ratio = torch.where(has_mass, policy_logprobs - ref_logprobs, 0.0)  # masked before the product: no 0·inf
        return (policy_logprobs.exp() * log_ratio).sum(-1)
    log_ratio = policy_logprob - ref_logprob
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    return torch.expm1(-log_ratio) + log_ratio


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclass
class KLController:
    """The KL coefficient β: fixed when ``target`` is None, else adapted towards ``target`` (nats per episode)
    once per batch of rollouts (module docstring).

    The KL wrappers call :meth:`observe` with each finished episode's summed KL; the agent calls
    :meth:`end_batch` after each rollout. An agent that never calls it keeps β at its initial value.

    >>> c = KLController(0.1, target=6.0, horizon=10_000)
    >>> for kl in [0.5] * 32 + [30.0] * 32:
    ...     c.observe(kl)
    >>> c.value  # unchanged until the batch ends
    0.1
    >>> c.end_batch()  # mean 15.25: error clip(15.25/6 − 1) = 0.2; β·(1 + 0.2·64/10000)
    0.100128...
    """

    value: float
    """Current β."""
    target: float | None = None
    """Target summed KL per episode; None keeps β fixed."""
    horizon: int = 10_000
    """Episodes over which a ±20% error moves β by ±20%."""
    pending: list[float] = field(default_factory=list)
    """Summed KL of each episode finished since the last :meth:`end_batch` (adaptive β only)."""

    def __post_init__(self):
        if not (_is_real(self.value) and math.isfinite(self.value) and self.value >= 0):
            raise ValueError(f"kl_coef={self.value!r} must be a finite number >= 0")
        if self.target is not None and not (_is_real(self.target) and math.isfinite(self.target) and self.target > 0):
            raise ValueError(f"kl_target={self.target!r} must be a finite number > 0 (or None for a fixed β)")
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, (int, np.integer)) or self.horizon < 1:
            raise ValueError(f"kl_horizon={self.horizon!r} must be an integer >= 1")
        self.value, self.horizon = float(self.value), int(self.horizon)
        self.target = None if self.target is None else float(self.target)
        self.pending = [float(kl) for kl in self.pending]

    def update(self, current: float, n_episodes: int) -> float:
        """One adaptive step for ``n_episodes`` finished episodes of mean summed KL ``current``; returns β.

        ``β ← β·(1 + clip(current/target − 1, −0.2, 0.2)·n_episodes/horizon)``; β is unchanged when fixed.
        """
        if self.target is not None:
            error = float(np.clip(current / self.target - 1.0, -0.2, 0.2))
            self.value *= 1.0 + error * n_episodes / self.horizon
        return self.value

    def observe(self, episode_kl: float) -> None:
        """Record one finished episode's summed KL for the next :meth:`end_batch` (nothing is kept when β is fixed)."""
        if self.target is not None:
            self.pending.append(float(episode_kl))

    def end_batch(self) -> float:
        """End a batch of rollouts: one :meth:`update` with the mean KL and the count of the episodes observed
        since the previous call (none: β unchanged); returns β."""
        if self.pending:
            self.update(float(np.mean(self.pending)), len(self.pending))
            self.pending = []
        return self.value

    def state_dict(self) -> dict[str, Any]:
        """Plain floats, ints and lists (loadable with ``torch.load(weights_only=True)``)."""
        return {"value": self.value, "target": self.target, "horizon": self.horizon, "pending": list(self.pending)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a state saved before ``pending`` existed loads with none pending)."""
        unknown = sorted(set(state) - {"value", "target", "horizon", "pending"})
        if unknown:
            raise ValueError(f"KLController state has unknown keys {unknown}; expected value, target, horizon, pending")
        restored = KLController(**{"pending": [], **state})  # validated before anything is changed
        self.value, self.target, self.horizon, self.pending = restored.value, restored.target, restored.horizon, restored.pending


class _ReferenceMixin:
    """What the single and the vector KL wrapper share: loading the reference, checks, the per-token terms."""

    def _setup(self, task, kl_coef, estimator, mode, target, horizon, temperature, ref_model, device, batch_size, timing):
        if estimator not in ESTIMATORS:
            raise ValueError(f"kl_estimator={estimator!r}; expected one of {ESTIMATORS}")
        if mode not in MODES:
            raise ValueError(f"kl_mode={mode!r}; expected one of {MODES}")
        if timing not in TIMINGS:
            raise ValueError(f"kl_timing={timing!r}; expected one of {TIMINGS} (when the reference scores the tokens)")
        if mode == "reference" and target is not None:
            raise ValueError("kl_target needs kl_mode='policy': in 'reference' mode the env cannot measure the KL")
        if not (_is_real(temperature) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"kl_temperature={temperature!r} must be a finite number > 0 (the policy's sampling temperature)")
        self.controller = KLController(kl_coef, target, horizon)
        self.estimator, self.mode, self.timing, self.temperature = estimator, mode, timing, float(temperature)
        if isinstance(ref_model, torch.nn.Module):
            # used as passed, never changed: it may share its weights with the policy (a LoRA policy's base with
            # the adapter off), so it is neither frozen nor switched to eval mode here; it runs without gradients
            model = ref_model
        else:
            model = load_causal_lm(ref_model or task.model_name, device)
            for p in model.parameters():
                p.requires_grad_(False)
        config = getattr(model, "config", None)
        vocab = getattr(config.get_text_config() if hasattr(config, "get_text_config") else config, "vocab_size", None)
        if vocab != task.vocab_size:
            raise ValueError(
                f"reference model vocabulary {vocab} differs from the env's {task.vocab_size} "
                f"({task.model_name}); the reference must share the policy's tokenizer"
            )
        self.ref_model = model
        self.ref = IncrementalLM(model, batch_size, task.pad_token_id, max_positions=context_length(model)) if timing == "step" else None
        self._vocab, self._pad = task.vocab_size, task.pad_token_id
        self._supplied: torch.Tensor | None = None
        # kl_timing="end": each row's episode so far (prompt ids, tokens, β and the policy's log-probs at each token)
        self._prompt_ids: list[list[int]] = [[] for _ in range(batch_size)]
        self._tokens: list[list[int]] = [[] for _ in range(batch_size)]
        self._betas: list[list[float]] = [[] for _ in range(batch_size)]
        self._policy_lp: list[list[float]] = [[] for _ in range(batch_size)]
        self._policy_full: list[list[torch.Tensor]] = [[] for _ in range(batch_size)]

    def supply_policy_logprobs(self, logprobs) -> None:
        """Hand over the acting policy's log-probs for the coming ``step``: of the chosen token(s), shape
        ``()``/``(N,)``, or the whole next-token log-softmax, ``(V,)``/``(N, V)`` (needed by ``full``).
        Through other wrappers, use :func:`textenv.supply_policy_logprobs`."""
        self._supplied = torch.as_tensor(logprobs, dtype=torch.float32).detach().cpu()

    def _take_supplied(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The supplied log-prob of each row's action ``(B,)`` and the whole log-softmax ``(B, V)`` (None when
        only the chosen tokens' were supplied); consumes the supply."""
        supplied, self._supplied = self._supplied, None
        if supplied is None:
            raise RuntimeError(
                "KL shaping in kl_mode='policy' needs the acting policy's log-probs before each step: call "
                "textenv.supply_policy_logprobs(env, logprobs) first, or make the env with kl_mode='reference' for "
                "black-box agents (and give the agent an entropy bonus of kl_coef; see textenv.kl)"
            )
        batch, V = len(actions), self._vocab
        if supplied.shape in ((batch, V), (V,)):
            full = supplied.view(batch, V)  # (B, V)
            return full.gather(1, actions.view(-1, 1)).squeeze(1), full
        if supplied.numel() == batch and self.estimator != "full":
            return supplied.view(batch), None
        need = f"({V},)" if batch == 1 else f"({batch}, {V})"
        raise ValueError(
            f"supplied policy log-probs have shape {tuple(supplied.shape)}; expected {need} (the next-token "
            f"log-softmax){'' if self.estimator == 'full' else ' or one log-prob per env'} for estimator {self.estimator!r}"
        )

    def _kl_terms(self, actions: torch.Tensor, live: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``kl_timing="step"``: (reward term added to the env reward, KL estimate) per row, each ``(B,)``;
        consumes the supply. Rows not ``live`` (frozen) are not checked: the caller masks them."""
        ref_logprobs = self.ref.next_logprobs.cpu()  # (B, V), log-softmax of the reference logits
        if self.temperature != 1.0:  # log_softmax(logits / T) = log_softmax(log_softmax(logits) / T)
            ref_logprobs = torch.log_softmax(ref_logprobs / self.temperature, dim=-1)  # (B, V)
        ref_lp = ref_logprobs.gather(1, actions.view(-1, 1)).squeeze(1)  # (B,)
        if self.mode == "reference":
            self._check_finite(ref_lp, live, actions, None, ref_logprobs)
            return self.controller.value * ref_lp, torch.full((len(actions),), float("nan"))
        policy_lp, full = self._take_supplied(actions)
        kl = kl_estimate(policy_lp, ref_lp, self.estimator, full, ref_logprobs)  # (B,)
        self._check_finite(kl, live, actions, full, ref_logprobs)
        return -self.controller.value * kl, kl

    # ---------------------------------------------------------------- kl_timing="end"
    def _start_rows(self, rows, prompt_ids: list[list[int]]) -> None:
        """Rows that (re)start an episode with these prompts. A row whose episode was still running (a reset in
        mid-episode, a ``TimeLimit`` outside this wrapper) had its KL never scored: warned, then dropped."""
        cut = [i for i in rows if self._tokens[i]]
        if cut:
            warnings.warn(
                f"kl_timing='end': env(s) {cut} restarted in the middle of an episode ({len(self._tokens[cut[0]])} "
                f"tokens), whose KL is scored only when it ends inside the KL wrapper, so it was never added; bound "
                f"episodes with max_new_tokens (not a TimeLimit around the env) or use kl_timing='step'",
                RuntimeWarning, stacklevel=3)
        for i, ids in zip(rows, prompt_ids):
            self._prompt_ids[i] = list(ids)
            self._clear(i)

    def _clear(self, i: int) -> None:
        """Forget row ``i``'s recorded episode (scored, or dropped)."""
        self._tokens[i], self._betas[i], self._policy_lp[i], self._policy_full[i] = [], [], [], []

    def _take_step(self, actions: torch.Tensor, live: torch.Tensor):
        """``kl_timing="end"``, before the env's step: the checked supply (policy mode), ``(policy_lp, full)``."""
        if self.mode == "reference":
            return None, None
        policy_lp, full = self._take_supplied(actions)
        bad = (live & ~torch.isfinite(policy_lp)).nonzero().squeeze(1)
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"supplied policy log-prob of env {i} (token {int(actions[i])}) is {float(policy_lp[i])}; "
                             f"expected a finite log-probability of the sampled token")
        return policy_lp, full

    def _record(self, rows, actions: torch.Tensor, policy_lp, full) -> None:
        """``kl_timing="end"``, after the env's step: append each live row's token (and β, policy log-probs)."""
        for i in rows:
            self._tokens[i].append(int(actions[i]))
            self._betas[i].append(self.controller.value)
            if policy_lp is not None:
                self._policy_lp[i].append(float(policy_lp[i]))
            if full is not None and self.estimator == "full":  # (V,) per token: kept only where the estimator needs it
                self._policy_full[i].append(full[i].clone())

    def _score_ends(self, rows) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """``kl_timing="end"``: one teacher-forced reference pass over the finished ``rows``' prompts and
        completions; per row, the reward term of each token ``(T,)`` and (policy mode) its KL estimate ``(T,)``.
        The rows' records are cleared, whether they score or are refused."""
        try:
            return self._score_rows(rows)
        finally:  # scored or refused: the episodes are over either way
            for i in rows:
                self._clear(i)

    def _score_rows(self, rows) -> list[tuple[np.ndarray, np.ndarray | None]]:
        batch = completion_batch([self._prompt_ids[i] for i in rows], [self._tokens[i] for i in rows], self._pad)
        device = next(self.ref_model.parameters()).device
        with torch.inference_mode():
            logits = self.ref_model(input_ids=batch["input_ids"].to(device),
                                    attention_mask=batch["attention_mask"].to(device)).logits  # (R, L, V)
            logits = at_completion(logits, batch["prompt_len"], batch["actions"].shape[1])  # (R, T, V)
            ref_logprobs = torch.log_softmax(logits.float() / self.temperature, dim=-1).cpu()  # (R, T, V)
        out = []
        for j, i in enumerate(rows):
            n = len(self._tokens[i])
            tokens = torch.tensor(self._tokens[i])  # (n,)
            ref_all = ref_logprobs[j, :n, : self._vocab]  # (n, V)
            ref_lp = ref_all.gather(1, tokens.view(-1, 1)).squeeze(1)  # (n,)
            betas = torch.tensor(self._betas[i], dtype=torch.float64)  # (n,)
            if self.mode == "reference":
                values, full, kl = ref_lp, None, None
            else:
                full = torch.stack(self._policy_full[i]) if self._policy_full[i] else None  # (n, V)
                values = kl = kl_estimate(torch.tensor(self._policy_lp[i]), ref_lp, self.estimator, full, ref_all)
            self._check_finite(values, torch.ones(n, dtype=torch.bool), tokens, full, ref_all,
                               where=lambda t, i=i: f"env {i}, completion token {t},")
            terms = (betas * values.double() * (1.0 if self.mode == "reference" else -1.0)).float()
            out.append((terms.double().numpy(), None if kl is None else kl.double().numpy()))
        return out

    @staticmethod
    def _check_finite(values, live, actions, full, ref_logprobs, where=lambda i: f"env {i}:") -> None:
        """Refuse a non-finite KL (or reference log-prob) of a live row, naming the row and the token."""
        bad = (live & ~torch.isfinite(values)).nonzero().squeeze(1)
        if not len(bad):
            return
        i = int(bad[0])
        if full is not None:  # the first token the policy can take and the reference cannot
            blocked = ((full[i] > -math.inf) & (ref_logprobs[i] == -math.inf)).nonzero().squeeze(1)
            token = int(blocked[0]) if len(blocked) else None
        else:
            token = int(actions[i])
        if token is not None and ref_logprobs[i, token] == -math.inf:
            raise ValueError(
                f"{where(i)} the reference gives token {token} probability 0 where the policy can take it, so "
                f"KL(π‖π_ref) = +inf; the reference must give some probability to every token the policy samples"
            )
        raise ValueError(f"{where(i)} KL estimate is {float(values[i])}; check the supplied policy log-probs (NaN or +inf?)")

    def _info(self) -> dict[str, Any]:
        return {"kl_mode": self.mode, "kl_estimator": self.estimator, "kl_timing": self.timing, "kl_coef": self.controller.value}


class KLShaping(_ReferenceMixin, gym.Wrapper):
    """Adds ``-β·KL_t`` (``"policy"`` mode) or ``β·log π_ref`` (``"reference"`` mode) to every token's reward
    (``kl_timing="end"``: their sum to the last token's).

    Args:
        env: a :class:`textenv.env.TextGenerationEnv` (possibly wrapped).
        kl_coef: β (initial β when adaptive).
        kl_estimator: ``"k1"``, ``"k2"``, ``"k3"`` or ``"full"`` (see :func:`kl_estimate`).
        kl_mode: ``"policy"`` or ``"reference"`` (module docstring).
        kl_target, kl_horizon: adaptive β (``kl_target=None``: fixed); β changes only at
            :meth:`KLController.end_batch` (module docstring).
        kl_temperature: the policy's sampling temperature ``T``; the reference logits are divided by it
            (default 1.0; finite, > 0).
        ref_model: name/path of the frozen reference (loaded, frozen), or a loaded module used as it is (run
            without gradients, never frozen or switched to eval mode: e.g. ``LMPolicy.reference_model()``, a
            LoRA policy's base with the adapter off); default: a fresh copy of the env's model.
        device: where a loaded reference model runs.
        kl_timing: ``"step"`` (a reference forward per token) or ``"end"`` (one teacher-forced pass when the
            episode ends; module docstring).

    ``info`` gains ``reward_kl`` (the term added), ``kl_mode``, ``kl_estimator``, ``kl_timing``, ``kl_coef`` on
    every step, ``kl`` (policy mode, ``"step"`` timing) on every step, and ``episode_kl`` (summed KL, policy
    mode) at the end; with ``"end"`` timing also ``reward_kl_tokens`` and ``kl_tokens`` (per token) at the end.
    """

    def __init__(self, env, kl_coef=0.05, kl_estimator="k1", kl_mode="policy", kl_target=None, kl_horizon=10_000,
                 ref_model=None, device="cpu", kl_temperature=1.0, kl_timing="step"):
        gym.Wrapper.__init__(self, env)
        self._setup(env.unwrapped.task, kl_coef, kl_estimator, kl_mode, kl_target, kl_horizon, kl_temperature, ref_model,
                    device, 1, kl_timing)
        self._episode_kl = 0.0

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        if self.timing == "step":
            self.ref.reset_rows([0], [self.env.unwrapped.prompt_token_ids()])
        else:
            self._start_rows([0], [self.env.unwrapped.prompt_token_ids()])
        self._episode_kl, self._supplied = 0.0, None
        return obs, {**info, **self._info()}

    def step(self, action):
        token = self.env.unwrapped.task.check_action(action)
        supplied = self._supplied
        if self.timing == "step":
            term, kl = self._kl_terms(torch.tensor([token]), torch.tensor([True]))
        else:
            policy_lp, full = self._take_step(torch.tensor([token]), torch.tensor([True]))
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except BaseException:  # the env's step left no trace (e.g. a failing reward model): neither does this one
            self._supplied = supplied
            raise
        info.update(self._info())
        if self.timing == "end":
            return obs, reward + self._end_step(token, policy_lp, full, terminated or truncated, info), terminated, truncated, info
        info["reward_kl"] = float(term[0])
        if self.mode == "policy":
            info["kl"] = float(kl[0])
            self._episode_kl += float(kl[0])
        if terminated or truncated:
            if self.mode == "policy":
                info["episode_kl"] = self._episode_kl
                self.controller.observe(self._episode_kl)
        else:
            self.ref.step(torch.tensor([token]))
        return obs, reward + float(term[0]), terminated, truncated, info

    def _end_step(self, token: int, policy_lp, full, done: bool, info: dict) -> float:
        """``kl_timing="end"``: record the token; at the episode's end score it and fill ``info``; the term added."""
        self._record([0], torch.tensor([token]), policy_lp, full)
        if not done:
            info["reward_kl"] = 0.0
            return 0.0
        (terms, kl), = self._score_ends([0])
        # lists, not arrays: a SyncVectorEnv stacks array infos into one (N, *shape) array, and episodes differ in length
        info.update(reward_kl=float(terms.sum()), reward_kl_tokens=terms.tolist())
        if kl is not None:
            info.update(kl_tokens=kl.tolist(), episode_kl=float(kl.sum()))
            self.controller.observe(float(kl.sum()))
        return float(terms.sum())


class KLShapingVector(_ReferenceMixin, gym.vector.VectorWrapper):
    """:class:`KLShaping` for :class:`textenv.vector_env.TextGenerationVectorEnv`: the reference model steps
    all N envs in one KV-cached forward per token and re-prefills only the envs that restart
    (``kl_timing="end"``: one teacher-forced pass over the envs that finish in a step).

    Frozen envs (autoreset ``"disabled"``, after their episode ended) get no KL term and record no KL. With
    same-step autoreset the KL entries of an episode's last step are in ``info["final_info"]`` too."""

    def __init__(self, env, kl_coef=0.05, kl_estimator="k1", kl_mode="policy", kl_target=None, kl_horizon=10_000,
                 ref_model=None, device="cpu", kl_temperature=1.0, kl_timing="step"):
        gym.vector.VectorWrapper.__init__(self, env)
        self._setup(env.unwrapped.task, kl_coef, kl_estimator, kl_mode, kl_target, kl_horizon, kl_temperature, ref_model,
                    device, env.num_envs, kl_timing)
        self._episode_kl = torch.zeros(env.num_envs, dtype=torch.float64)  # (N,)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)
        rows = np.flatnonzero(mask).tolist()
        if rows:  # an all-False reset_mask restarts nothing
            prompts = self.env.unwrapped.prompt_token_ids(rows)
            if self.timing == "step":
                self.ref.reset_rows(rows, prompts)
            else:
                self._start_rows(rows, prompts)
        self._episode_kl[rows] = 0.0
        self._supplied = None
        return obs, info

    def step(self, actions):
        base = self.env.unwrapped
        live = ~base.done  # (N,) before the step
        tokens = base._check_actions(actions)  # (N,)
        safe_tokens = tokens.clamp(0, base.task.vocab_size - 1)  # frozen rows' actions are not checked
        supplied = self._supplied
        if self.timing == "step":
            term, kl = self._kl_terms(safe_tokens, live)
            term = torch.where(live, term, torch.zeros_like(term))
        else:
            policy_lp, full = self._take_step(safe_tokens, live)
        try:
            obs, rewards, terminated, truncated, infos = self.env.step(actions)
        except BaseException:  # the env's step left no trace (e.g. a failing reward model): neither does this one
            self._supplied = supplied
            raise
        finished = torch.as_tensor(terminated | truncated)  # (N,)
        n = self.num_envs
        kl_info = {k: np.full(n, v, dtype=object if isinstance(v, str) else None) for k, v in self._info().items()}
        masks = {k: live for k in kl_info}
        if self.timing == "step":
            kl_info["reward_kl"], masks["reward_kl"] = term.double().numpy(), live
            if self.mode == "policy":
                kl = torch.where(live, kl, torch.zeros_like(kl)).double()
                kl_info["kl"], masks["kl"] = kl.numpy(), live
                self._episode_kl += kl
        else:
            self._record(live.nonzero().squeeze(1).tolist(), safe_tokens, policy_lp, full)
            try:
                term = self._end_terms(finished, kl_info, masks)
            except BaseException:  # refused after the env stepped: follow the env's restarts, then report
                self._episode_kl[finished] = 0.0
                if base.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP and finished.any():
                    restarted = finished.nonzero().squeeze(1).tolist()
                    self._start_rows(restarted, base.prompt_token_ids(restarted))
                raise
            masks["reward_kl"] = live
        if self.mode == "policy" and finished.any():
            kl_info["episode_kl"], masks["episode_kl"] = self._episode_kl.numpy().copy(), finished
            for episode_kl in self._episode_kl[finished].tolist():
                self.controller.observe(episode_kl)
            self._episode_kl[finished] = 0.0
        for k, value in kl_info.items():
            infos[k], infos[f"_{k}"] = value, masks[k].numpy().copy()
        if "final_info" in infos:  # same-step autoreset: the base env built it before the KL terms existed
            final = infos["final_info"]
            for k, value in kl_info.items():
                final[k], final[f"_{k}"] = value.copy(), finished.numpy().copy()
        restarted = finished.nonzero().squeeze(1).tolist() if base.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP else []
        if self.timing == "step":
            if len(restarted) < n and not bool(base.done.all()):  # rows that go on advance; all frozen: nothing to do
                self.ref.step(torch.where(live, tokens, torch.full_like(tokens, base.task.pad_token_id)))
            if restarted:
                self.ref.reset_rows(restarted, base.prompt_token_ids(restarted))
        elif restarted:
            self._start_rows(restarted, base.prompt_token_ids(restarted))
        return obs, rewards + term.double().numpy(), terminated, truncated, infos

    def _end_terms(self, finished: torch.Tensor, kl_info: dict, masks: dict) -> torch.Tensor:
        """``kl_timing="end"``: score the episodes that ended in this step; fill the per-token infos; the terms
        added to this step's rewards ``(N,)`` (each finished row's sum, 0 elsewhere)."""
        n = self.num_envs
        term = torch.zeros(n, dtype=torch.float64)
        ended = finished.nonzero().squeeze(1).tolist()
        if ended:
            per_token, per_token_kl = np.full(n, None, dtype=object), np.full(n, None, dtype=object)
            for i, (terms, kl) in zip(ended, self._score_ends(ended)):
                term[i] = float(terms.sum())
                per_token[i] = terms
                if kl is not None:
                    per_token_kl[i] = kl
                    self._episode_kl[i] = float(kl.sum())
            kl_info["reward_kl_tokens"], masks["reward_kl_tokens"] = per_token, finished
            if self.mode == "policy":
                kl_info["kl_tokens"], masks["kl_tokens"] = per_token_kl, finished
        kl_info["reward_kl"] = term.numpy()
        return term


def _kl_wrapper(env):
    """The KL wrapper under ``env``'s wrappers (walking ``.env``), None, or for a ``SyncVectorEnv`` a list with
    one entry (wrapper or None) per sub-env."""
    while env is not None:
        if isinstance(env, (KLShaping, KLShapingVector)):
            return env
        if isinstance(env, gym.vector.SyncVectorEnv):
            found = [_kl_wrapper(sub) for sub in env.envs]
            return found if any(w is not None for w in found) else None
        env = getattr(env, "env", None)
    return None


def supply_policy_logprobs(env, logprobs) -> bool:
    """Hand the acting policy's log-probs for the coming ``step`` to the KL shaping of ``env``, through any
    single or vector Gymnasium wrappers; returns whether it takes them.

    ``logprobs``: the chosen token's log-prob(s), shape ``()``/``(N,)``, or the whole next-token log-softmax,
    ``(V,)``/``(N, V)`` (what the ``full`` estimator needs). For a ``SyncVectorEnv`` of KL-shaped envs, row ``i``
    goes to sub-env ``i``. Nothing is taken (False) when ``env`` has no KL shaping or shapes in
    ``"reference"`` mode, which needs no policy log-probs.
    """
    found = _kl_wrapper(env)
    if isinstance(found, list):
        rows = torch.as_tensor(logprobs)
        if rows.dim() == 0 or rows.shape[0] != len(found):
            raise ValueError(
                f"a SyncVectorEnv of {len(found)} envs needs one row of log-probs per env, shape ({len(found)},) or "
                f"({len(found)}, V); got {tuple(rows.shape)}"
            )
        taken = False
        for w, row in zip(found, rows):
            if w is not None and w.mode == "policy":
                w.supply_policy_logprobs(row)
                taken = True
        return taken
    if found is None or found.mode != "policy":
        return False
    found.supply_policy_logprobs(logprobs)
    return True


def kl_controller(env) -> KLController | None:
    """The :class:`KLController` (β) of ``env``'s KL shaping, through any single or vector Gymnasium wrappers;
    None when ``env`` has no KL shaping.

    A ``SyncVectorEnv`` with one KL-shaped sub-env gives that env's controller; one with several is refused:
    each sub-env has its own β, so a batch-level β needs the batched env, ``gym.make_vec(id, num_envs=N)``.
    """
    found = _kl_wrapper(env)
    if isinstance(found, list):
        shaped = [w for w in found if w is not None]
        if len(shaped) > 1:
            raise ValueError(
                f"this SyncVectorEnv holds {len(shaped)} KL-shaped envs, each with its own KLController (β); make the "
                f"batched env instead, gym.make_vec(env_id, num_envs={len(found)}), which has one β for all envs"
            )
        found = shaped[0]
    return None if found is None else found.controller
