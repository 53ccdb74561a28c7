"""Tests written to kill the mutants of ``textenv/kl.py`` that survived ``benchmarks/mutation.py`` (see
benchmarks/results/mutation.md).

Each test names, in its docstring, the mutation it guards against and why the test catches it; expected values are
worked out by hand in the comments or come from an independent computation.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from textenv.kl import (
    KLController,
    KLShaping,
    KLShapingVector,
    _kl_wrapper,
    kl_estimate,
    supply_policy_logprobs,
)

V = 2048  # the built-in tokenizer's vocabulary


def _zero(prompts, completions):
    return [0.0] * len(prompts)


def _single(ref, **kwargs):
    """A single Sentiment-v1 env with KL shaping against ``ref`` (a loaded module), no reward model to load."""
    fields = dict(reward_model=_zero, gold_reward=None, max_new_tokens=4, kl_coef=0.2, ref_model=ref)
    return gym.make("textenv/Sentiment-v1", **{**fields, **kwargs})


def _batched(ref, n=2, **kwargs):
    fields = dict(reward_model=_zero, gold_reward=None, max_new_tokens=4, kl_coef=0.2, ref_model=ref)
    return gym.make_vec("textenv/Sentiment-v1", num_envs=n, **{**fields, **kwargs})


def _ref_logprobs(model, ids, temperature=1.0):
    """log π_ref(· | ids) at the end of one unpadded row, (V,)."""
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double() / temperature, -1)


class _Forbidding(torch.nn.Module):
    """``base`` with probability 0 (logit −inf) on some tokens."""

    def __init__(self, base, tokens):
        super().__init__()
        self.base, self.config, self.tokens = base, base.config, list(tokens)

    def forward(self, **kwargs):
        out = self.base(**kwargs)
        out.logits[..., self.tokens] = -math.inf
        return out


class _WithConfig(torch.nn.Module):
    """A reference module that only carries a ``config`` (what the vocabulary check reads)."""

    def __init__(self, config):
        super().__init__()
        self.config, self.weight = config, torch.nn.Parameter(torch.zeros(1))


def test_kl_estimate_defaults_to_k1_and_full_needs_both_vectors():
    """A mutant that misspells the default estimator or lets ``full`` run with one vector missing (``and``) or
    words the refusal otherwise — caught because the default must be ``k1 = r`` and the refusal exact."""
    lp, lr = torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))
    assert kl_estimate(lp, lr).item() == pytest.approx(math.log(2.0))
    with pytest.raises(ValueError, match=r"^the 'full' KL estimator needs the whole policy and reference log-prob "
                                         r"vectors \(\.\.\., V\)$"):
        kl_estimate(None, None, "full", torch.zeros(3), None)


def test_a_controller_takes_beta_zero_and_a_horizon_of_one():
    """A mutant that refuses β = 0 (``> 0``) or a horizon of 1 (``<= 1``, ``< 2``) — caught because both are valid:
    with horizon 1 an error of +0.2 moves β by 20 % in one episode (0.1 → 0.12)."""
    assert KLController(0.0).value == 0.0
    controller = KLController(0.1, target=1.0, horizon=1)
    controller.observe(5.0)
    assert controller.end_batch() == pytest.approx(0.12)


def test_kl_options_are_refused_naming_the_value_and_the_choices(lm_dir):
    """A mutant that raises these refusals without a message or rewords them — caught by the exact messages."""
    base = gym.make("textenv/Sentiment-v1", reward_model=_zero, gold_reward=None)
    for kwargs, message in (
            (dict(kl_estimator="k4"), r"^kl_estimator='k4'; expected one of \('k1', 'k2', 'k3', 'full'\)$"),
            (dict(kl_mode="both"), r"^kl_mode='both'; expected one of \('policy', 'reference'\)$"),
            (dict(kl_timing="later"), r"^kl_timing='later'; expected one of \('step', 'end'\) \(when the reference "
                                      r"scores the tokens\)$"),
            (dict(kl_mode="reference", kl_target=1.0), r"^kl_target needs kl_mode='policy': in 'reference' mode the "
                                                      r"env cannot measure the KL$")):
        with pytest.raises(ValueError, match=message):
            KLShaping(base, **kwargs)


def test_the_reference_vocabulary_is_read_from_the_text_config_or_the_config(base_lm):
    """A mutant that reads the vocabulary size without defaults (a module without ``config``: AttributeError), from
    the top-level config when a text config exists (``and False``, ``hasattr(None, ...)``, a misspelt name), or
    always from ``get_text_config`` (``or True``) — caught because a module without a config must be refused with
    this message, and a config whose text config (or itself, having none) says 2048 must be accepted."""
    from types import SimpleNamespace

    base = gym.make("textenv/Sentiment-v1", reward_model=_zero, gold_reward=None)
    with pytest.raises(ValueError, match=r"^reference model vocabulary None differs from the env's 2048 \(.*\); the "
                                         r"reference must share the policy's tokenizer$"):
        KLShaping(base, kl_mode="reference", ref_model=torch.nn.Linear(1, 1))
    multimodal = SimpleNamespace(vocab_size=5, get_text_config=lambda: SimpleNamespace(vocab_size=V))
    for config in (SimpleNamespace(vocab_size=V), multimodal):
        assert KLShaping(base, kl_mode="reference", kl_timing="end", ref_model=_WithConfig(config)).ref is None


def test_a_reference_loaded_by_name_is_frozen_and_on_the_device_asked_for():
    """A mutant that loads the reference without ``device`` (or ``None``; single or batched wrapper) or leaves its
    weights trainable (``requires_grad_(True)``) — caught because ``device="meta"`` must put the weights there, and
    a reference it loads itself must be frozen."""
    base = gym.make("textenv/Sentiment-v1", reward_model=_zero, gold_reward=None)
    single = KLShaping(base, kl_mode="reference", device="meta")
    batched = KLShapingVector(gym.make_vec("textenv/Sentiment-v1", num_envs=2, reward_model=_zero, gold_reward=None),
                              kl_mode="reference", device="meta")
    for wrapper in (single, batched):
        params = list(wrapper.ref_model.parameters())
        assert {p.device.type for p in params} == {"meta"} and not any(p.requires_grad for p in params)


def test_a_wrapper_made_directly_uses_its_documented_defaults_and_the_given_reference(base_lm):
    """A mutant that changes a wrapper's defaults (β 1.05, horizon 10001) or ignores ``ref_model`` (``None``: a fresh
    copy of the env's model) — caught because both wrappers must start with β 0.05, the controller's horizon of
    10 000 episodes, k1, policy mode, step timing, and use the module they are given."""
    base = gym.make("textenv/Sentiment-v1", reward_model=_zero, gold_reward=None)
    base_vec = gym.make_vec("textenv/Sentiment-v1", num_envs=2, reward_model=_zero, gold_reward=None)
    for wrapper in (KLShaping(base, ref_model=base_lm), KLShapingVector(base_vec, ref_model=base_lm)):
        assert (wrapper.controller.value, wrapper.controller.horizon) == (0.05, 10_000)
        assert (wrapper.estimator, wrapper.mode, wrapper.timing) == ("k1", "policy", "step")
        assert wrapper.ref_model is base_lm


def test_a_reference_with_a_shorter_context_than_the_episode_is_clamped(lm_dir):
    """A mutant that gives the reference's cache no ``max_positions`` (``None``, dropped, ``context_length(None)``)
    — caught because a reference of 8 positions must follow a 4-token prompt through 8 tokens (positions 4..11)
    without an index error."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    short = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=8, n_embd=8, n_layer=1, n_head=2)).eval()
    env = _single(short, kl_mode="reference", max_new_tokens=8)
    _, info = env.reset(options={"prompt": "the food was"})
    assert info["prompt"] == "the food was"
    for _ in range(8):
        _, reward, terminated, truncated, _ = env.step(5)
        assert math.isfinite(reward)
    assert terminated or truncated


