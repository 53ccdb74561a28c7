"""Tests written to kill the mutants of ``textenv/rewards/hf.py`` that survived ``benchmarks/mutation.py`` (see
benchmarks/results/mutation.md).

Each test names, in its docstring, the mutation it guards against and why the test catches it; expected values are
worked out by hand in the comments or come from an independent computation.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from textenv.rewards import (
    HFRewardModel,
)


def _rm_config(tok, **overrides):
    from transformers import GPT2Config

    fields = dict(n_layer=1, n_embd=16, n_head=2, n_positions=64, vocab_size=len(tok), bos_token_id=tok.eos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, num_labels=1)
    return GPT2Config(**{**fields, **overrides})


def _tiny_rm(tok, seed=0, **overrides):
    """A 1-layer num_labels=1 GPT-2 reward model on the built-in tokenizer, its score head drawn at random."""
    from transformers import GPT2ForSequenceClassification

    torch.manual_seed(seed)
    model = GPT2ForSequenceClassification(_rm_config(tok, **overrides)).eval()
    torch.nn.init.normal_(model.score.weight, std=1.0)
    return model


def _score_at_last_token(model, ids: list[int]) -> float:
    """A GPT-2 reward model on one unpadded row, read at its last token."""
    with torch.no_grad():
        return model.score(model.transformer(torch.tensor([ids])).last_hidden_state[0, -1]).item()


@pytest.fixture(scope="module")
def tok(lm_dir):
    return AutoTokenizer.from_pretrained(lm_dir)


def test_a_tokenizer_larger_than_the_models_vocabulary_is_refused_by_name(tok):
    """A mutant that reads no ``vocab_size`` (``None``, another attribute name, ``config=None``), flips the
    ``is not None`` test or drops the message or the name — caught because a 2048-token tokenizer on a
    2047-token model must be refused with this message naming the model."""
    model = _tiny_rm(tok, vocab_size=len(tok) - 1)
    with pytest.raises(ValueError, match=rf"^tokenizer of 'm' has {len(tok)} tokens but the model's vocab_size is "
                                         rf"{len(tok) - 1}: they do not belong together"):
        HFRewardModel.from_loaded(model, tok, name="m")


def test_a_reward_model_is_named_after_its_path_or_as_in_memory(rm_dir, tok):
    """A mutant that names the model ``None``/``'None'`` or changes the in-memory default name — caught because
    ``__name__`` (what reward errors and logs show) must be ``HFRewardModel(<path>)`` or
    ``HFRewardModel(in-memory reward model)``."""
    assert HFRewardModel(rm_dir).__name__ == f"HFRewardModel({rm_dir})"
    assert HFRewardModel.from_loaded(_tiny_rm(tok), tok).__name__ == "HFRewardModel(in-memory reward model)"


def test_stored_normalisation_is_applied_unless_refused_and_required_only_when_asked(tmp_path, tok):
    """A mutant that drops ``normalize`` on the way to the setup (path or ``from_loaded``), refuses
    ``normalize=True`` when statistics exist, or applies them for ``normalize=True`` only when ... not True —
    caught because with stored mean 0.5 and std 2 the scores must be ``(raw − 0.5)/2`` by default and for True,
    raw for False; and ``normalize=True`` without statistics must be refused with this message."""
    model = _tiny_rm(tok)
    model.config.reward_normalization = {"mean": 0.5, "std": 2.0, "count": 10, "data": "test"}
    model.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    raw = _score_at_last_token(model, tok("the pasta was great .")["input_ids"])
    for make in (lambda **kw: HFRewardModel(tmp_path / "rm", **kw),
                 lambda **kw: HFRewardModel.from_loaded(model, tok, **kw)):
        for normalize, expected in ((None, (raw - 0.5) / 2.0), (True, (raw - 0.5) / 2.0), (False, raw)):
            rm = make(normalize=normalize, append_eos=False)
            assert rm(["the pasta was"], [" great ."]) == [pytest.approx(expected, abs=1e-5)], normalize
    with pytest.raises(ValueError, match=r"^normalize=True but reward model 'in-memory reward model' stores no "
                                         r"'reward_normalization' statistics in its config\.json; train it with"):
        HFRewardModel.from_loaded(_tiny_rm(tok), tok, normalize=True)


def test_from_loaded_keeps_max_length_two_and_batch_size_one(tok):
    """A mutant that drops ``max_length`` in ``from_loaded`` or refuses ``max_length=2`` / ``batch_size=1``
    (``<= 2``, ``< 3``, ``<= 1``, ``< 2``, ``isinstance`` negated) — caught because both are the smallest valid
    values: a one-token text then scores as itself, unchanged."""
    model = _tiny_rm(tok)
    rm = HFRewardModel.from_loaded(model, tok, max_length=2, batch_size=1)
    assert (rm.max_length, rm.batch_size) == (2, 1)
    assert rm.score_texts(["a", "bad"]) == pytest.approx(
        [_score_at_last_token(model, tok("a")["input_ids"]), _score_at_last_token(model, tok("bad")["input_ids"])],
        abs=1e-5)


def test_a_loaded_model_with_two_labels_is_refused_by_name(tok):
    """A mutant that raises ``ValueError(None)`` — caught because the refusal must name the model and its labels."""
    with pytest.raises(ValueError, match=r"^reward model 'm' has num_labels=2; a reward model must output one score "
                                         r"\(num_labels=1\)$"):
        HFRewardModel.from_loaded(_tiny_rm(tok, num_labels=2), tok, name="m")


def test_a_tokenizer_without_pad_uses_eos_and_one_without_either_is_refused(lm_dir):
    """A mutant that refuses a tokenizer with an EOS but no pad (``is not None``), sets the pad to ``None``, or drops
    either message — caught because such a tokenizer must get EOS as its pad and score, and one with neither token
    (or ``append_eos=True`` without EOS) must be refused with these messages."""
    no_pad = AutoTokenizer.from_pretrained(lm_dir)
    no_pad.pad_token = None
    model = _tiny_rm(no_pad)
    rm = HFRewardModel.from_loaded(model, no_pad, append_eos=False)
    assert rm.tokenizer.pad_token == "<|endoftext|>" and rm.tokenizer.pad_token_id == no_pad.eos_token_id
    assert rm.score_texts(["the pasta was great .", "bad"]) == pytest.approx(
        [_score_at_last_token(model, no_pad(t)["input_ids"]) for t in ("the pasta was great .", "bad")], abs=1e-5)
    neither = AutoTokenizer.from_pretrained(lm_dir)
    neither.pad_token, neither.eos_token = None, None
    with pytest.raises(ValueError, match=r"^tokenizer of reward model 'm' has neither a pad nor an EOS token$"):
        HFRewardModel.from_loaded(_tiny_rm(neither), neither, name="m")
    no_eos = AutoTokenizer.from_pretrained(lm_dir)
    no_eos.eos_token = None
    with pytest.raises(ValueError, match=r"^append_eos=True but the tokenizer of reward model 'm' has no EOS token$"):
        HFRewardModel.from_loaded(_tiny_rm(no_eos), no_eos, name="m", append_eos=True)


def test_append_eos_follows_the_checkpoints_own_entry_over_the_rule(tok):
    """A mutant that ignores ``config.append_eos`` (``is not None`` for ``is None``, the value replaced by ``None``)
    falls back to the rule (EOS on when it is not the pad) — caught because a config saying False (EOS 0, pad 1:
    the rule says True) and one saying True (pad = EOS: the rule says False) must be followed."""
    model = _tiny_rm(tok)
    model.config.append_eos = False
    assert HFRewardModel.from_loaded(model, tok, append_eos=None).append_eos is False
    padded_with_eos = _tiny_rm(tok, pad_token_id=tok.eos_token_id)
    padded_with_eos.config.append_eos = True
    assert HFRewardModel.from_loaded(padded_with_eos, tok, append_eos=None).append_eos is True


def test_a_config_without_vocab_size_is_not_checked_against_the_tokenizer(tok):
    """A mutant that reads ``vocab_size`` without a default raises AttributeError — caught because a config that
    does not state a vocabulary size (composite configs keep it in a sub-config) must pass the check."""
    from types import SimpleNamespace

    from textenv.rewards.hf import check_tokenizer_fits

    assert check_tokenizer_fits(tok, SimpleNamespace(num_labels=1), "m") is None


def test_a_model_whose_config_gives_no_context_length_scores_whole_texts(tok):
    """A mutant that computes ``max_length - append_eos`` even when the model states no context length
    (``max_length`` None) — caught because such a model must score a text whole instead of raising a TypeError."""
    model = _tiny_rm(tok)
    model.config.n_positions = 0  # no positive context length: context_length() is None
    rm = HFRewardModel.from_loaded(model, tok)
    assert rm.max_length is None
    text = "the room was clean and quiet ."
    assert rm.score_texts([text]) == [pytest.approx(_score_at_last_token(model, tok(text)["input_ids"]), abs=1e-5)]


def test_only_texts_longer_than_max_length_are_cut_and_the_truncation_side_is_restored(tok):
    """A mutant that treats every text as long (``or``), or one of exactly ``max_length`` tokens too (``>=``), or
    leaves the tokenizer's ``truncation_side`` as ``None`` — caught because texts of at most 8 tokens must not
    warn, a longer one must keep its last 8 tokens, and the tokenizer must read ``"right"`` again afterwards."""
    model = _tiny_rm(tok)
    rm = HFRewardModel.from_loaded(model, tok, max_length=8)
    eight = "the room was clean and the staff were kind"
    ids = tok(eight)["input_ids"]
    while len(ids) > 8:
        eight = eight.rsplit(" ", 1)[0]
        ids = tok(eight)["input_ids"]
    assert len(ids) == 8  # the edge case under test: exactly max_length tokens
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rm.score_texts([eight, "bad"]) == pytest.approx(
            [_score_at_last_token(model, ids), _score_at_last_token(model, tok("bad")["input_ids"])], abs=1e-5)
    long = "the room was clean and the staff were kind and the breakfast was good ."
    with pytest.warns(UserWarning, match=r"longer than max_length=8 tokens"):
        score = rm.score_texts([long])
    assert score == [pytest.approx(_score_at_last_token(model, tok(long)["input_ids"][-8:]), abs=1e-5)]
    assert tok.truncation_side == "right"


def test_a_model_without_a_score_head_is_read_through_its_own_pooling_with_the_mask(tmp_path, tok):
    """A mutant that looks up ``score`` without a default (AttributeError), or calls the model without its ids or
    its attention mask, or reads logit column 1 — caught because a BERT classifier (a ``classifier`` head, first-
    token pooling) must score a padded batch exactly as each text alone."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32,
                                                     max_position_embeddings=64, num_labels=1,
                                                     initializer_range=0.5)).eval()  # large weights: padding shows
    model.save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    rm = HFRewardModel(tmp_path / "bert", append_eos=False)
    texts = ["the room was clean and the staff were kind .", "bad"]
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([tok(t)["input_ids"]])).logits[0, 0].item() for t in texts]
    assert rm.score_texts(texts) == pytest.approx(alone, abs=1e-5)


