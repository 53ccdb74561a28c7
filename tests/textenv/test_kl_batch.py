"""KL shaping in the batched env: against N single envs, adaptive β per batch, ``final_info``, the ``full``
estimator with suppressed tokens, an impossible reference token, and the sampling temperature."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import textenv
from textenv.kl import _kl_wrapper

ID = "textenv/Sentiment-v1"


def zero_reward(prompts, completions):
    return [0.0] * len(prompts)


def _tokens(env):
    """EOS and a token that is not EOS."""
    eos = env.unwrapped.task.eos_token_id
    return eos, (eos + 1) % env.unwrapped.task.vocab_size


def test_batched_env_changes_beta_only_at_end_batch_with_the_batch_mean():
    """Guards against β updated by the env once per group of rows finishing on the same step, with that group's
    KL: 32 episodes at KL 0.5 (ending on step 1) and 32 at KL 30 (3 steps) with target 6 left β at 0.09999996."""
    env = gym.make_vec(ID, num_envs=64, autoreset_mode="disabled", kl_coef=0.1, kl_target=6.0, kl_horizon=10_000,
                       max_new_tokens=3, reward_model=zero_reward)
    controller = textenv.kl_controller(env)
    env.reset(seed=0)
    eos, word = _tokens(env)
    short = torch.arange(64) < 32
    actions = torch.where(short, eos, word)  # (64,)
    per_token = torch.where(short, 0.5, 10.0)  # (64,) k1 = log π(a) − log π_ref(a)
    episode_kl = np.zeros(64)
    for _ in range(3):
        ref_lp = env.ref.next_logprobs.gather(1, actions.view(-1, 1)).squeeze(1)  # (64,)
        textenv.supply_policy_logprobs(env, ref_lp + per_token)
        _, _, terminated, truncated, info = env.step(actions)
        if "episode_kl" in info:
            episode_kl[info["_episode_kl"]] = info["episode_kl"][info["_episode_kl"]]
        assert controller.value == 0.1  # β never changes within a rollout
    np.testing.assert_allclose(episode_kl, np.where(short, 0.5, 30.0), atol=1e-4)
    # batch mean 15.25 → error clip(15.25/6 − 1, ±0.2) = 0.2 → 0.1·(1 + 0.2·64/10000)
    assert controller.end_batch() == pytest.approx(0.100128, abs=1e-9)


def test_batched_env_equals_n_single_envs_with_policy_kl_frozen_rows_and_adaptive_beta():
    """Guards against policy-mode KL of finished (frozen) rows not masked in the batched env (issue 20), and checks
    batched = N single envs with policy-mode KL and adaptive β: rows end at different steps (EOS on step 1, EOS on
    step 2, the cap on step 4); frozen rows get garbage actions and log-probs, and must add nothing."""
    kwargs = dict(kl_coef=0.1, kl_estimator="k3", kl_target=1.0, kl_horizon=10, max_new_tokens=4, reward_model=zero_reward)
    vec = gym.make_vec(ID, num_envs=3, autoreset_mode="disabled", **kwargs)
    single = gym.make(ID, **kwargs)
    eos, word = _tokens(vec)
    rng = np.random.default_rng(0)
    V = vec.unwrapped.task.vocab_size
    actions = rng.integers(0, V, size=(4, 3))  # (T, N)
    actions[actions == eos] = word
    actions[0, 2], actions[1, 0] = eos, eos  # row 2 ends on step 1, row 0 on step 2, row 1 at the cap
    logprobs = torch.as_tensor(rng.normal(-4.0, 1.0, size=(4, 3)), dtype=torch.float32)  # (T, N) "log π(a_t)"
    ends = [1, 3, 0]  # last step of each row

    vec.reset(seed=10)
    rewards, kls, episode_kl = np.zeros((4, 3)), np.zeros((4, 3)), np.zeros(3)
    for t in range(4):
        live = ~vec.unwrapped.done.numpy()
        supplied = torch.where(torch.as_tensor(live), logprobs[t], 0.0)  # log π = 0 for frozen rows: a large "KL"
        textenv.supply_policy_logprobs(vec, supplied)
        _, rewards[t], _, _, info = vec.step(actions[t])
        kls[t] = info["kl"]
        np.testing.assert_array_equal(info["_kl"], live)
        assert np.all(rewards[t][~live] == 0.0) and np.all(info["kl"][~live] == 0.0)
        if "episode_kl" in info:
            episode_kl[info["_episode_kl"]] = info["episode_kl"][info["_episode_kl"]]

    for i in range(3):  # the same episodes, one after the other, in one single env (one controller)
        single.reset(seed=10 + i)
        for t in range(ends[i] + 1):
            textenv.supply_policy_logprobs(single, logprobs[t, i])
            _, reward, terminated, truncated, info = single.step(int(actions[t, i]))
            assert reward == pytest.approx(rewards[t, i], abs=1e-5)
            assert info["kl"] == pytest.approx(kls[t, i], abs=1e-4)
        assert terminated or truncated
        assert info["episode_kl"] == pytest.approx(episode_kl[i], abs=1e-4)
    single_beta, vec_beta = textenv.kl_controller(single), textenv.kl_controller(vec)
    assert single_beta.value == vec_beta.value == 0.1  # both unchanged until the batch ends
    assert single_beta.end_batch() == pytest.approx(vec_beta.end_batch(), abs=1e-9)
    expected = 0.1 * (1 + np.clip(episode_kl.mean() / 1.0 - 1, -0.2, 0.2) * 3 / 10)
    assert vec_beta.value == pytest.approx(expected, abs=1e-9) and vec_beta.value != 0.1


def test_same_step_autoreset_puts_the_last_steps_kl_terms_in_final_info():
    """Guards against ``final_info`` missing ``reward_kl``/``kl``/``episode_kl``: the base env built it before the
    KL wrapper added them, so agents reading an ended episode's info (``agents.core.rollout``) lost its KL."""
    env = gym.make_vec(ID, num_envs=2, kl_coef=0.1, max_new_tokens=2, reward_model=zero_reward)  # same_step
    env.reset(seed=0)
    eos, word = _tokens(env)
    textenv.supply_policy_logprobs(env, torch.tensor([-1.0, -2.0]))
    _, _, _, _, info = env.step(np.array([eos, word]))  # row 0 ends (EOS) and restarts; row 1 goes on
    final = info["final_info"]
    for key in ("reward_kl", "kl", "episode_kl", "kl_mode", "kl_estimator", "kl_coef"):
        np.testing.assert_array_equal(final[f"_{key}"], [True, False])
        assert final[key][0] == info[key][0]
    assert final["episode_kl"][0] == pytest.approx(final["kl"][0]) and final["reward_kl"][0] == pytest.approx(-0.1 * final["kl"][0])
    first_kl = info["kl"][1]
    textenv.supply_policy_logprobs(env, torch.tensor([-1.0, -2.0]))
    _, _, _, _, info = env.step(np.array([word, word]))  # row 1 reaches the cap
    final = info["final_info"]
    np.testing.assert_array_equal(final["_episode_kl"], [False, True])
    assert final["episode_kl"][1] == pytest.approx(first_kl + info["kl"][1])


