import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import textenv  # noqa: F401
from flaky_reward import FlakyReward


def _single_runs(n, seed, action_seed, steps, env_id="textenv/Sentiment-v0", actions=None, **kwargs):
    """N single envs seeded seed+i, each with its own action stream; per-step (action, reward, term, trunc,
    completion, reward_kl, capped) rows. ``actions(rng, n)`` draws an action (default: uniform over the vocabulary)."""
    out = []
    for i in range(n):
        env = gym.make(env_id, **kwargs)
        rng = np.random.default_rng(action_seed + i)
        env.reset(seed=seed + i)
        rows = []
        for _ in range(steps):
            a = int(rng.integers(env.action_space.n)) if actions is None else actions(rng)
            _, r, te, tr, info = env.step(a)
            rows.append((a, r, te, tr, info.get("completion"), info.get("reward_kl"), info.get("capped")))
            if te or tr:
                env.reset()
        out.append(rows)
    return out


def _vector_run(n, seed, action_seed, steps, env_id="textenv/Sentiment-v0", actions=None, **kwargs):
    env = gym.make_vec(env_id, num_envs=n, **kwargs)
    rngs = [np.random.default_rng(action_seed + i) for i in range(n)]
    env.reset(seed=seed)
    out = [[] for _ in range(n)]
    for _ in range(steps):
        acts = np.array([int(r.integers(env.single_action_space.n)) if actions is None else actions(r) for r in rngs])
        _, rewards, te, tr, infos = env.step(acts)
        final = infos.get("final_info", {})
        for i in range(n):
            completion = final["completion"][i] if te[i] or tr[i] else None
            capped = final["capped"][i] if te[i] or tr[i] else None
            kl = infos["reward_kl"][i] if "reward_kl" in infos else None
            out[i].append((int(acts[i]), rewards[i], bool(te[i]), bool(tr[i]), completion, kl, capped))
    return env, out


def test_batched_env_equals_n_single_envs_on_the_same_seeds():
    single = _single_runs(4, seed=11, action_seed=100, steps=30, max_new_tokens=6)
    env, batched = _vector_run(4, seed=11, action_seed=100, steps=30, max_new_tokens=6)
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    for s, b in zip(single, batched):
        assert [x[:1] + x[2:5] for x in s] == [x[:1] + x[2:5] for x in b]
        # the reward model scores a padded batch in the vector env and one text in the single env: equal to float noise
        assert [x[1] for x in s] == pytest.approx([x[1] for x in b], abs=1e-5)
    assert sum(x[2] or x[3] for row in batched for x in row) >= 4 * 4  # several autoresets happened


def test_batched_kl_equals_single_kl_through_autoresets():
    kwargs = dict(max_new_tokens=5, kl_coef=0.1, kl_mode="reference")
    single = _single_runs(3, seed=5, action_seed=7, steps=13, **kwargs)
    _, batched = _vector_run(3, seed=5, action_seed=7, steps=13, **kwargs)
    for s, b in zip(single, batched):
        assert [x[:1] + x[2:5] for x in s] == [x[:1] + x[2:5] for x in b]  # same tokens, flags, texts
        np.testing.assert_allclose([x[5] for x in s], [x[5] for x in b], atol=2e-5)
        np.testing.assert_allclose([x[1] for x in s], [x[1] for x in b], atol=2e-5)


def test_ragged_episodes_with_eos_keep_the_reference_cache_exact(base_lm):
    """Envs finish at different steps (EOS) and restart; each row's KL must still match a full forward."""
    n = 3
    env = gym.make_vec("textenv/Sentiment-v0", num_envs=n, max_new_tokens=6, kl_coef=1.0, kl_mode="reference",
                       reward_model=lambda p, c: [0.0] * len(p))
    eos = env.unwrapped.task.eos_token_id
    env.reset(seed=0)
    seqs = env.unwrapped.prompt_token_ids(range(n))
    rng = np.random.default_rng(0)
    for _ in range(20):
        actions = rng.integers(10, 200, size=n)
        actions[rng.random(n) < 0.3] = eos
        with torch.no_grad():
            expected = [torch.log_softmax(base_lm(torch.tensor([s])).logits[0, -1], -1)[a].item() for s, a in zip(seqs, actions)]
        _, rewards, te, tr, _ = env.step(actions)
        np.testing.assert_allclose(rewards, expected, atol=1e-4)
        for i in range(n):
            seqs[i] = env.unwrapped.prompt_token_ids([i])[0] if te[i] or tr[i] else seqs[i] + [int(actions[i])]