def test_score_texts_refuses_a_string_and_names_an_empty_text(tok):
    """A mutant that words the string refusal otherwise, refuses one-token texts (``== 1``) or names the wrong
    (or no) empty text — caught because ``"abc"`` must be refused with this message, ``"a"`` (one token) must
    score, and ``["great", ""]`` must name text 1."""
    model = _tiny_rm(tok)
    rm = HFRewardModel.from_loaded(model, tok, append_eos=False)
    with pytest.raises(TypeError, match=r"^score_texts takes a sequence of texts, not one string$"):
        rm.score_texts("abc")
    assert rm.score_texts(["a"]) == [pytest.approx(_score_at_last_token(model, tok("a")["input_ids"]), abs=1e-5)]
    with pytest.raises(ValueError, match=r"^text 1 \(''\) tokenises to no tokens; there is nothing to score$"):
        rm.score_texts(["great", ""])


def test_a_folder_without_weights_is_named_as_a_reward_model_in_the_error(tmp_path, tok):
    """A mutant that changes what ``load_pretrained`` is told it loads (``None``, other words) — caught because a
    folder with a config and a tokenizer but no weights must fail as ``cannot load reward model from``."""
    _rm_config(tok).save_pretrained(tmp_path / "no-weights")
    tok.save_pretrained(tmp_path / "no-weights")
    with pytest.raises(FileNotFoundError, match=r"^cannot load reward model from '.*no-weights': no such"):
        HFRewardModel(tmp_path / "no-weights")


