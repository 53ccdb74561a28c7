import hashlib
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from textenv import world
from textenv.world import grammar

TINY = world.WorldRecipe(n_reviews=400, n_prompts=20, vocab_size=400, n_embd=32, n_head=2, n_layer=1, train_steps=5, batch_size=8)


def _digest(path):
    return hashlib.sha256((path / "lm" / "model.safetensors").read_bytes()).hexdigest()


def test_build_is_deterministic_and_cached_by_recipe_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTENV_CACHE", str(tmp_path / "a"))
    a = world.build(TINY, progress=False)
    stamp = (a / "manifest.json").stat().st_mtime_ns
    assert world.build(TINY, progress=False) == a and (a / "manifest.json").stat().st_mtime_ns == stamp  # not rebuilt
    assert a.name == f"world-{TINY.digest}" and a.parent == tmp_path / "a"
    monkeypatch.setenv("TEXTENV_CACHE", str(tmp_path / "b"))
    b = world.build(TINY, progress=False)
    assert _digest(a) == _digest(b)
    assert (a / "corpus.txt").read_text() == (b / "corpus.txt").read_text()
    other = world.WorldRecipe(**{**TINY.__dict__, "seed": 1})
    assert other.digest != TINY.digest and _digest(world.build(other, progress=False)) != _digest(a)
    assert not list((tmp_path / "b").glob("*.tmp-*"))  # no half-written build left behind


def test_recipe_validation():
    with pytest.raises(ValueError, match="n_embd=30 must be divisible by n_head=4"):
        world.WorldRecipe(n_embd=30)
    with pytest.raises(ValueError, match="train_steps=0"):
        world.WorldRecipe(train_steps=0)


def test_builtin_tokenizer_and_lm_load_through_from_pretrained(lm_dir):
    tok = AutoTokenizer.from_pretrained(lm_dir)
    assert 1000 <= len(tok) <= 4096
    text = "the pasta was really delicious ."
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.pad_token_id != tok.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(lm_dir)
    assert model.config.vocab_size == len(tok)
    manifest = json.loads((lm_dir.parent / "manifest.json").read_text())
    assert manifest["distinct_words"] >= 800


@pytest.mark.slow
def test_base_lm_samples_are_mostly_fluent(lm_dir, base_lm):
    tok = AutoTokenizer.from_pretrained(lm_dir)
    prompts = grammar.sample_prompts(96, seed=123)
    torch.manual_seed(0)
    tok.padding_side = "left"
    batch = tok(prompts, return_tensors="pt", padding=True)
    out = base_lm.generate(**batch, do_sample=True, top_k=0, max_new_tokens=60, pad_token_id=tok.pad_token_id)
    completions = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    fluent = [grammar.fluency(p + c) for p, c in zip(prompts, completions)]
    assert sum(f == 1.0 for f in fluent) / len(fluent) >= 0.75
    sentiments = world.gold_sentiment(prompts, completions)
    assert min(sentiments) < 0 < max(sentiments)  # the base LM writes both polarities