def test_supply_errors_name_the_shape_expected_for_the_estimator_and_the_batch(base_lm):
    """A mutant that rewords the missing-supply refusal, takes one log-prob per env for ``full`` (a misspelt
    ``"full"``), or builds the expected shape or the estimator's alternatives wrongly (single vs batched, ``full``
    vs ``k1``) — caught by the exact messages for a single env (k1, full) and a batched one (k1)."""
    env = _single(base_lm)
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match=r"^KL shaping in kl_mode='policy' needs the acting policy's log-probs before "
                                           r"each step: call textenv\.supply_policy_logprobs\(env, logprobs\) first, or "
                                           r"make the env with kl_mode='reference' for black-box agents \(and give the "
                                           r"agent an entropy bonus of kl_coef; see textenv\.kl\)$"):
        env.step(5)
    supply_policy_logprobs(env, torch.zeros(3))
    with pytest.raises(ValueError, match=r"^supplied policy log-probs have shape \(3,\); expected \(2048,\) \(the "
                                         r"next-token log-softmax\) or one log-prob per env for estimator 'k1'$"):
        env.step(5)
    full = _single(base_lm, kl_estimator="full")
    full.reset(seed=0)
    supply_policy_logprobs(full, torch.tensor(-1.0))
    with pytest.raises(ValueError, match=r"^supplied policy log-probs have shape \(\); expected \(2048,\) \(the "
                                         r"next-token log-softmax\) for estimator 'full'$"):
        full.step(5)
    batched = _batched(base_lm)
    batched.reset(seed=0)
    supply_policy_logprobs(batched, torch.zeros(3))
    with pytest.raises(ValueError, match=r"^supplied policy log-probs have shape \(3,\); expected \(2, 2048\) \(the "
                                         r"next-token log-softmax\) or one log-prob per env for estimator 'k1'$"):
        batched.step(np.array([5, 6]))