def test_a_missing_trunk_weight_is_not_reported_as_the_missing_head(tmp_path, tok):
    """A mutant that tests the missing keys against a wrong trunk prefix (``"transformerXX.XX"``) counts a missing
    trunk weight as head — caught because a checkpoint missing ``score.weight`` and a trunk weight must be refused
    listing exactly ``['score.weight']``."""
    from safetensors.torch import load_file, save_file

    _tiny_rm(tok).save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    weights = load_file(tmp_path / "rm" / "model.safetensors")
    trunk_key = next(k for k in weights if k.startswith("transformer.") and k.endswith("ln_1.weight"))
    save_file({k: v for k, v in weights.items() if k not in ("score.weight", trunk_key)},
              tmp_path / "rm" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"has no trained score head \(weights \['score\.weight'\] are missing"):
        HFRewardModel(tmp_path / "rm")


# ----------------------------------------------------------------------------- hf.py: PEFT (LoRA) adapter folders
def _copy_model(src, dest, **config_changes):
    """A copy of a saved model folder, with ``config.json`` entries replaced (``None``: removed)."""
    import json
    import shutil

    shutil.copytree(src, dest)
    config = json.loads((dest / "config.json").read_text())
    for key, value in config_changes.items():
        config.pop(key, None) if value is None else config.__setitem__(key, value)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def _lora(model, seed: int, **config):
    """``model`` with a LoRA adapter on its attention (``c_attn``), every adapter weight random (non-zero)."""
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                                       fan_in_fan_out=True, **config))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or ("modules_to_save" in name and "score" in name):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model.eval()


