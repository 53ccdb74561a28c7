"""The built-in world's grammar: sampling, recognition, lexicon sentiment and the gold rewards."""

import random
import time

import pytest

from textenv.world import grammar
from textenv.world.gold import gold_fluency, gold_sentiment


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return grammar.sample_corpus(20_000, seed=0)


def test_every_sampled_review_parses(corpus):
    for review in corpus[:2000]:
        assert grammar.fluency(review) == 1.0, review


def test_text_format(corpus):
    for review in corpus[:2000]:
        assert review == " ".join(review.split()) and review.isascii() and review == review.lower()
        assert review.endswith(" .") and 1 <= review.split().count(".") <= 3


def test_corpus_is_deterministic_per_seed():
    assert grammar.sample_corpus(50, seed=3) == grammar.sample_corpus(50, seed=3)
    assert grammar.sample_corpus(50, seed=3) != grammar.sample_corpus(50, seed=4)
    assert grammar.sample_prompts(50, seed=3) == grammar.sample_prompts(50, seed=3)


def test_corpus_has_both_polarities(corpus):
    scores = [grammar.sentiment(review) for review in corpus[:2000]]
    assert sum(s > 0 for s in scores) > 500 and sum(s < 0 for s in scores) > 500


def test_prompts_are_sentiment_free_prefixes_of_their_review():
    rng = random.Random(0)
    for _ in range(200):
        prompt, review = grammar._sample_prompt_with_review(rng)
        assert review.startswith(prompt + " ")
        assert 2 <= len(prompt.split()) <= 6 and "." not in prompt.split()
        assert not any(word in grammar.LEXICON or word == "not" for word in prompt.split()), prompt
    assert len(set(grammar.sample_prompts(200, seed=1))) > 100


def test_sentiment_by_hand():
    assert grammar.LEXICON["great"] == 1.0 and grammar.LEXICON["clean"] == 1.0 and grammar.LEXICON["rude"] == -1.0
    assert grammar.sentiment("the food was great .") == 1.0
    assert grammar.sentiment("the room was not clean .") == -1.0
    assert grammar.sentiment("the room was not very clean .") == -1.0
    assert grammar.sentiment("the food was great but the waiter was rude . the bed was clean .") == pytest.approx(1 / 3)
    assert grammar.sentiment("the pasta was decent and the chef was not rude .") == pytest.approx(0.75)
    assert grammar.sentiment("The food was GREAT!") == 1.0
    assert grammar.sentiment("we visited in june with my family .") == 0.0
    assert grammar.sentiment("") == 0.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("great great great", 0.0),
        ("", 0.0),
        ("   ", 0.0),
        ("the the .", 0.0),
        ("pasta was . the waiter was rude .", 0.5),
        ("the food was great . i would recommend", 0.5),
        ("  the  food was great .", 1.0),
        ("the food was great.", 0.0),
        (". . .", 0.0),
        ("\x00 ?? the the the", 0.0),
    ],
)
def test_fluency_of_garbage(text, expected):
    assert grammar.fluency(text) == expected


def test_truncated_review_is_not_fully_fluent(corpus):
    for review in corpus[:50]:
        words = review.split()
        assert grammar.fluency(" ".join(words[:-1])) < 1.0
        assert grammar.fluency(" ".join(words[:-2])) < 1.0


def test_split_sentences():
    assert grammar.split_sentences("a b . c d . e") == ["a b .", "c d .", "e"]
    assert grammar.split_sentences(" . ") == ["."]
    assert grammar.split_sentences("") == []


def test_fluency_is_fast(corpus):
    started = time.perf_counter()
    for review in corpus[:1000]:
        grammar.fluency(review)
    assert time.perf_counter() - started < 2.0


def test_vocabulary_fills_a_bpe_tokenizer(corpus):
    from tokenizers import ByteLevelBPETokenizer

    assert len({word for review in corpus for word in review.split()}) >= 800
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(corpus, vocab_size=2048, min_frequency=2, show_progress=False)
    assert tokenizer.get_vocab_size() >= 1000


def test_gold_rewards():
    prompts = ["the room was", "i would"]
    assert gold_sentiment(prompts, [" not clean .", " recommend this hotel ."]) == [-1.0, 1.0]
    assert gold_fluency(prompts, [" not clean .", " recommend this hotel . the"]) == [1.0, 0.5]
    assert gold_fluency(prompts, ["not clean .", " recommend this hotel ."]) == [0.0, 1.0]  # "wasnot"
    for reward in (gold_sentiment, gold_fluency):
        with pytest.raises(ValueError, match=r"(?s)\b2\b.*\b3\b"):
            reward(prompts, ["a", "b", "c"])