def test_reference_mode_at_temperature_two_scores_the_tempered_reference(base_lm):
    """A mutant that applies the temperature only when it is not 2.0 — caught because at ``kl_temperature=2`` each
    reward must be ``β·log softmax(logits / 2)[a]``, by hand."""
    env = _single(base_lm, kl_mode="reference", kl_temperature=2.0)
    env.reset(options={"prompt": "the food was"})
    ids = env.unwrapped.prompt_token_ids()
    for action in (5, 17):
        expected = 0.2 * _ref_logprobs(base_lm, ids, temperature=2.0)[action].item()
        assert env.step(action)[1] == pytest.approx(expected, abs=1e-5)
        ids.append(action)


def test_a_token_the_reference_forbids_is_named_in_reference_and_k1_policy_modes(base_lm):
    """A mutant that checks the reference's log-probs without the actions or without the log-probs (``None``) —
    caught because taking a token of probability 0 under the reference must be refused naming it, in reference
    mode and in policy mode with one log-prob per step (k1)."""
    forbidding = _Forbidding(base_lm, [5])
    message = r"^env 0: the reference gives token 5 probability 0 where the policy can take it, so KL"
    reference = _single(forbidding, kl_mode="reference")
    reference.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        reference.step(5)
    policy = _single(forbidding)
    policy.reset(seed=0)
    supply_policy_logprobs(policy, torch.tensor(-1.0))
    with pytest.raises(ValueError, match=message):
        policy.step(5)


def test_the_full_estimator_names_the_first_token_the_policy_can_take_and_the_reference_cannot(base_lm):
    """A mutant that also counts tokens the policy cannot take (``>= -inf``), assumes a blocked token exists
    (``or True``: IndexError), tests the token with ``or``, or garbles the NaN refusal — caught because with the
    policy giving token 3 probability 0 and the reference forbidding 3 and 7, token 7 must be named; and a NaN in
    the policy's log-probs must be refused as such, naming env 0."""
    env = _single(_Forbidding(base_lm, [3, 7]), kl_estimator="full")
    env.reset(seed=0)
    policy = torch.log_softmax(torch.zeros(V), -1)
    policy[3] = -math.inf
    supply_policy_logprobs(env, policy)
    with pytest.raises(ValueError, match=r"^env 0: the reference gives token 7 probability 0"):
        env.step(9)
    plain = _single(base_lm, kl_estimator="full")
    plain.reset(seed=0)
    nan = torch.log_softmax(torch.zeros(V), -1)
    nan[4] = math.nan
    supply_policy_logprobs(plain, nan)
    with pytest.raises(ValueError, match=r"^env 0: KL estimate is nan; check the supplied policy log-probs \(NaN or "
                                         r"\+inf\?\)$"):
        plain.step(9)


