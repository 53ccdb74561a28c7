import json
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import textenv  # noqa: F401  (registers the env ids)
from textenv.rewards import (
    CompositeReward,
    ExactMatch,
    KeywordReward,
    LengthNormalized,
    LengthPenalty,
    LengthTarget,
    PairwiseJudge,
    PointwiseJudge,
    RegexReward,
)
from textenv.rewards.judge import REVIEW_CONTINUATION
from textenv.world import gold_sentiment

OPTIONS = {" great": 1.0, " awful": -1.0}
PROMPT = "the pasta was"
COMPLETIONS = [" great .", " awful and cold .", " fine , the bed was clean and the view was nice .", " dirty", " ok"]


@pytest.fixture(scope="module")
def tok(lm_dir):
    return AutoTokenizer.from_pretrained(lm_dir)


@pytest.fixture(scope="module")
def hf_lm(lm_dir):
    return AutoModelForCausalLM.from_pretrained(lm_dir).eval()


@pytest.fixture(scope="module")
def pointwise(lm_dir):
    return PointwiseJudge(lm_dir, template=REVIEW_CONTINUATION, options=OPTIONS, batch_size=2)


@pytest.fixture(scope="module")
def pairwise(lm_dir):
    return PairwiseJudge(lm_dir, reference={PROMPT: " great ."})


# ---- rule rewards ---------------------------------------------------------------------------------------------


def test_keyword_reward_counts_whole_words_case_insensitively_with_a_cap():
    reward = KeywordReward(["great", "clean", "great view"], weight=0.5)
    texts = [" GREAT and Clean!", " greatly unclean", " great view , great food , great bed , clean"]
    assert reward(["p"] * 3, texts) == [1.0, 0.0, 2.0]  # "great view" is one hit: the longer keyword wins
    assert KeywordReward(["great"], case_sensitive=True)(["p"], [" GREAT great"]) == [1.0]
    assert KeywordReward(["great", "clean"], max_hits=2)(["p"], [" great great clean"]) == [2.0]


def test_regex_reward_search_versus_fullmatch_format_check():
    found = RegexReward(r"\d+", reward=2.0, otherwise=-1.0)
    fmt = RegexReward(r"\d+", reward=2.0, otherwise=-1.0, mode="fullmatch")
    texts = [" it cost 5 euros", "  42  ", " none"]
    assert found(["p"] * 3, texts) == [2.0, 2.0, -1.0]
    assert fmt(["p"] * 3, texts) == [-1.0, 2.0, -1.0]  # whole completion (stripped) must match


def test_length_target_in_words_chars_and_tokens(lm_dir, tok):
    assert LengthTarget(4)(["p"] * 3, [" a b c d", " a", " a b c d e f g h i j"]) == [0.0, -0.75, -1.5]
    assert LengthTarget(10, unit="chars")(["p", "p"], [" great .", "x" * 13]) == [pytest.approx(-0.2), pytest.approx(-0.3)]
    text = " the pasta was awful ."
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    assert n != len(text.split())  # tokens and words differ here, so the unit is really used
    for tokenizer in (lm_dir, str(lm_dir), tok):
        assert LengthTarget(5, unit="tokens", tokenizer=tokenizer)(["p"], [text]) == [pytest.approx(-abs(n - 5) / 5)]


def test_exact_match_with_mapping_callable_extract_and_normalisation():
    answers = {"capital of france ?": "Paris", "2 + 3 =": "5"}
    reward = ExactMatch(answers)
    assert reward(list(answers) * 2, ["  PARIS . ", " 5!", " paris is nice", " 6"]) == [1.0, 1.0, 0.0, 0.0]
    assert ExactMatch({"q": "new  york"})(["q"], [" New York ."]) == [1.0]  # runs of spaces collapse
    extracted = ExactMatch(answers, extract=r"answer: (\w+)")
    assert extracted(list(answers) * 2, ["it is answer: paris", "answer: 5.", "paris", "answer: 7"]) == [1.0, 1.0, 0.0, 0.0]
    add = ExactMatch(lambda p: str(sum(int(t) for t in p.split() if t.isdigit())), extract=r"(-?\d+)")
    assert add(["2 + 3 =", "4 + 4 =", "1 + 1 ="], [" 5 .", " it is 8", " -2"]) == [1.0, 1.0, 0.0]
    with pytest.raises(KeyError, match=re.escape("prompt '3 + 3 ='")):
        reward(["3 + 3 ="], [" 6"])
    with pytest.raises(ValueError, match="capturing group"):
        ExactMatch(answers, extract=r"\d+")


