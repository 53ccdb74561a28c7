"""LLM judges with a chat template: the judge's prompt is a user turn of the judge tokenizer's template followed
by the assistant header and a prefill; option probabilities checked against separate unbatched forwards; and a
real instruction-tuned judge (SmolLM2-135M-Instruct, skipped where not fetched) telling praise from complaint."""

import numpy as np
import pytest
import torch

from textenv.rewards import PairwiseJudge, PointwiseJudge
from textenv.rewards.judge import (
    PAIRWISE_SENTIMENT_PREFILL,
    PAIRWISE_SENTIMENT_TEMPLATE,
    SENTIMENT_CLASSIFY_PREFILL,
    SENTIMENT_CLASSIFY_TEMPLATE,
    SENTIMENT_OPTIONS,
    SENTIMENT_PREFILL,
    SENTIMENT_TEMPLATE,
    _shared_prefix,
)

TEMPLATE = "Review: {prompt}{completion}\nWas it good?"
PREFILL = "the verdict was"
SINGLE = {" great": 1.0, " bad": -1.0, " fine": 0.25}  # one token each in the built-in tokenizer
MULTI = {" great": 1.0, " awful": -1.0}  # " awful" is two tokens: a forward per option
PROMPT = "the pasta was"
COMPLETIONS = [" great .", " awful and cold .", " fine , the bed was clean and the view was nice .", " dirty"]


@pytest.fixture(scope="module")
def chat_lm(chat_lm):
    """The built-in LM with ChatML tokens and template (``tests/conftest.py``), loaded: ``(model, tokenizer)``."""
    from textenv.lm import load_causal_lm, load_tokenizer

    return load_causal_lm(chat_lm), load_tokenizer(chat_lm)


def _hand_probs(model, tokenizer, text, options):
    """Softmax over options of log p(option | text), one unbatched forward per option, no cache."""
    ctx = tokenizer(text, add_special_tokens=False)["input_ids"]
    logps = []
    for option in options:
        ans = tokenizer(option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ctx + ans])).logits[0].double(), -1)  # (L, V)
        logps.append(sum(logp[len(ctx) - 1 + j, a].item() for j, a in enumerate(ans)))
    return np.exp(logps) / np.exp(logps).sum()


def test_the_prompt_is_rendered_as_a_user_turn_then_the_assistant_header_and_the_prefill(chat_lm):
    model, tokenizer = chat_lm
    judge = PointwiseJudge(model, TEMPLATE, SINGLE, tokenizer=tokenizer, prefill=PREFILL)  # chat=None: the template is there
    assert judge.lm.chat
    rendered = judge.lm.render("Review: the pasta was great .\nWas it good?")
    assert rendered == ("<|im_start|>user\nReview: the pasta was great .\nWas it good?<|im_end|>\n"
                        "<|im_start|>assistant\nthe verdict was")
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    start, end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert ids[0] == start and ids.count(start) == 2 and ids.count(end) == 1  # special tokens, not their characters
    with_system = PointwiseJudge(model, TEMPLATE, SINGLE, tokenizer=tokenizer, system="be fair")
    assert with_system.lm.render("x") == "<|im_start|>system\nbe fair<|im_end|>\n<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
    plain = PointwiseJudge(model, TEMPLATE, SINGLE, tokenizer=tokenizer, chat=False, prefill=PREFILL)
    assert plain.lm.render("x") == "x" + PREFILL


def test_chat_options_are_refused_where_they_cannot_apply(chat_lm, lm_dir):
    model, tokenizer = chat_lm
    with pytest.raises(ValueError, match="has no chat template; pass chat=False"):
        PointwiseJudge(lm_dir, TEMPLATE, SINGLE, chat=True)
    with pytest.raises(ValueError, match="system= is a chat system prompt"):
        PointwiseJudge(lm_dir, TEMPLATE, SINGLE, system="be fair")
    with pytest.raises(TypeError, match="chat='yes' must be True, False or None"):
        PointwiseJudge(model, TEMPLATE, SINGLE, tokenizer=tokenizer, chat="yes")
    assert not PointwiseJudge(lm_dir, TEMPLATE, SINGLE).lm.chat  # no template: plain text, as before