def test_end_timing_names_the_token_the_estimators_own_record_blocks(base_lm):
    """A mutant that checks an ended episode without the policy's full log-probs (``full`` estimator: ``None``), or
    records them for another estimator (``or``: k1 then names a token from the full vector) — caught because with
    ``full`` the first token the policy can take and the reference forbids (3) must be named, and with k1 the
    sampled token (5)."""
    uniform = torch.log_softmax(torch.zeros(V), -1)
    for estimator, tokens, action, named in (("full", [3], 9, 3), ("k1", [3, 5], 5, 5)):
        env = _single(_Forbidding(base_lm, tokens), kl_estimator=estimator, kl_timing="end", max_new_tokens=1)
        env.reset(seed=0)
        supply_policy_logprobs(env, uniform)
        with pytest.raises(ValueError, match=rf"^env 0, completion token 0, the reference gives token {named} "
                                             r"probability 0"):
            env.step(action)


def test_single_env_end_timing_with_the_full_estimator_gives_the_step_timings_values(base_lm):
    """A mutant that records no full log-probs at a single env's step (``None``), reports a non-final step's
    ``reward_kl`` otherwise (``None``, 1.0, another key) or hands the controller ``None`` — caught because the
    end-timed episode must carry the step-timed per-token KL values, 0.0 on earlier steps, and leave its summed KL
    pending in an adaptive controller."""
    rng = torch.Generator().manual_seed(0)
    policies = [torch.log_softmax(torch.randn(V, generator=rng), -1) for _ in range(3)]
    actions = [5, 17, 300]
    per_step = []
    step_env = _single(base_lm, kl_estimator="full", max_new_tokens=3)
    step_env.reset(options={"prompt": "the food was"})
    for policy, action in zip(policies, actions):
        supply_policy_logprobs(step_env, policy)
        per_step.append(step_env.step(action)[4]["kl"])
    end_env = _single(base_lm, kl_estimator="full", kl_timing="end", max_new_tokens=3, kl_target=1.0)
    end_env.reset(options={"prompt": "the food was"})
    for t, (policy, action) in enumerate(zip(policies, actions)):
        supply_policy_logprobs(end_env, policy)
        _, _, terminated, _, info = end_env.step(action)
        if t < 2:
            assert info["reward_kl"] == 0.0 and not terminated
    assert info["kl_tokens"] == pytest.approx(per_step, abs=1e-5)
    assert _kl_wrapper(end_env).controller.pending == [pytest.approx(sum(per_step), abs=1e-5)]


def test_end_timing_refuses_a_non_finite_supplied_logprob_before_the_step(base_lm):
    """A mutant that marks the single env's row as not live when checking the supply (``False``) — caught because
    a NaN log-prob of the sampled token must be refused before the step, naming env 0 and the token."""
    env = _single(base_lm, kl_timing="end")
    env.reset(seed=0)
    supply_policy_logprobs(env, torch.tensor(math.nan))
    with pytest.raises(ValueError, match=r"^supplied policy log-prob of env 0 \(token 5\) is nan; expected a finite "
                                         r"log-probability of the sampled token$"):
        env.step(5)


def test_a_step_that_fails_in_the_env_keeps_the_supplied_logprobs(base_lm):
    """A mutant that forgets the supply when the env's step raises (saved or restored as ``None``; single and
    batched) — caught because after a failing reward the retried step must go through without a new supply."""
    fail = {"now": True}

    def reward(prompts, completions):
        if fail["now"]:
            raise RuntimeError("reward server down")
        return _zero(prompts, completions)

    for env, action, supply in ((_single(base_lm, reward_model=reward, dense=True), 5, torch.tensor(-1.0)),
                                (_batched(base_lm, reward_model=reward, dense=True), np.array([5, 6]),
                                 torch.tensor([-1.0, -1.0]))):
        fail["now"] = False
        env.reset(seed=0)
        fail["now"] = True
        supply_policy_logprobs(env, supply)
        with pytest.raises(RuntimeError, match="reward server down"):
            env.step(action)
        fail["now"] = False
        env.step(action)  # the supply is still there