def test_full_estimator_masks_tokens_the_policy_never_samples():
    """Guards against ``kl_estimator="full"`` returning NaN (0·(−inf)) when the policy gives a token probability 0,
    as the sampler's ``suppress_tokens`` does. π = π_ref without EOS, renormalised: KL = −log(1 − π_ref(EOS))."""
    env = gym.make(ID, kl_coef=0.1, kl_estimator="full", max_new_tokens=3, reward_model=zero_reward)
    env.reset(seed=2)
    kl_env = _kl_wrapper(env)
    eos, _ = _tokens(env)
    for _ in range(3):
        ref = kl_env.ref.next_logprobs[0].clone()  # (V,)
        policy = torch.log_softmax(ref.index_fill(0, torch.tensor([eos]), -math.inf), -1)  # (V,) EOS suppressed
        action = int(policy.argmax())
        textenv.supply_policy_logprobs(env, policy)
        _, _, terminated, truncated, info = env.step(action)
        assert info["kl"] == pytest.approx(-math.log1p(-ref[eos].exp().item()), abs=1e-5)
        if terminated or truncated:
            break


def test_a_reference_that_forbids_a_token_the_policy_takes_is_an_error_naming_it():
    """KL(π‖π_ref) is +inf where π_ref(v) = 0 < π(v): the env refuses it, naming the token, instead of a reward −inf."""
    for estimator in ("k1", "full"):
        env = gym.make(ID, kl_coef=0.1, kl_estimator=estimator, max_new_tokens=3, reward_model=zero_reward)
        env.reset(seed=0)
        kl_env = _kl_wrapper(env)
        with torch.inference_mode():
            kl_env.ref.next_logprobs[0, 7] = -math.inf
        V = env.action_space.n
        textenv.supply_policy_logprobs(env, torch.full((V,), -math.log(V)))
        with pytest.raises(ValueError, match=r"token 7 probability 0.*\+inf"):
            env.step(7 if estimator == "k1" else 3)


