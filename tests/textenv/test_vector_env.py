import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import textenv  # noqa: F401


def _single_runs(n, seed, action_seed, steps, **kwargs):
    """N single envs seeded seed+i, each with its own action stream; per-step (reward, term, trunc) rows."""
    out = []
    for i in range(n):
        env = gym.make("textenv/Sentiment-v0", **kwargs)
        rng = np.random.default_rng(action_seed + i)
        env.reset(seed=seed + i)
        rows = []
        for _ in range(steps):
            a = int(rng.integers(env.action_space.n))
            _, r, te, tr, info = env.step(a)
            rows.append((a, r, te, tr, info.get("completion"), info.get("reward_kl")))
            if te or tr:
                env.reset()
        out.append(rows)
    return out


def _vector_run(n, seed, action_seed, steps, **kwargs):
    env = gym.make_vec("textenv/Sentiment-v0", num_envs=n, **kwargs)
    rngs = [np.random.default_rng(action_seed + i) for i in range(n)]
    env.reset(seed=seed)
    out = [[] for _ in range(n)]
    for _ in range(steps):
        actions = np.array([int(r.integers(env.single_action_space.n)) for r in rngs])
        _, rewards, te, tr, infos = env.step(actions)
        final = infos.get("final_info", {})
        for i in range(n):
            completion = final["completion"][i] if te[i] or tr[i] else None
            kl = infos["reward_kl"][i] if "reward_kl" in infos else None
            out[i].append((int(actions[i]), rewards[i], bool(te[i]), bool(tr[i]), completion, kl))
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