def test_a_batched_episode_kl_is_summed_in_float64_and_reset_options_reach_the_env(base_lm):
    """A mutant that sums the batched episode KL in float32 (``dtype=None`` or dropped) or drops the reset
    ``options`` — caught because each ``episode_kl`` must be exactly the float64 sum of its steps' ``kl``, and the
    prompts asked for must be the ones used."""
    env = _batched(base_lm, max_new_tokens=3)
    _, info = env.reset(options={"prompts": ["the food was", "the room was"]})
    assert info["prompt"].tolist() == ["the food was", "the room was"]
    rng = torch.Generator().manual_seed(1)
    kls = []
    for step in range(3):
        supply_policy_logprobs(env, -torch.rand(2, generator=rng) * 5)
        _, _, terminated, _, info = env.step(np.array([5 + step, 9 + step]))
        kls.append(info["kl"])
    assert terminated.all()
    assert info["episode_kl"].tolist() == [kls[0][i] + kls[1][i] + kls[2][i] for i in range(2)]


def test_a_partial_reset_restarts_only_the_masked_envs_reference_rows(base_lm):
    """A mutant that ignores ``reset_mask`` (``None``, a misspelt key) restarts every reference row — caught because
    env 0, not reset, must go on being scored after its prompt and its first token, by hand."""
    env = _batched(base_lm, kl_mode="reference")
    env.reset(options={"prompts": ["the food was", "the room was"]})
    ids = env.unwrapped.prompt_token_ids([0])[0]
    env.step(np.array([5, 6]))
    env.reset(options={"prompts": ["the food was", "the bed was"], "reset_mask": np.array([False, True])})
    rewards = env.step(np.array([17, 18]))[1]
    assert rewards[0] == pytest.approx(0.2 * _ref_logprobs(base_lm, ids + [5])[17].item(), abs=1e-5)


def test_frozen_envs_actions_are_clamped_before_the_reference_reads_them(base_lm):
    """A mutant that clamps frozen envs' (unchecked) actions wrongly (no bound, no lower bound, ``V + 1``) or
    live ones too (``V − 2``) — caught because with env 0 frozen, its actions ``V + 5`` and ``−3`` must not fail,
    and env 1's last-token action ``V − 1`` must be scored as itself, by hand."""
    env = _batched(base_lm, kl_mode="reference", autoreset_mode="disabled", max_new_tokens=6)
    env.reset(options={"prompts": ["the food was", "the room was"]})
    ids = env.unwrapped.prompt_token_ids([1])[0]
    env.step(np.array([0, 6]))  # EOS: env 0 ends and is frozen
    ids.append(6)
    for frozen_action in (V + 5, -3):
        rewards = env.step(np.array([frozen_action, V - 1]))[1]
        assert rewards[0] == 0.0
        assert rewards[1] == pytest.approx(0.2 * _ref_logprobs(base_lm, ids)[V - 1].item(), abs=1e-5)
        ids.append(V - 1)


def test_batched_kl_infos_keep_strings_as_objects_and_numbers_as_floats(base_lm):
    """A mutant that lets numpy pick the info arrays' dtypes (``'<U9'`` strings) or makes every one an object array
    — caught because ``kl_mode`` must be an object array (as Gymnasium keeps non-numeric infos) and ``kl_coef`` a
    float array."""
    env = _batched(base_lm, kl_mode="reference")
    env.reset(seed=0)
    infos = env.step(np.array([5, 6]))[4]
    assert infos["kl_mode"].dtype == object and infos["kl_mode"].tolist() == ["reference", "reference"]
    assert infos["kl_coef"].dtype == np.float64


def test_after_a_refused_episode_end_same_step_autoreset_scores_the_new_episode(base_lm):
    """A mutant that does not restart the refused envs' records with same-step autoreset (``!=``) — caught because
    the episode after the refusal must be scored after its own prompt, by hand."""
    env = _batched(_Forbidding(base_lm, [5]), kl_mode="reference", kl_timing="end", max_new_tokens=2)
    env.reset(seed=0)
    env.step(np.array([6, 7]))
    with pytest.raises(ValueError, match="the reference gives token 5 probability 0"):
        env.step(np.array([5, 8]))
    prompts = env.unwrapped.prompt_token_ids([0, 1])
    env.step(np.array([9, 10]))
    infos = env.step(np.array([11, 12]))[4]
    for i, tokens in enumerate(([9, 11], [10, 12])):
        expected = [0.2 * _ref_logprobs(base_lm, prompts[i] + tokens[:t])[tokens[t]].item() for t in range(2)]
        assert infos["reward_kl_tokens"][i].tolist() == pytest.approx(expected, abs=1e-5)