@pytest.mark.parametrize("options", [SINGLE, MULTI], ids=["one-token options", "multi-token options"])
def test_chat_option_probabilities_match_unbatched_forwards(chat_lm, options):
    model, tokenizer = chat_lm
    judge = PointwiseJudge(model, TEMPLATE, options, tokenizer=tokenizer, prefill=PREFILL, batch_size=3)
    scores = judge([PROMPT] * len(COMPLETIONS), COMPLETIONS)  # ragged chunks of 3 and 1
    contexts = [judge.lm.render(TEMPLATE.format(prompt=PROMPT, completion=c)) for c in COMPLETIONS]
    rows = tokenizer(contexts, add_special_tokens=False)["input_ids"]
    assert _shared_prefix(rows) >= 8  # the cached-prefix path is the one under test
    for context, score in zip(contexts, scores):
        probs = _hand_probs(model, tokenizer, context, list(options))
        assert score == pytest.approx(probs @ np.array(list(options.values())), abs=1e-5)
    alone = [judge([PROMPT], [c])[0] for c in COMPLETIONS]
    np.testing.assert_allclose(scores, alone, atol=1e-5)
    assert len(set(np.round(scores, 6))) == len(COMPLETIONS)
    assert judge([], []) == []


def test_a_two_option_score_is_the_probability_difference_by_hand(chat_lm):
    """With options worth +1 and −1 the score is p₊ − p₋ = tanh((ℓ₊ − ℓ₋)/2) of the two next-token log-probs."""
    model, tokenizer = chat_lm
    options = {" great": 1.0, " bad": -1.0}
    judge = PointwiseJudge(model, TEMPLATE, options, tokenizer=tokenizer, prefill=PREFILL)
    context = judge.lm.render(TEMPLATE.format(prompt=PROMPT, completion=" great ."))
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer(context, add_special_tokens=False)["input_ids"]])).logits[0, -1]  # (V,)
    good, bad = tokenizer([" great", " bad"], add_special_tokens=False)["input_ids"]
    expected = np.tanh((logits[good[0]] - logits[bad[0]]).item() / 2)
    assert judge([PROMPT], [" great ."])[0] == pytest.approx(expected, abs=1e-5)


def test_chat_pairwise_judge_averages_both_orders(chat_lm):
    model, tokenizer = chat_lm
    template = "A: {prompt}{a}\nB: {prompt}{b}\nWhich is better?"
    options = (" great", " bad")  # stand-ins for the first and second response, one token each
    judge = PairwiseJudge(model, template, options, tokenizer=tokenizer, prefill=PREFILL, batch_size=2)
    a, b = COMPLETIONS[:2], COMPLETIONS[2:]
    p = judge.compare([PROMPT] * 2, a, b)
    for k in range(2):
        first = [_hand_probs(model, tokenizer, judge.lm.render(template.format(prompt=PROMPT, a=x, b=y)), options)[0]
                 for x, y in ((a[k], b[k]), (b[k], a[k]))]
        assert p[k] == pytest.approx(0.5 * (first[0] + 1.0 - first[1]), abs=1e-5)


POSITIVE = " was wonderful . the staff were friendly and i would gladly come back ."
NEGATIVE = " was terrible . the staff were rude and i would never come back ."


def test_smollm2_judge_prefers_praise_to_complaint(smollm2_path):
    """A real instruction-tuned judge orders an obvious pair right, pointwise under every shipped sentiment rubric
    and pairwise in both orders. (Its absolute scores lean positive: the benchmark measures how far.)"""
    from textenv.lm import load_causal_lm, load_tokenizer

    torch.set_num_threads(1)
    model, tokenizer = load_causal_lm(smollm2_path), load_tokenizer(smollm2_path)
    for template, prefill in ((SENTIMENT_TEMPLATE, SENTIMENT_PREFILL), (SENTIMENT_CLASSIFY_TEMPLATE, SENTIMENT_CLASSIFY_PREFILL)):
        judge = PointwiseJudge(model, template, SENTIMENT_OPTIONS, tokenizer=tokenizer, prefill=prefill)
        assert judge.lm.chat  # SmolLM2's tokenizer carries a chat template
        assert all(len(ids) == 1 for ids in judge.lm._option_ids(list(SENTIMENT_OPTIONS)))  # the one-forward path
        positive, negative = judge(["the hotel"] * 2, [POSITIVE, NEGATIVE])
        assert positive > negative + 0.4, template
    # Llama (rotary positions, grouped-query attention) through the cached-prefix, left-padded batch: as unbatched
    probs = _hand_probs(model, tokenizer, judge.lm.render(judge.template.format(prompt="the hotel", completion=NEGATIVE)),
                        list(SENTIMENT_OPTIONS))
    assert negative == pytest.approx(probs[0] - probs[1], abs=1e-4)
    pairwise = PairwiseJudge(model, PAIRWISE_SENTIMENT_TEMPLATE, tokenizer=tokenizer, prefill=PAIRWISE_SENTIMENT_PREFILL)
    assert pairwise.compare(["the hotel"], [POSITIVE], [NEGATIVE])[0] > 0.5  # barely (0.54): a weak pairwise judge
