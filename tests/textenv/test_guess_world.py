"""The guess-the-number world: its tokenizer, its transcripts, its recipe, a deterministic build and a base LM that
knows the format but plays at random.

The tiny-recipe builds go into tmp caches (``TEXTENV_CACHE``); the real recipe's LM is built once in the real cache
(about a minute and a half on one thread), like the other built-in worlds.
"""

import hashlib
import json
import re

import numpy as np
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from textenv import world
from textenv.world import guess
from textenv.world.guess import (GuessRecipe, build_guess, guess_dir, make_tokenizer, parse_guess,
                                 play_random_transcript, reply, simulate)

TINY = GuessRecipe(n_games=200, n_layer=1, n_embd=16, n_head=2, train_steps=5, batch_size=8, eval_games=20)


def _weights_sha(folder):
    return hashlib.sha256((folder / "lm" / "model.safetensors").read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ tokenizer
def test_tokenizer_is_one_token_per_character_and_round_trips(tmp_path):
    made = make_tokenizer()
    made.save_pretrained(tmp_path)
    for tokenizer in (made, AutoTokenizer.from_pretrained(tmp_path)):
        text = "guess 1-16\n8\nhigher\n12\nlower\n10\ncorrect\n"
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert len(ids) == len(text)
        assert [tokenizer.decode([i]) for i in ids] == list(text)
        assert tokenizer.decode(ids + [tokenizer.eos_token_id], skip_special_tokens=True) == text  # no spaces added
        every = guess.CHARACTERS + "  -\n\n"  # all characters, doubled spaces and newlines too
        assert tokenizer.decode(tokenizer.encode(every, add_special_tokens=False)) == every
        assert tokenizer.encode("\n", add_special_tokens=False) == [len(guess.CHARACTERS) + 1]  # one token
        assert len(tokenizer.encode("\n\n", add_special_tokens=False)) == 2
        assert tokenizer.encode("8\n") == tokenizer.encode("8\n", add_special_tokens=False)  # no BOS/EOS added
        assert (tokenizer.eos_token, tokenizer.eos_token_id, tokenizer.pad_token_id) == ("<eos>", 0, None)
        assert tokenizer.encode("A", add_special_tokens=False) == [tokenizer.unk_token_id]
        assert len(tokenizer) == len(guess.CHARACTERS) + 2


# ------------------------------------------------------------------------------------------------ the game
def test_reply_and_parse_guess():
    assert [reply(7, g) for g in (6, 7, 8)] == ["higher\n", "correct\n", "lower\n"]
    assert [parse_guess(t) for t in ("1\n", "9\n", "10\n", "16\n")] == [1, 9, 10, 16]
    for bad in ("0\n", "17\n", "99\n", "08\n", " 8\n", "8", "8\n\n", "-1\n", "8 \n", "<eos>", ""):
        assert parse_guess(bad) is None, bad


def test_a_seeded_transcript_by_hand():
    # default_rng(0).integers(1, 17, size=8) draws 14, 11, 9, 5, ...: the fourth guess is the secret
    assert np.random.default_rng(0).integers(1, 17, size=8).tolist()[:4] == [14, 11, 9, 5]
    secret, text = play_random_transcript(np.random.default_rng(0), secret=5)
    assert (secret, text) == (5, "guess 1-16\n14\nlower\n11\nlower\n9\nlower\n5\ncorrect\n")
    secret, text = play_random_transcript(np.random.default_rng(0), secret=16)  # never guessed: 8 turns, no correct
    assert text == "guess 1-16\n" + "".join(f"{g}\nhigher\n" for g in [14, 11, 9, 5, 5, 1, 2, 1])
    with pytest.raises(ValueError, match=r"secret=17 must be an integer in \[1, 16\]"):
        play_random_transcript(np.random.default_rng(0), secret=17)


def test_random_transcripts_follow_the_protocol():
    rng = np.random.default_rng(3)
    won = 0
    for _ in range(500):
        secret, text = play_random_transcript(rng)
        assert 1 <= secret <= 16 and text.startswith(guess.PROMPT)
        lines = text[len(guess.PROMPT):].split("\n")
        assert lines.pop() == ""  # ends in a newline
        guesses, replies = [int(g) for g in lines[0::2]], lines[1::2]
        assert len(guesses) == len(replies) <= guess.MAX_TURNS
        assert [r + "\n" for r in replies] == [reply(secret, g) for g in guesses]
        assert secret not in guesses[:-1]  # it stops at the first correct guess
        assert (guesses[-1] == secret) == (len(guesses) < 8 or replies[-1] == "correct")
        won += replies[-1] == "correct"
    assert 0.33 < won / 500 < 0.48  # 1 - (15/16)^8 = 0.403


def test_corpus_is_seeded():
    a, b = guess.make_corpus(TINY), guess.make_corpus(TINY)
    assert a == b and len(a) == TINY.n_games
    assert guess.make_corpus(GuessRecipe(**{**TINY.__dict__, "seed": 1})) != a


# ------------------------------------------------------------------------------------------------ recipe
def test_recipe_digest_follows_the_seed_and_bad_values_are_refused():
    assert GuessRecipe().digest == GuessRecipe(seed=0).digest != GuessRecipe(seed=1).digest
    assert re.fullmatch(r"[0-9a-f]{12}", GuessRecipe().digest)
    assert guess_dir().name == f"guess-{GuessRecipe().digest}" and guess_dir().parent == world.cache_root()
    with pytest.raises(ValueError, match="n_embd=30 must be divisible by n_head=4"):
        GuessRecipe(n_embd=30)
    with pytest.raises(ValueError, match="train_steps=0"):
        GuessRecipe(train_steps=0)
    with pytest.raises(ValueError, match="n_positions=64 is shorter than the longest transcript"):
        GuessRecipe(n_positions=64)
    with pytest.raises(ValueError, match="lr=nan"):
        GuessRecipe(lr=float("nan"))


# ------------------------------------------------------------------------------------------------ build
def test_tiny_build_is_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTENV_CACHE", str(tmp_path / "a"))
    a = build_guess(TINY, progress=False)
    assert a == tmp_path / "a" / f"guess-{TINY.digest}"
    stamp = (a / "manifest.json").stat().st_mtime_ns
    assert build_guess(TINY, progress=False) == a and (a / "manifest.json").stat().st_mtime_ns == stamp  # cached
    monkeypatch.setenv("TEXTENV_CACHE", str(tmp_path / "b"))
    b = build_guess(TINY, progress=False)
    assert _weights_sha(a) == _weights_sha(b)
    assert (a / "corpus.jsonl").read_bytes() == (b / "corpus.jsonl").read_bytes()
    other = GuessRecipe(**{**TINY.__dict__, "seed": 1})
    assert _weights_sha(build_guess(other, progress=False)) != _weights_sha(a)
    assert not list((tmp_path / "b").glob("*.tmp-*"))

    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["digest"] == TINY.digest and manifest["corpus_games"] == TINY.n_games
    assert manifest["sim_games"] == TINY.eval_games and 0 <= manifest["sim_format_rate"] <= 1
    rows = [json.loads(line) for line in (a / "corpus.jsonl").read_text().splitlines()]
    assert [(r["secret"], r["transcript"]) for r in rows] == guess.make_corpus(TINY)

    lm = guess.guess_lm_path(TINY, progress=False)  # the folder from_pretrained loads, tokenizer included
    model, tokenizer = AutoModelForCausalLM.from_pretrained(lm), AutoTokenizer.from_pretrained(lm)
    assert model.config.vocab_size == len(tokenizer) and model.config.n_positions == TINY.n_positions
    assert model.config.eos_token_id == model.config.pad_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.eos_token_id


def test_simulate_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_games=0"):
        simulate(tmp_path, 0)
    with pytest.raises(ValueError, match="temperature=-1"):
        simulate(tmp_path, 10, temperature=-1.0)


# ------------------------------------------------------------------------------------------------ the base LM
@pytest.fixture(scope="module")
def guess_lm():
    return world.guess_lm_path(progress=False)  # the real recipe: built once per cache (about 90 s on one thread)


@pytest.mark.slow
def test_base_lm_knows_the_format_and_plays_at_random(guess_lm):
    figures = simulate(guess_lm, 200, seed=0)
    assert figures["games"] == 200 and figures["turns"] <= 200 * guess.MAX_TURNS
    assert figures["format_rate"] >= 0.95  # about 0.99
    assert 0.2 <= figures["success_rate"] <= 0.7  # random guessing: 0.403; bisection would win every game
    assert 1 <= figures["mean_turns"] <= guess.MAX_TURNS
    assert simulate(guess_lm, 200, seed=0) == figures  # seeded
    greedy = simulate(guess_lm, 50, seed=0, temperature=0)
    assert greedy["format_rate"] == 1.0