def _seq_cls_adapter(base, path, seed=2, **save):
    """What TRL's RewardTrainer with a LoRA ``peft_config`` writes: its score head saved among the adapter's weights."""

    torch.manual_seed(seed)
    model = _lora(AutoModelForSequenceClassification.from_pretrained(base, num_labels=1), seed,
                  task_type="SEQ_CLS", modules_to_save=["score"])
    model.save_pretrained(path, **save)
    return model


def test_a_lora_adapter_without_a_score_head_on_a_causal_lm_is_refused_naming_its_base(tiny_lm, tmp_path):
    """A mutant that finds a head where the adapter saves none (``or True``, ``not in``, ``head = None``), words
    the reason as for a plain checkpoint (``and False``, ``is None``), or garbles it (``where = None``, joining
    ``None`` or with another separator, another weight name) — caught because an adapter that saves only LoRA
    weights on a causal LM must be refused with exactly this reason, naming both of the base's architectures."""
    from transformers import AutoModelForCausalLM

    base = _copy_model(tiny_lm, tmp_path / "base", architectures=["GPT2LMHeadModel", "GPT2Model"])
    _lora(AutoModelForCausalLM.from_pretrained(base), 1).save_pretrained(tmp_path / "adapter")
    with pytest.raises(ValueError, match=(
            r"has no trained score head \(weights \['score\.weight'\] are missing from the checkpoint, so they would "
            r"be random\): it looks like a LoRA adapter on '.*base' \(GPT2LMHeadModel, GPT2Model\) that saves no "
            r"score head \(train it with modules_to_save=\['score'\]")):
        HFRewardModel(tmp_path / "adapter")


def test_a_causal_lm_is_refused_naming_its_architectures_or_their_absence(tiny_lm, tmp_path):
    """A mutant that words a plain checkpoint's refusal as an adapter's (``or True``), replaces or re-joins its
    architectures (``and``, another separator) or rewords ``no architectures`` — caught because a causal LM
    listing two architectures, and one listing none, must be refused naming exactly those."""
    two = _copy_model(tiny_lm, tmp_path / "two", architectures=["GPT2LMHeadModel", "GPT2Model"])
    with pytest.raises(ValueError, match=r"it looks like a causal LM or a bare trunk \(GPT2LMHeadModel, GPT2Model\), "
                                         r"not a reward model"):
        HFRewardModel(two)
    none = _copy_model(tiny_lm, tmp_path / "none", architectures=None)
    with pytest.raises(ValueError, match=r"it looks like a causal LM or a bare trunk \(no architectures\), not a"):
        HFRewardModel(none)


