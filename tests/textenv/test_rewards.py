import gymnasium as gym
import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import textenv  # noqa: F401
from textenv.rewards import HFRewardModel, Reward, as_reward


def test_hf_reward_model_by_path_scores_the_last_non_pad_token(rm_dir):
    prompts = ["the pasta was", "we stayed at this hotel", "the movie"]
    completions = [" great .", " for two nights and the room was dirty .", ""]
    scores = HFRewardModel(rm_dir, batch_size=2, append_eos=False)(prompts, completions)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    tok = AutoTokenizer.from_pretrained(rm_dir)
    for p, c, s in zip(prompts, completions, scores):  # unpadded, one at a time: the last token is the last real one
        ids = tok(p + c, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hidden = model.transformer(ids).last_hidden_state[0, -1]
            expected = model.score(hidden).item()
        assert s == pytest.approx(expected, abs=1e-4)
    assert len(set(np.round(scores, 4))) == 3


def test_env_accepts_a_reward_model_path(rm_dir):
    env = gym.make("textenv/Sentiment-v0", reward_model=str(rm_dir), max_new_tokens=2)
    env.reset(seed=0, options={"prompt": "the pasta was"})
    tok = env.unwrapped.task.tokenizer
    ids = tok(" great .", add_special_tokens=False)["input_ids"][:2]
    for t in ids:
        _, reward, *_ , info = env.step(t)
    assert reward == pytest.approx(HFRewardModel(rm_dir)(["the pasta was"], [tok.decode(ids)])[0], abs=1e-5)


def test_reward_objects_and_callables_are_validated():
    class Lengths:
        def __call__(self, prompts, completions):
            return torch.tensor([float(len(c)) for c in completions])

    out = as_reward(Lengths())(["a", "b"], ["xy", "xyz"])
    np.testing.assert_array_equal(out.total, [2.0, 3.0])
    assert list(out.terms) == ["score"]
    with pytest.raises(TypeError, match="reward_model must be"):
        Reward(42)
    with pytest.raises(ValueError, match="returned 1 scores for 2 completions"):
        as_reward(lambda p, c: [0.0])(["a", "b"], ["x", "y"])


def _finish(env, text):
    tok = env.unwrapped.task.tokenizer
    for t in tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]:
        _, reward, terminated, truncated, info = env.step(t)
        if terminated or truncated:
            return reward, info
    raise AssertionError("episode did not end")


def test_proxy_rm_is_the_default_reward_and_gold_is_reported_not_added():
    from textenv import world

    env = gym.make("textenv/Sentiment-v0", max_new_tokens=3)
    env.reset(seed=0, options={"prompt": "the pasta was"})
    reward, info = _finish(env, " awful .")
    proxy = HFRewardModel(world.proxy_rm_path())
    assert proxy.normalized and reward == pytest.approx(proxy(["the pasta was"], [" awful ."])[0], abs=1e-6)
    assert reward < -0.5 and info["reward_gold"] == world.gold_sentiment(["the pasta was"], [" awful ."])[0] == -1.0

    zero = gym.make("textenv/Sentiment-v0", max_new_tokens=3, reward_model=lambda p, c: [0.0] * len(p))
    zero.reset(seed=0, options={"prompt": "the pasta was"})
    reward, info = _finish(zero, " great .")
    assert reward == 0.0 and info["reward_gold"] == 1.0  # reported beside the reward, never added to it

    no_gold = gym.make("textenv/Sentiment-v0", max_new_tokens=3, gold_reward=None)
    no_gold.reset(seed=0, options={"prompt": "the pasta was"})
    assert "reward_gold" not in _finish(no_gold, " great .")[1]


def test_composite_running_statistics_saved_mid_stream_continue_exactly():
    """``state_dict`` (count, mean, sum of squared deviations) through JSON: the copy normalises the next batch
    as the original does, and both hold the mean and sample std of every score seen."""
    import json

    from textenv.rewards.composite import CompositeReward

    def length(prompts, completions):
        return [float(len(c)) for c in completions]

    def vowels(prompts, completions):
        return [float(sum(ch in "aeiou" for ch in c)) for c in completions]

    batches = [["a", "bcd"], ["eeee", "xy", "aeiouz"], ["q" * 9, "ae"]]
    original = CompositeReward({"length": length, "vowels": vowels}, normalize_then_sum=True)
    for texts in batches[:2]:
        original.vector(["p"] * len(texts), texts)
    copy = CompositeReward({"length": length, "vowels": vowels}, normalize_then_sum=True)
    copy.load_state_dict(json.loads(json.dumps(original.state_dict())))
    texts = batches[2]
    np.testing.assert_array_equal(copy.vector(["p"] * 2, texts), original.vector(["p"] * 2, texts))
    seen = np.array([[len(c), sum(ch in "aeiou" for ch in c)] for b in batches for c in b], dtype=float)
    assert copy.count == 7
    np.testing.assert_allclose(copy.mean, seen.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(copy.std, seen.std(axis=0, ddof=1), rtol=1e-12)
