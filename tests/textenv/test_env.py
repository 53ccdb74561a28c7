import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import textenv  # noqa: F401
from flaky_reward import FlakyReward
from textenv import world

IDS = ["textenv/Sentiment-v1", "textenv/Sentiment-v0", "textenv/Bandit-v0"]


def _roll(env, seed, actions_seed, max_steps=200):
    """Random-action episodes; returns (tokens, rewards, flags) for determinism checks."""
    rng = np.random.default_rng(actions_seed)
    obs, info = env.reset(seed=seed)
    out = [info["prompt"]]
    for _ in range(max_steps):
        action = int(rng.integers(env.action_space.n))
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((action, reward, terminated, truncated))
        if terminated or truncated:
            obs, info = env.reset()
            out.append(info["prompt"])
    return out, obs


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_and_sb3_checkers_accept_every_registered_id(env_id):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    check_env(gym.make(env_id).unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(env_id).unwrapped, warn=False)


def test_checkers_accept_the_kl_wrapped_env():
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("textenv/Sentiment-v0", kl_coef=0.05, kl_mode="reference")
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)


def test_same_seed_gives_identical_tokens_and_rewards():
    env = gym.make("textenv/Sentiment-v0", max_new_tokens=8)
    a, obs_a = _roll(env, seed=7, actions_seed=1)
    b, obs_b = _roll(env, seed=7, actions_seed=1)
    c, _ = _roll(env, seed=8, actions_seed=1)
    assert a == b
    np.testing.assert_array_equal(obs_a["input_ids"], obs_b["input_ids"])
    assert a != c


def test_episode_ends_terminated_on_eos_truncated_at_cap_never_both():
    env = gym.make("textenv/Sentiment-v0", max_new_tokens=5)
    eos = env.unwrapped.task.eos_token_id
    obs, info = env.reset(seed=0, options={"prompt": "the pasta was"})
    assert info["prompt"] == "the pasta was"
    prompt_len = int(obs["attention_mask"].sum())
    _, _, terminated, truncated, info = env.step(eos)
    assert (terminated, truncated) == (True, False)
    assert info["completion"] == "" and info["num_tokens"] == 1 and info["capped"] is False

    env.reset(seed=0, options={"prompt": "the pasta was"})
    good = env.unwrapped.task.tokenizer(" really delicious .", add_special_tokens=False)["input_ids"]
    flags = []
    for t in (good * 5)[:5]:
        obs, reward, terminated, truncated, info = env.step(t)
        flags.append((terminated, truncated))
    assert flags == [(False, False)] * 4 + [(False, True)]
    assert info["capped"] is True
    assert obs["attention_mask"].sum() == prompt_len + 5
    assert info["completion"].startswith(" really delicious")
    assert info["reward_gold"] == world.gold_sentiment(["the pasta was"], [info["completion"]])[0] == 1.0
    assert reward == info["reward_score"] == info["score"] > 0  # the proxy RM agrees here


def test_v1_ends_the_episode_at_the_cap_as_terminated_and_reports_capped():
    """Regression: the cap's step, which pays the completion's score, was ``truncated``, so Gymnasium agents
    added ``γ·V(final obs)`` and counted the score twice. In ``-v1`` it is ``terminated`` with ``capped``."""
    env = gym.make("textenv/Sentiment-v1", max_new_tokens=3, reward_model=lambda p, c: [len(x) / 10 for x in c])
    eos = env.unwrapped.task.eos_token_id
    env.reset(seed=0, options={"prompt": "the pasta was"})
    flags = [env.step(50)[2:4] for _ in range(2)]
    _, reward, terminated, truncated, info = env.step(50)
    assert flags == [(False, False)] * 2 and (terminated, truncated) == (True, False)
    assert info["capped"] is True and info["num_tokens"] == 3 and reward == info["score"]
    env.reset(seed=0, options={"prompt": "the pasta was"})
    env.step(50), env.step(50)
    _, _, terminated, truncated, info = env.step(eos)  # EOS on the cap's step: an EOS ending, not the cap
    assert (terminated, truncated, info["capped"]) == (True, False, False)


