"""Preference data: format, K-wise expansion, validation with line numbers, Bradley-Terry labels, generation."""

import json
import math

import numpy as np
import pytest

from textenv.rm import (
    PreferenceRecord,
    bradley_terry_rank,
    expand_pairs,
    generate_preferences,
    label_stats,
    load_preferences,
    parse_record,
    ranking_pairs,
    write_preferences,
)


def test_k_wise_ranking_expands_into_all_ordered_pairs():
    assert ranking_pairs([0, 1]) == [(0, 1)]
    assert ranking_pairs([3, 1, 0, 2]) == [(3, 1), (3, 0), (3, 2), (1, 0), (1, 2), (0, 2)]  # C(4,2) = 6, best first
    record = parse_record({"prompt": "p", "completions": ["a", "b", "c"], "ranking": [2, 0, 1], "margin": 1.0})
    assert expand_pairs([record]) == [("p", "c", "a", 1.0), ("p", "c", "b", 1.0), ("p", "a", "b", 1.0)]
    pair = parse_record({"prompt": "p", "chosen": "good", "rejected": "bad"})
    assert expand_pairs([pair]) == [("p", "good", "bad", 0.0)]
    assert len(expand_pairs([parse_record({"prompt": "p", "completions": list("abcdefg"), "ranking": list(range(7))})])) == 21


def test_write_then_load_round_trips(tmp_path):
    records = [
        PreferenceRecord("p1", ("x", "y"), ((1, 0),), 0.5, (0.0, 1.0)),
        PreferenceRecord("p2", ("a", "b", "c"), tuple(ranking_pairs([1, 2, 0])), 0.0, (-1.0, 1.0, 0.5)),
        PreferenceRecord("p3", ("u", "v", "w"), tuple(ranking_pairs([0, 1, 2]))),
    ]
    path = write_preferences(tmp_path / "prefs.jsonl", records)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"prompt": "p1", "chosen": "y", "rejected": "x", "margin": 0.5, "gold": [1.0, 0.0]}
    assert lines[1]["ranking"] == [1, 2, 0] and "gold" in lines[1] and "gold" not in lines[2]
    loaded = load_preferences(path)
    assert expand_pairs(loaded) == expand_pairs(records)
    assert loaded[1] == records[1] and loaded[2] == records[2]
    assert loaded[0].gold == (1.0, 0.0)  # re-ordered as (chosen, rejected), like the completions


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "p", "chosen": "a", "rejected": "a"}', "chosen == rejected"),
        ('{"prompt": "p", "completions": ["a", "b"], "ranking": [0, 0]}', "permutation of 0..1"),
        ('{"prompt": "p", "completions": ["a", "a"], "ranking": [0, 1]}', "appears twice"),
        ('{"prompt": "p", "completions": ["a"], "ranking": [0]}', "at least 2 strings"),
        ('{"prompt": "", "chosen": "a", "rejected": "b"}', "non-empty string"),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}', "margin"),
        ('{"prompt": "p", "text": "a"}', "expected \\\"chosen\\\"/\\\"rejected\\\""),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "gold": [1.0]}', "one score per completion"),
        ('{"prompt": "p", "chosen": "a", rejected: "b"}', "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n\n' + line + "\n")
    with pytest.raises(ValueError, match=message) as error:
        load_preferences(path)
    assert f"{path}:3" in str(error.value)  # the blank line 2 is skipped but still counted


def test_empty_and_missing_files_are_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no records"):
        load_preferences(tmp_path / "empty.jsonl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_preferences(tmp_path / "missing.jsonl")


def test_bradley_terry_labels_have_logistic_pairwise_marginals():
    gold = np.array([1.0, 0.5, -1.0])
    rng = np.random.default_rng(0)
    rankings = np.array([bradley_terry_rank(gold, 0.5, rng) for _ in range(20_000)])
    position = np.argsort(rankings, axis=1)  # position[n, i]: rank of completion i in draw n
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        expected = 1 / (1 + math.exp(-(gold[i] - gold[j]) / 0.5))  # σ(Δ/τ): 0.731, 0.982, 0.953
        assert np.mean(position[:, i] < position[:, j]) == pytest.approx(expected, abs=0.012)
    assert bradley_terry_rank(gold, 0.0, rng) == [0, 1, 2]  # temperature 0: gold order
    with pytest.raises(ValueError, match="temperature=-1"):
        bradley_terry_rank(gold, -1, rng)


def test_label_stats_by_hand():
    records = [
        PreferenceRecord("p", ("a", "b"), ((0, 1),), gold=(1.0, 0.0)),   # agrees, Δ = 1
        PreferenceRecord("p", ("a", "b"), ((0, 1),), gold=(0.0, 1.0)),   # disagrees, Δ = -1
        PreferenceRecord("p", ("a", "b"), ((0, 1),), gold=(0.5, 0.5)),   # tie
    ]
    stats = label_stats(records, temperature=1.0)
    sigma = 1 / (1 + math.exp(-1.0))
    assert stats.pairs == 3 and stats.ties == pytest.approx(1 / 3) and stats.agreement == 0.5
    assert stats.bayes_accuracy == pytest.approx((sigma + sigma + 0.5) / 3)


def test_generation_is_seeded_and_labels_carry_gold(lm_dir):
    from textenv.world import gold_sentiment

    prompts = ["the pasta was", "the room was", "this phone is", "the staff were"]
    a = generate_preferences(lm_dir, prompts, gold_sentiment, k=3, max_new_tokens=12, seed=3, progress=False)
    b = generate_preferences(lm_dir, prompts, gold_sentiment, k=3, max_new_tokens=12, seed=3, progress=False)
    assert a == b and len(a) >= 3
    for r in a:
        assert 2 <= r.k <= 3 and len(set(r.completions)) == r.k and len(r.pairs) == r.k * (r.k - 1) // 2
        assert list(r.gold) == gold_sentiment([r.prompt] * r.k, list(r.completions))
    noiseless = generate_preferences(lm_dir, prompts, gold_sentiment, k=3, temperature=0.0, max_new_tokens=12, seed=3, progress=False)
    assert all(r.gold[w] >= r.gold[l] for r in noiseless for w, l in r.pairs)
    with pytest.raises(ValueError, match="k=1"):
        generate_preferences(lm_dir, prompts, gold_sentiment, k=1)