def test_rule_rewards_reject_bad_input_naming_the_value():
    with pytest.raises(ValueError, match=re.escape("keywords=[]")):
        KeywordReward([])
    with pytest.raises(ValueError, match=re.escape("keywords='great'")):
        KeywordReward("great")
    with pytest.raises(ValueError, match=re.escape("pattern='(a'")):
        RegexReward("(a")
    with pytest.raises(ValueError, match="mode='find'"):
        RegexReward("a", mode="find")
    with pytest.raises(ValueError, match="unit='lines'"):
        LengthTarget(4, unit="lines")
    with pytest.raises(ValueError, match="needs tokenizer="):
        LengthTarget(4, unit="tokens")
    with pytest.raises(ValueError, match="target=0"):
        LengthTarget(0)
    with pytest.raises(ValueError, match="unit='lines'"):
        LengthPenalty(len, coef=1.0, unit="lines")
    for reward in (KeywordReward(["a"]), RegexReward("a"), LengthTarget(2), ExactMatch({"p": "a"}), LengthNormalized(LengthTarget(2))):
        with pytest.raises(ValueError, match="1 prompts and 2 completions"):
            reward(["p"], ["a", "b"])


# ---- length-bias mitigation -----------------------------------------------------------------------------------

SHORT_GOOD = " great ."  # 2 words, 1 positive word
LONG_WORSE = " fine food , nice view , but a dirty room and a rude host ."  # 15 words, 2 positive words


def test_length_normalized_and_length_penalty_flip_a_length_loving_ranking():
    positive = KeywordReward(["great", "fine", "nice"])
    prompts, texts = ["p", "p"], [SHORT_GOOD, LONG_WORSE]
    assert positive(prompts, texts) == [1.0, 2.0]  # the raw reward prefers the long, worse completion
    assert LengthNormalized(positive)(prompts, texts) == [pytest.approx(1 / 2), pytest.approx(2 / 15)]
    terms = LengthPenalty(positive, coef=0.25, free=4)(prompts, texts)
    assert terms == {"score": [1.0, 2.0], "length_penalty": [0.0, -0.25 * (15 - 4)]}
    total = np.add(terms["score"], terms["length_penalty"])
    np.testing.assert_allclose(total, [1.0, -0.75])
    assert total[0] > total[1]


def test_length_penalty_in_chars_sums_a_wrapped_mapping():
    inner = LengthPenalty(KeywordReward(["great"]), coef=1.0, free=1)  # returns terms; the outer wrapper sums them
    out = LengthPenalty(inner, coef=0.1, free=5, unit="chars")(["p"], [SHORT_GOOD])
    assert out["score"] == [pytest.approx(1.0 - 1.0)] and out["length_penalty"] == [pytest.approx(-0.1 * (8 - 5))]


# ---- composite rewards ----------------------------------------------------------------------------------------


def _composite(**kwargs):
    return CompositeReward({"positive": KeywordReward(["great", "clean"]), "brevity": LengthTarget(2)}, **kwargs)


def test_composite_weights_terms_and_vector_is_unweighted():
    reward = _composite(weights={"positive": 2.0, "brevity": 0.5})
    texts = [" great .", " the room was clean and great"]  # hits 1 and 2; words 2 and 6
    assert reward(["p", "p"], texts) == {"positive": [2.0, 4.0], "brevity": [0.0, 0.5 * -2.0]}
    vector = reward.vector(["p", "p"], texts)
    assert vector.shape == (2, 2) and vector.tolist() == [[1.0, 0.0], [2.0, -2.0]]