def test_disabled_autoreset_freezes_finished_envs_until_reset_mask():
    env = gym.make_vec("textenv/Sentiment-v0", num_envs=2, max_new_tokens=3, autoreset_mode="disabled")
    assert env.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    eos = env.unwrapped.task.eos_token_id
    env.reset(seed=0, options={"prompts": ["the pasta was", "we stayed"]})
    _, r, te, tr, _ = env.step(np.array([eos, 50]))
    assert te.tolist() == [True, False]
    obs, r, te, tr, _ = env.step(np.array([50, 50]))
    assert r[0] == 0.0 and not te[0] and not tr[0]
    assert obs["attention_mask"][0].sum() == len(env.unwrapped.prompt_token_ids([0])[0]) + 1  # frozen
    _, _, te, tr, _ = env.step(np.array([50, 50]))
    assert tr.tolist() == [False, True]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([50, 50]))
    _, info = env.reset(options={"reset_mask": np.array([True, False]), "prompt": "the hotel was"})
    assert info["prompt"][0] == "the hotel was"
    env.step(np.array([50, 50]))


def test_observations_are_in_the_space_and_actions_are_checked():
    env = gym.make_vec("textenv/Sentiment-v0", num_envs=3, max_new_tokens=4)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for _ in range(6):
        obs, *_ = env.step(torch.tensor([5, 6, 7]))  # torch actions accepted
        assert env.observation_space.contains(obs)
    V = env.single_action_space.n
    with pytest.raises(ValueError, match=f"env 1 is outside Discrete\\({V}\\)"):
        env.step(np.array([1, V, 1]))
    with pytest.raises(ValueError, match="3 integer token ids"):
        env.step(np.array([1, 2]))
    with pytest.raises(ValueError, match="autoreset_mode"):
        gym.make_vec("textenv/Sentiment-v0", num_envs=2, autoreset_mode="next_step")


def test_reward_model_is_called_once_per_step_for_all_finishing_envs():
    calls = []

    def reward(prompts, completions):
        calls.append(len(prompts))
        return [0.0] * len(prompts)

    env = gym.make_vec("textenv/Sentiment-v0", num_envs=8, max_new_tokens=3, reward_model=reward)
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.full(8, 60))
    assert calls == [8]


def _assert_same_runs(single, batched, atol=1e-5):
    for s, b in zip(single, batched):
        assert [x[:1] + x[2:5] + x[6:] for x in s] == [x[:1] + x[2:5] + x[6:] for x in b]  # tokens, flags, texts, capped
        # the reward model scores a padded batch in the vector env and one text in the single env: equal to float noise
        np.testing.assert_allclose([x[1] for x in s], [x[1] for x in b], atol=atol)