def test_a_lora_adapter_on_a_classifier_base_scores_with_the_bases_head(tiny_lm, tmp_path):
    """A mutant that no longer recognises a ``...ForSequenceClassification`` base (``base_has_head = None``, the
    suffix misspelt or re-cased) refuses an adapter that saves only LoRA weights on a reward model — caught because
    it must load and score as the in-memory base + adapter does."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_lm, num_labels=1)
    torch.nn.init.normal_(classifier.score.weight, std=1.0)
    classifier.save_pretrained(tmp_path / "classifier")
    AutoTokenizer.from_pretrained(tiny_lm).save_pretrained(tmp_path / "classifier")
    adapted = _lora(AutoModelForSequenceClassification.from_pretrained(tmp_path / "classifier"), 4)
    adapted.save_pretrained(tmp_path / "adapter")
    rm = HFRewardModel(tmp_path / "adapter", append_eos=False, normalize=False)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    texts = ["the food was great .", "the room was dirty and loud ."]
    expected = [_score_at_last_token(adapted.base_model.model, tokenizer(t)["input_ids"]) for t in texts]
    assert rm.score_texts(texts) == pytest.approx(expected, abs=1e-5)


def test_the_weight_names_of_an_adapter_saved_as_a_pytorch_bin_are_read(tiny_lm, tmp_path):
    """A mutant of the ``adapter_model.bin`` branch (no file, another file name or device string, ``list(None)``)
    — caught because the weight names read from an adapter saved with ``safe_serialization=False`` must be those of
    the same adapter saved as safetensors, its score head among them. (transformers 5 loads only safetensors
    adapters, so the names are read directly: they decide whether an adapter brings its own head.)"""
    from textenv.rewards.hf import _adapter_weight_names

    _seq_cls_adapter(tiny_lm, tmp_path / "bin", safe_serialization=False)
    _seq_cls_adapter(tiny_lm, tmp_path / "safetensors")
    assert (tmp_path / "bin" / "adapter_model.bin").is_file()
    names = _adapter_weight_names(str(tmp_path / "bin"))
    assert sorted(names) == sorted(_adapter_weight_names(str(tmp_path / "safetensors")))
    assert any(".score." in f".{k}" for k in names)


class _RunsCode:
    """Unpickled by a full ``torch.load``, this runs ``exec``: what a malicious ``adapter_model.bin`` can do."""

    def __reduce__(self):
        return exec, ("import os; os.environ['TEXTENV_TEST_PICKLE_RAN'] = '1'",)


def test_reading_an_adapter_bins_weight_names_runs_no_pickled_code(tiny_lm, tmp_path, monkeypatch):
    """A mutant that reads ``adapter_model.bin`` with ``weights_only=False`` would run whatever the pickle holds —
    caught because a .bin holding a pickled ``exec`` must be refused without running it."""
    monkeypatch.delenv("TEXTENV_TEST_PICKLE_RAN", raising=False)
    _seq_cls_adapter(tiny_lm, tmp_path / "adapter", safe_serialization=False)
    torch.save({"evil": _RunsCode()}, tmp_path / "adapter" / "adapter_model.bin")
    with pytest.raises(Exception):  # noqa: B017 (refused by torch.load, or later: what matters is the next line)
        HFRewardModel(tmp_path / "adapter")
    assert "TEXTENV_TEST_PICKLE_RAN" not in __import__("os").environ


def test_an_adapter_folder_without_peft_says_to_install_it(tiny_lm, tmp_path, monkeypatch):
    """A mutant that raises the ImportError without its message — caught because it must say which package."""
    import sys

    _seq_cls_adapter(tiny_lm, tmp_path / "adapter")
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match=r"^'.*adapter' is a PEFT \(LoRA\) adapter, which needs the `peft` package to "
                                          r"load; `pip install peft`$"):
        HFRewardModel(tmp_path / "adapter")


def test_an_adapter_on_an_uncached_hub_model_names_the_config_it_cannot_load(tiny_lm, tmp_path):
    """A mutant that changes what ``load_pretrained`` is told it loads (``None``, other words) — caught because an
    adapter (with its own tokenizer) on a hub id absent offline must fail as ``cannot load reward model config``."""
    import json

    from transformers import AutoTokenizer

    _seq_cls_adapter(tiny_lm, tmp_path / "adapter")
    AutoTokenizer.from_pretrained(tiny_lm).save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "nobody/no-such-model"
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match=r"^cannot load reward model config 'nobody/no-such-model': it is not a "
                                                r"local directory"):
        HFRewardModel(tmp_path / "adapter")


def test_a_tokenizer_only_folder_is_not_read_as_an_adapter(tmp_path, tok):
    """A mutant that takes a folder with neither ``adapter_config.json`` nor ``config.json`` for an adapter (``and``
    for ``or``) reads adapter weights that are not there — caught because such a folder must fail on its missing
    config (transformers' ValueError), not with a FileNotFoundError for ``adapter_model.bin``."""
    tok.save_pretrained(tmp_path / "tokenizer-only")
    with pytest.raises(ValueError, match=r"config\.json"):
        HFRewardModel(tmp_path / "tokenizer-only")


@pytest.mark.filterwarnings("ignore:fan_in_fan_out is set to False:UserWarning")  # peft, on the stray config
def test_a_model_folder_holding_a_stray_adapter_config_is_not_read_as_an_adapter(rm_dir, tmp_path):
    """A mutant that looks for ``config.json`` under another name (``CONFIG.JSON``, ``XXconfig.jsonXX``) takes a
    model folder that also holds an ``adapter_config.json`` for an adapter — caught because the error must be about
    loading that folder as a reward model, not about adapter weights it does not have. (transformers itself
    refuses the folder, so the test checks who refuses it.)"""
    import json
    import shutil

    folder = shutil.copytree(rm_dir, tmp_path / "rm")
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(rm_dir),
                                                            "peft_type": "LORA"}))
    with pytest.raises(FileNotFoundError, match=r"^cannot load reward model from '.*rm': no such model directory"):
        HFRewardModel(folder)