def test_composite_calibrate_freezes_mean_and_sample_std():
    reward = _composite(weights={"positive": 3.0}, normalize_then_sum=True)
    calib = [" great", " clean and great", " dirty room", " great great great clean ."]
    raw = np.array([[1, -0.5], [2, -0.5], [0, 0.0], [4, -1.5]])  # (hits, -|words - 2| / 2)
    stats = reward.calibrate(["p"] * 4, calib)
    for k, name in enumerate(["positive", "brevity"]):
        assert stats[name] == pytest.approx((raw[:, k].mean(), raw[:, k].std(ddof=1)))
    out = reward(["p"], [" great and clean , great"])  # raw: 3 hits, 5 words -> brevity -1.5
    mean, std = raw.mean(axis=0), raw.std(axis=0, ddof=1)
    assert out["positive"] == [pytest.approx(3.0 * (3 - mean[0]) / std[0])]
    assert out["brevity"] == [pytest.approx((-1.5 - mean[1]) / std[1])]
    assert reward.count == 4  # frozen: scoring does not move the statistics


def test_composite_running_statistics_merge_batches_exactly():
    reward = _composite(normalize_then_sum=True)
    batches = [[" great"], [" clean and great", " dirty"], [" a b c d e f", " great great", " clean ."]]
    seen = []
    for texts in batches:
        out = reward(["p"] * len(texts), texts)
        seen.append(_composite().vector(["p"] * len(texts), texts))
    seen = np.concatenate(seen)
    np.testing.assert_allclose(reward.mean, seen.mean(axis=0))
    np.testing.assert_allclose(reward.std, seen.std(axis=0, ddof=1))
    last = (seen[-3:] - seen.mean(axis=0)) / seen.std(axis=0, ddof=1)  # the last batch counts in its own normalisation
    np.testing.assert_allclose(np.column_stack([out["positive"], out["brevity"]]), last)

    copy = _composite(normalize_then_sum=True)
    copy.load_state_dict(json.loads(json.dumps(reward.state_dict())))
    assert copy.count == 6 and not copy.frozen
    np.testing.assert_allclose(copy.mean, reward.mean)
    np.testing.assert_allclose(copy.m2, reward.m2)


def test_composite_rejects_bad_configuration():
    with pytest.raises(ValueError, match="non-empty mapping"):
        CompositeReward({})
    with pytest.raises(ValueError, match="'lenght'"):
        _composite(weights={"lenght": 1.0})
    with pytest.raises(ValueError, match="'my-term'"):
        CompositeReward({"my-term": LengthTarget(2)})
    with pytest.raises(ValueError, match="at least 2 completions.*got 1"):
        _composite(normalize_then_sum=True).calibrate(["p"], [" great"])


# ---- plugging rewards into the env ----------------------------------------------------------------------------


def _run_episode(reward_model, text=" the room was clean"):
    env = gym.make("textenv/Sentiment-v0", reward_model=reward_model, max_new_tokens=4)
    env.reset(seed=0, options={"prompt": PROMPT})
    ids = env.unwrapped.task.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 4
    for t in ids:
        _, reward, terminated, truncated, info = env.step(t)
    assert truncated and not terminated and info["completion"] == text
    return reward, info


def test_env_reports_each_weighted_composite_term():
    reward, info = _run_episode(_composite(weights={"positive": 2.0, "brevity": 0.5}))
    assert info["reward_positive"] == 2.0 * 1  # one hit ("clean")
    assert info["reward_brevity"] == 0.5 * -abs(4 - 2) / 2  # 4 words, target 2
    assert reward == pytest.approx(info["reward_positive"] + info["reward_brevity"]) == 1.5
    assert info["reward_gold"] == gold_sentiment([PROMPT], [" the room was clean"])[0]


def test_env_accepts_a_pointwise_judge(pointwise):
    reward, info = _run_episode(pointwise)
    assert -1.0 <= reward <= 1.0 and reward == info["reward_score"]
    assert reward == pytest.approx(pointwise([PROMPT], [info["completion"]])[0], abs=1e-6)
    assert "reward_gold" in info


# ---- judges ---------------------------------------------------------------------------------------------------