def _words():
    """An action sampler over a few word tokens and EOS, so that episodes end by EOS, stop strings and the cap."""
    from textenv import world
    from textenv.lm import load_tokenizer

    tok = load_tokenizer(world.lm_path(progress=False))
    ids = tok(" great awful . the pasta was", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return lambda rng: int(rng.choice(ids))


def _length_and_words(prompts, completions):
    """A reward whose prefix scores change at most steps (dense rewards are not all zero), with named terms."""
    return {"length": [len(c) / 10 for c in completions], "great": [c.count("great") - c.count("awful") for c in completions]}


@pytest.mark.parametrize("env_id", ["textenv/Sentiment-v1", "textenv/Sentiment-v0"])
def test_batched_dense_rewards_equal_n_single_envs_through_autoresets(env_id):
    """Issue 20: the batched env's dense reward must start each autoreset episode from score 0 (the previous
    episode's last score cleared), exactly as N single envs do, over several episodes per env."""
    kwargs = dict(env_id=env_id, actions=_words(), max_new_tokens=4, dense=True, reward_model=_length_and_words)
    single = _single_runs(3, seed=3, action_seed=9, steps=17, **kwargs)
    env, batched = _vector_run(3, seed=3, action_seed=9, steps=17, **kwargs)
    _assert_same_runs(single, batched)
    ends = [x for row in batched for x in row if x[2] or x[3]]
    assert len(ends) >= 3 * 3 and {x[6] for x in ends} == {True, False}  # several episodes, by EOS and by the cap


def test_batched_stop_strings_equal_n_single_envs():
    kwargs = dict(env_id="textenv/Sentiment-v1", actions=_words(), max_new_tokens=6, stop_strings=["."],
                  reward_model=_length_and_words)
    single = _single_runs(3, seed=4, action_seed=2, steps=20, **kwargs)
    _, batched = _vector_run(3, seed=4, action_seed=2, steps=20, **kwargs)
    _assert_same_runs(single, batched)
    assert any(x[4] and x[4].endswith(".") for row in batched for x in row)  # a stop string ended an episode


def test_v1_batched_env_terminates_at_the_cap_and_reports_capped():
    env = gym.make_vec("textenv/Sentiment-v1", num_envs=2, max_new_tokens=2, reward_model=lambda p, c: [1.0] * len(p))
    eos = env.unwrapped.task.eos_token_id
    env.reset(seed=0)
    _, _, te, tr, infos = env.step(np.array([eos, 50]))
    assert te.tolist() == [True, False] and infos["final_info"]["capped"].tolist() == [False, False]
    _, r, te, tr, infos = env.step(np.array([50, 50]))
    assert te.tolist() == [False, True] and not tr.any()
    assert infos["final_info"]["capped"][1] and infos["final_info"]["_capped"].tolist() == [False, True]


def test_first_reset_of_some_envs_with_kl_then_step():
    """Regression: ``reset(options={"reset_mask": [1, 0, 1]})`` as the first reset of a KL-shaped vector env
    built a 2-row reference cache, and the next ``step`` raised ``RuntimeError: shape '[3, -1]' ...``."""
    env = gym.make_vec("textenv/Sentiment-v1", num_envs=3, max_new_tokens=3, kl_coef=0.1, kl_mode="reference",
                       autoreset_mode="disabled", reward_model=lambda p, c: [0.0] * len(p))
    env.reset(seed=0, options={"reset_mask": np.array([True, False, True])})
    _, rewards, *_ = env.step(np.array([50, 50, 50]))
    assert rewards[1] == 0.0 and rewards[0] != 0.0 and rewards[2] != 0.0


def _vstate(env):
    base = env.unwrapped
    return (base.input_ids.clone(), base.attention_mask.clone(), base.gen_len.clone(), base.done.clone(),
            [dict(t) for t in base._last_terms], list(base.prompts))


@pytest.mark.parametrize("dense", [False, True])
def test_a_batched_step_whose_reward_raises_leaves_every_env_as_it_was(dense):
    """Regression: a reward that raised left the step's tokens written, so after a retry the capped envs held
    one token more than ``max_new_tokens`` (and dense rewards no longer telescoped)."""
    fail_on = {2} if dense else {1}
    env = gym.make_vec("textenv/Sentiment-v1", num_envs=2, max_new_tokens=2, dense=dense, reward_model=FlakyReward(fail_on))
    env.reset(seed=0)
    _, first, *_ = env.step(np.array([50, 60]))
    before = _vstate(env)
    with pytest.raises(RuntimeError, match="reward server down"):
        env.step(np.array([70, 80]))
    after = _vstate(env)
    for a, b in zip(before[:4], after[:4]):
        assert torch.equal(a, b)
    assert before[4:] == after[4:]
    _, second, te, tr, infos = env.step(np.array([70, 80]))
    assert te.all() and infos["final_info"]["num_tokens"].tolist() == [2, 2]
    decode = env.unwrapped.task.decode
    if dense:  # the two steps' rewards telescope to the final score
        np.testing.assert_allclose(first + second, [len(decode([50, 70])), len(decode([60, 80]))])