def test_reference_mode_reports_no_episode_kl(base_lm):
    """A mutant that reports an episode KL whenever an episode ends (``or``) — caught because reference mode cannot
    measure the KL: no ``episode_kl`` at the end."""
    env = _batched(base_lm, kl_mode="reference", max_new_tokens=1)
    env.reset(seed=0)
    infos = env.step(np.array([5, 6]))[4]
    assert "episode_kl" not in infos and "episode_kl" not in infos["final_info"]


def test_the_reference_runs_no_forward_for_envs_that_all_restart_or_all_freeze(base_lm):
    """A mutant that steps the reference although every env restarts (``<=``, ``or``), although every env is frozen
    (``bool(None)``), or prefills envs that froze (``or True``) — caught by the reference's forwards in such steps:
    one prefill when both envs restart, none when both freeze, one step when one of two freezes."""
    forwards = []
    hook = base_lm.register_forward_hook(lambda *args: forwards.append(1))
    try:
        same_step = _batched(base_lm, kl_mode="reference", max_new_tokens=1)
        same_step.reset(seed=0)
        forwards.clear()
        same_step.step(np.array([5, 6]))
        assert len(forwards) == 1  # the two new prompts' prefill, no step of the old ones
        disabled = _batched(base_lm, kl_mode="reference", max_new_tokens=2, autoreset_mode="disabled")
        disabled.reset(seed=0)
        forwards.clear()
        disabled.step(np.array([0, 6]))  # env 0 freezes (EOS), env 1 goes on
        assert len(forwards) == 1
        forwards.clear()
        disabled.step(np.array([5, 7]))  # env 1 reaches the cap: both frozen
        assert len(forwards) == 0
    finally:
        hook.remove()


def test_end_timing_rewards_are_the_float64_sums_of_the_per_token_terms(base_lm):
    """A mutant that sums an ended episode's KL terms in float32 (``dtype=None`` or dropped) — caught because each
    reward must be exactly the float64 sum of its ``reward_kl_tokens`` (the reward model scores 0)."""
    env = _batched(base_lm, kl_mode="reference", kl_timing="end", max_new_tokens=3)
    env.reset(seed=0)
    for step in range(3):
        rewards, _, _, infos = env.step(np.array([5 + step, 9 + step]))[1:]
    assert infos["reward_kl"].dtype == np.float64
    assert rewards.tolist() == [float(np.sum(infos["reward_kl_tokens"][i])) for i in range(2)]


def test_supplying_through_a_sync_vector_env_says_whether_any_env_took_them(base_lm):
    """A mutant that answers ``None`` or always ``True``, or asks a sub-env without KL shaping for its mode (``or``)
    — caught because a SyncVectorEnv of a policy-mode KL env and a plain env must take the rows (True), and one of
    reference-mode KL envs must not (False)."""
    mixed = gym.vector.SyncVectorEnv([lambda: _single(base_lm),
                                      lambda: gym.make("textenv/Sentiment-v1", reward_model=_zero, gold_reward=None,
                                                       max_new_tokens=4)])
    assert supply_policy_logprobs(mixed, torch.tensor([-1.0, -2.0])) is True
    reference = gym.vector.SyncVectorEnv([lambda: _single(base_lm, kl_mode="reference")] * 2)
    assert supply_policy_logprobs(reference, torch.tensor([-1.0, -2.0])) is False


def test_a_batched_end_timing_env_stepped_before_its_first_reset_raises_a_runtime_error(base_lm):
    """A mutant that starts the wrappers with ``_supplied = ""`` instead of ``None`` fails inside the wrapper with an
    AttributeError — caught because stepping before the first reset must be the RuntimeError that says what is
    missing."""
    env = _batched(base_lm, kl_timing="end")
    with pytest.raises(RuntimeError, match="needs the acting policy's log-probs"):
        env.step(np.array([5, 6]))