def _hand_option_probs(model, tok, context, options):
    """Softmax over options of log p(option | context), one unbatched forward per option."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    logps = []
    for option in options:
        ans = tok(option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ctx + ans])).logits[0].double(), -1)
        logps.append(sum(logp[len(ctx) - 1 + j, a].item() for j, a in enumerate(ans)))
    return np.exp(logps) / np.exp(logps).sum()


def test_pointwise_judge_is_the_expected_value_under_the_option_distribution(pointwise, hf_lm, tok):
    assert len(tok(" awful", add_special_tokens=False)["input_ids"]) > 1  # a multi-token option: log-probs summed
    scores = pointwise([PROMPT] * 2, COMPLETIONS[:2])
    for completion, score in zip(COMPLETIONS[:2], scores):
        probs = _hand_option_probs(hf_lm, tok, REVIEW_CONTINUATION.format(prompt=PROMPT, completion=completion), list(OPTIONS))
        assert score == pytest.approx(probs @ np.array(list(OPTIONS.values())), abs=1e-5)


def test_pointwise_judge_scores_do_not_depend_on_the_batch(pointwise):
    batch = pointwise([PROMPT] * 5, COMPLETIONS)  # batch_size=2: ragged, padded chunks
    alone = [pointwise([PROMPT], [c])[0] for c in COMPLETIONS]
    np.testing.assert_allclose(batch, alone, atol=1e-5)
    assert len(set(np.round(batch, 6))) == 5


def test_pairwise_judge_averages_both_orders(pairwise, hf_lm, tok):
    prompts, a, b = [PROMPT] * 3, COMPLETIONS[:3], COMPLETIONS[2:5]
    ab, ba = pairwise.compare(prompts, a, b), pairwise.compare(prompts, b, a)
    np.testing.assert_allclose(ab + ba, 1.0, atol=1e-6)
    for k in range(3):
        first = [_hand_option_probs(hf_lm, tok, pairwise.template.format(prompt=PROMPT, a=x, b=y), pairwise.options)[0]
                 for x, y in ((a[k], b[k]), (b[k], a[k]))]
        assert ab[k] == pytest.approx(0.5 * (first[0] + 1.0 - first[1]), abs=1e-5)
    np.testing.assert_allclose(pairwise.compare(prompts, a, a), 0.5, atol=1e-6)  # a tie with itself


def test_pairwise_judge_as_a_reward_against_a_reference(pairwise, lm_dir):
    scores = pairwise([PROMPT] * 3, COMPLETIONS[:3])
    expected = 2.0 * pairwise.compare([PROMPT] * 3, COMPLETIONS[:3], [" great ."] * 3) - 1.0
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert all(-1.0 <= s <= 1.0 for s in scores) and scores[0] == pytest.approx(0.0, abs=1e-6)  # the reference itself
    with pytest.raises(KeyError, match="'the movie'"):
        pairwise(["the movie"], [" great ."])
    no_reference = PairwiseJudge(pairwise.lm.model, tokenizer=pairwise.lm.tokenizer)
    with pytest.raises(ValueError, match="needs reference="):
        no_reference([PROMPT], [" great ."])
    with pytest.raises(ValueError, match=re.escape("{b}")):
        PairwiseJudge(lm_dir, template="{prompt} {a} which one ?")
    with pytest.raises(ValueError, match="two different answers"):
        PairwiseJudge(lm_dir, options=(" A", " A"))
    with pytest.raises(ValueError, match="completion"):
        PointwiseJudge(lm_dir, template="{prompt} was it good ?")


def test_regressions_found_in_review(pointwise):
    with pytest.raises(ValueError, match="2 prompts and 1 completions"):
        pointwise([PROMPT, PROMPT], [" great ."])
    with pytest.raises(ValueError, match=r"extract='\(' is not a valid regular expression"):
        ExactMatch({}, extract="(")
    with pytest.raises(ValueError, match="target=True"):
        LengthTarget(True)
    with pytest.raises(ValueError, match="two different answers"):
        PairwiseJudge(pointwise.lm.model, options="AB", tokenizer=pointwise.lm.tokenizer)
    running = CompositeReward({"a": lambda p, c: [float(len(x)) for x in c]}, normalize_then_sum=True)
    assert running([], []) == {"a": []}  # an empty batch leaves the running statistics alone
    assert running(["p", "p"], ["ab", "abcd"]) == {"a": pytest.approx([-2**-0.5, 2**-0.5])}