@pytest.mark.parametrize("env_id, bootstraps", [("textenv/Sentiment-v1", False), ("textenv/Sentiment-v0", True)])
def test_sb3_bootstraps_at_the_cap_only_on_v0(env_id, bootstraps):
    """What Stable-Baselines3 reads: it adds ``γ·V(terminal_observation)`` where ``TimeLimit.truncated``."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda: gym.make(env_id, max_new_tokens=2, reward_model=lambda p, c: [1.0] * len(p))])
    venv.seed(0)
    venv.reset()
    venv.step(np.array([50]))
    _, _, dones, infos = venv.step(np.array([50]))
    assert dones[0] and infos[0]["capped"] and infos[0]["TimeLimit.truncated"] is bootstraps


def test_stop_string_terminates():
    env = gym.make("textenv/Sentiment-v0", max_new_tokens=10, stop_strings=["."])
    env.reset(seed=0, options={"prompt": "the pasta was"})
    tok = env.unwrapped.task.tokenizer
    ids = tok(" great .", add_special_tokens=False)["input_ids"]
    for t in ids:
        _, _, terminated, truncated, info = env.step(t)
    assert terminated and not truncated and info["completion"] == " great ."


def test_bandit_rewards_and_end():
    env = gym.make("textenv/Bandit-v0")
    env.reset(seed=0)
    assert env.step(0)[1:4] == (1.0, True, False)
    env.reset()
    assert env.step(1)[1] == -1.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset()
    with pytest.raises(ValueError, match="Discrete\\(2\\)"):
        env.step(2)


def test_info_reports_named_reward_terms():
    def two_terms(prompts, completions):
        return {"length": [len(c) / 10 for c in completions], "bonus": [1.0] * len(prompts)}

    env = gym.make("textenv/Sentiment-v0", reward_model=two_terms, max_new_tokens=3)
    env.reset(seed=0)
    for _ in range(3):
        _, reward, terminated, truncated, info = env.step(100)
    assert info["reward_bonus"] == 1.0
    assert reward == pytest.approx(info["reward_length"] + info["reward_bonus"])


def test_dense_reward_telescopes_to_the_terminal_score():
    sparse = gym.make("textenv/Sentiment-v0", max_new_tokens=12)
    dense = gym.make("textenv/Sentiment-v0", max_new_tokens=12, dense=True)
    for seed in range(3):
        (a, _), (b, _) = _roll(sparse, seed, seed, 12), _roll(dense, seed, seed, 12)
        a, b = [x for x in a if isinstance(x, tuple)], [x for x in b if isinstance(x, tuple)]
        # same prompts and actions → the dense rewards of the episode sum to the sparse terminal reward
        assert [x[0] for x in a] == [x[0] for x in b]
        assert sum(x[1] for x in b) == pytest.approx(sum(x[1] for x in a), abs=1e-9)
    env = gym.make("textenv/Sentiment-v0", max_new_tokens=4, dense=True)
    env.reset(seed=0, options={"prompt": "the pasta was"})
    tok = env.unwrapped.task.tokenizer
    rewards = [env.step(t)[1] for t in tok(" great and awful", add_special_tokens=False)["input_ids"][:4]]
    assert any(r != 0 for r in rewards[:-1])  # reward arrives before the end


# ------------------------------------------------------------------ bad input
def test_action_outside_vocabulary_and_step_after_end():
    env = gym.make("textenv/Sentiment-v0", max_new_tokens=2)
    V = env.action_space.n
    with pytest.raises((RuntimeError, gym.error.ResetNeeded), match="reset"):
        env.step(1)
    env.reset(seed=0)
    for bad in (V, -1, 1.5, "a"):
        with pytest.raises(ValueError, match=f"Discrete\\({V}\\)"):
            env.step(bad)
    before = env.unwrapped.completion_ids
    env.step(3)
    assert env.unwrapped.completion_ids == before + [3]  # a refused action left no trace
    env.step(3)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(3)


def test_bad_prompts_are_refused_with_the_reason():
    env = gym.make("textenv/Sentiment-v0", max_new_tokens=100)
    context = env.unwrapped.task.context
    with pytest.raises(ValueError, match="empty"):
        env.reset(options={"prompt": "   "})
    with pytest.raises(ValueError, match=f"context of {context} tokens"):
        env.reset(options={"prompt": "the pasta was great . " * 20})
    with pytest.raises(ValueError, match="no room"):
        gym.make("textenv/Sentiment-v0", max_new_tokens=context)
    with pytest.raises(ValueError, match="prompts is empty"):
        gym.make("textenv/Sentiment-v0", prompts=[])


def test_prompts_from_jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "the hotel was"}\n\n{"prompt": "we ate"}\n')
    env = gym.make("textenv/Sentiment-v0", prompts=str(path))
    seen = {env.reset(seed=s)[1]["prompt"] for s in range(20)}
    assert seen == {"the hotel was", "we ate"}
    path.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    with pytest.raises(ValueError, match="p.jsonl:2"):
        gym.make("textenv/Sentiment-v0", prompts=str(path))


@pytest.mark.parametrize(
    "reward, match",
    [
        (lambda p, c: [float("nan")] * len(p), "non-finite"),
        (lambda p, c: [float("inf")] * len(p), "non-finite"),
        (lambda p, c: [1.0, 2.0] + [0.0] * len(p), "returned"),
        (lambda p, c: 1 / 0, "ZeroDivisionError"),
        (lambda p, c: ["x"] * len(p), "not numbers"),
    ],
)
def test_bad_reward_model_output_is_reported(reward, match):
    env = gym.make("textenv/Sentiment-v0", reward_model=reward, max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises((ValueError, RuntimeError, TypeError), match=match):
        env.step(5)


def test_unknown_model_path_fails_fast():
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="no/such/model"):
        gym.make("textenv/Sentiment-v0", model="/no/such/model")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        gym.make("textenv/Sentiment-v0", model="someone/not-a-cached-model")
    assert time.perf_counter() - start < 5


def test_tokenizer_without_pad_token_gets_eos_as_pad(tmp_path, lm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm_dir)
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    AutoModelForCausalLM.from_pretrained(lm_dir).save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token is None
    env = gym.make("textenv/Sentiment-v0", model=str(tmp_path), kl_coef=0.1, kl_mode="reference")
    assert env.unwrapped.task.pad_token_id == env.unwrapped.task.eos_token_id
    obs, _ = env.reset(seed=0)
    assert obs["input_ids"][-1] == env.unwrapped.task.eos_token_id
    env.step(5)


def test_reference_with_another_vocabulary_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=500, n_positions=64, n_embd=32, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="vocabulary 500 differs"):
        gym.make("textenv/Sentiment-v0", kl_coef=0.1, ref_model=str(tmp_path))


# ------------------------------------------------------------------ transactional steps
def _state(env):
    base = env.unwrapped
    return base._obs(), base.completion_ids, dict(base._last_score), base._done


def _assert_same_state(a, b):
    for key in a[0]:
        np.testing.assert_array_equal(a[0][key], b[0][key])
    assert a[1:] == b[1:]


def test_a_step_whose_reward_raises_leaves_the_env_as_it_was():
    """Regression: a reward that raised on the cap's step left the token appended, so the retry produced a
    5-token completion under a cap of 4 (and the env never ended)."""
    env = gym.make("textenv/Sentiment-v1", reward_model=FlakyReward({1}), max_new_tokens=4)
    env.reset(seed=0, options={"prompt": "the pasta was"})
    for _ in range(3):
        env.step(50)
    before = _state(env)
    with pytest.raises(RuntimeError, match="reward server down"):
        env.step(60)
    _assert_same_state(before, _state(env))
    _, reward, terminated, truncated, info = env.step(60)  # the retry is the cap's step, as if nothing had failed
    assert (terminated, truncated, info["capped"], info["num_tokens"]) == (True, False, True, 4)
    assert env.unwrapped.completion_ids == [50, 50, 50, 60]


def test_a_failed_dense_step_keeps_the_previous_score():
    """Dense rewards: a failed step must not advance the previous-prefix score, so the rewards still telescope."""
    env = gym.make("textenv/Sentiment-v1", reward_model=FlakyReward({2}), max_new_tokens=3, dense=True)
    env.reset(seed=0, options={"prompt": "the pasta was"})
    rewards = [env.step(50)[1]]
    before = _state(env)
    with pytest.raises(RuntimeError, match="reward server down"):
        env.step(60)
    _assert_same_state(before, _state(env))
    rewards += [env.step(60)[1], env.step(70)[1]]
    expected = float(len(env.unwrapped.task.decode([50, 60, 70])))
    assert sum(rewards) == pytest.approx(expected)


def test_a_failing_gold_reward_leaves_the_env_as_it_was():
    calls = []

    def gold(prompts, completions):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("gold failed")
        return [1.0] * len(prompts)

    env = gym.make("textenv/Sentiment-v1", reward_model=lambda p, c: [0.0] * len(p), gold_reward=gold, max_new_tokens=1)
    env.reset(seed=0)
    before = _state(env)
    with pytest.raises(RuntimeError, match="gold failed"):
        env.step(50)
    _assert_same_state(before, _state(env))
    assert env.step(50)[4]["reward_gold"] == 1.0