def test_kl_temperature_scores_the_reference_at_the_policys_temperature(base_lm):
    """Guards against comparing the tempered policy with the untempered reference: a policy equal to the reference
    sampled at T = 0.7 has KL 0 with ``kl_temperature=0.7`` (and clearly not with the default 1.0)."""
    totals = {}
    for temperature in (0.7, 1.0):
        env = gym.make(ID, kl_coef=0.1, kl_estimator="full", kl_temperature=temperature, max_new_tokens=4,
                       reward_model=zero_reward)
        env.reset(seed=1)
        ids = env.unwrapped.prompt_token_ids()
        totals[temperature] = 0.0
        for _ in range(4):
            with torch.no_grad():
                logits = base_lm(torch.tensor([ids])).logits[0, -1].float()  # (V,) a full forward, no cache
            policy = torch.log_softmax(logits / 0.7, -1)  # (V,) the reference sampled at T = 0.7
            action = int(policy.argmax())
            textenv.supply_policy_logprobs(env, policy)
            _, _, terminated, truncated, info = env.step(action)
            totals[temperature] += info["kl"]
            if temperature == 0.7:
                assert abs(info["kl"]) < 1e-6
            ids.append(action)
            if terminated or truncated:
                break
    assert totals[1.0] > 1e-3  # the same policy against the untempered reference


@pytest.mark.parametrize("bad", [0, -0.7, math.nan, math.inf, "0.7", True])
def test_bad_kl_temperature_is_refused_at_construction(bad):
    with pytest.raises(ValueError, match="kl_temperature="):
        gym.make(ID, kl_coef=0.1, kl_temperature=bad, reward_model=zero_reward)


def test_reset_with_an_all_false_mask_restarts_nothing_and_keeps_the_reference_cache():
    """Guards against ``KLShapingVector.reset`` calling the reference's ``reset_rows([])`` (which raises) when
    ``reset_mask`` selects no row: the reset must restart nothing and leave every row's reference state as it was."""
    env = gym.make_vec(ID, num_envs=2, autoreset_mode="disabled", kl_coef=0.1, kl_mode="reference",
                       max_new_tokens=4, reward_model=zero_reward)
    env.reset(seed=0)
    before = env.ref.next_logprobs.clone()
    obs, _ = env.reset(options={"reset_mask": np.zeros(2, dtype=bool)})
    assert torch.equal(env.ref.next_logprobs, before)
    _, word = _tokens(env)
    env.step(np.array([word, word]))  # the rows go on from their prompts
