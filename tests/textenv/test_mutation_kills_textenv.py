"""Tests written to kill the mutants of textenv's modules that survived ``benchmarks/mutation.py`` (see
benchmarks/results/mutation.md): ``textenv/rewards/``, ``textenv/lm.py``, ``textenv/vector_env.py``, ``textenv/kl.py``.

Each test names, in its docstring, the mutation it guards against and why the test catches it; expected values are
worked out by hand in the comments or come from an independent computation.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from textenv.rewards import (
    CompositeReward,
    ExactMatch,
    HFRewardModel,
    KeywordReward,
    LengthNormalized,
    LengthPenalty,
    LengthTarget,
    RegexReward,
    Reward,
    as_reward,
)


class _WordTokenizer:
    """One id per whitespace-separated word, plus a BOS id when ``add_special_tokens`` (transformers' default
    is True), as Llama's tokenizer adds one."""

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[1] * add_special_tokens + [2] * len(t.split()) for t in texts]}


def _lengths(prompts, completions):
    return [float(len(c)) for c in completions]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, lm_dir):
    """A ``num_labels=1`` reward model on the built-in LM, its score head drawn at random (seeded)."""
    path = tmp_path_factory.mktemp("rm")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(lm_dir, num_labels=1)
    torch.nn.init.normal_(model.score.weight, std=1.0)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(lm_dir).save_pretrained(path)
    return path


# ================================================================================= textenv/rewards/protocol.py
def test_a_failing_reward_on_an_empty_batch_names_no_first_input():
    """A mutant that always names the first prompt (``if n`` made true) or closes the message with another string
    — caught because an empty batch must give exactly ``(scoring 0 completions)``, not an IndexError."""
    def boom(prompts, completions):
        raise KeyError("x")

    with pytest.raises(RuntimeError, match=r"^reward 'boom' raised KeyError: 'x' \(scoring 0 completions\)$"):
        Reward(boom)([], [])


def test_a_reward_that_is_not_callable_is_named_by_its_type():
    """A mutant that names ``type(None)`` — caught because ``Reward(42)`` must end its message ``got int``."""
    with pytest.raises(TypeError, match=r"or a reward object; got int$"):
        Reward(42)


def test_an_empty_mapping_of_terms_is_refused_by_name():
    """A mutant that raises ``ValueError(None)`` — caught because the message must name the reward."""
    with pytest.raises(ValueError, match=r"^reward 'terms' returned an empty mapping of terms$"):
        Reward(lambda p, c: {}, name="terms")(["p"], ["c"])


def test_terms_are_summed_per_completion():
    """A mutant that sums the terms along ``axis=1`` (per term, over the batch) — caught because with 3 completions
    and 2 terms the total must be the per-completion sums 1 + 10, 2 + 20, 3 + 30."""
    out = Reward(lambda p, c: {"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]})(["p"] * 3, ["c"] * 3)
    assert out.total.tolist() == [11.0, 22.0, 33.0]
    assert {k: v.tolist() for k, v in out.terms.items()} == {"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]}


def test_a_column_of_scores_is_flattened_to_one_per_completion():
    """A mutant that reshapes with ``None`` (a no-op) keeps a model's ``(B, 1)`` logits as ``(B, 1)`` — caught because
    the total must be ``(B,)``."""
    out = Reward(lambda p, c: torch.tensor([[1.5], [2.5]]))(["p", "p"], ["a", "b"])
    assert out.total.shape == (2,) and out.total.tolist() == [1.5, 2.5]


def test_non_finite_scores_list_the_first_five_values_and_positions():
    """A mutant that lists six — caught because seven bad scores must be reported as exactly the first five."""
    bad = [math.inf, -math.inf, math.nan, math.inf, -math.inf, math.nan, math.inf]
    with pytest.raises(ValueError, match=r"^reward 'r' returned non-finite scores \[inf, -inf, nan, inf, -inf\] at "
                                         r"positions \[0, 1, 2, 3, 4\]; rewards must be finite floats$"):
        Reward(lambda p, c: bad, name="r")(["p"] * 7, ["c"] * 7)


def test_as_reward_loads_a_path_on_the_device_asked_for(rm_dir):
    """A mutant that drops ``device=`` (``as_reward``), moves the model to ``None`` or stores no device
    (``HFRewardModel``) — caught because asking for the ``meta`` device (a device other than the default CPU that
    needs no accelerator) must put the model's weights and ``.device`` there."""
    rm = as_reward(str(rm_dir), device="meta").fn
    assert rm.device == torch.device("meta")
    assert {p.device.type for p in rm.model.parameters()} == {"meta"}


# ================================================================================ textenv/rewards/composite.py
def test_a_composite_term_given_as_a_path_loads_that_reward_model(rm_dir):
    """A mutant that never loads a path (``isinstance(fn, str)`` made false, ``as_reward(None)``) — caught because
    a term ``"rm": path`` must score as ``HFRewardModel(path)`` does, times its weight."""
    prompts, completions = ["the pasta was", "the room was"], [" great .", " dirty"]
    composite = CompositeReward({"rm": str(rm_dir)}, weights={"rm": 2.0})
    expected = [2.0 * s for s in HFRewardModel(rm_dir)(prompts, completions)]
    assert composite(prompts, completions)["rm"] == pytest.approx(expected, abs=1e-6)


def test_a_composite_terms_errors_name_the_term():
    """A mutant that wraps every term with ``as_reward`` or ``Reward(fn)`` without ``name=`` names a lambda
    ``'<lambda>'`` — caught because the error must name the term, ``'brevity'``."""
    composite = CompositeReward({"brevity": lambda p, c: [math.nan]})
    with pytest.raises(ValueError, match=r"^reward 'brevity' returned non-finite scores \[nan\]"):
        composite(["p"], ["c"])


def test_non_finite_weights_are_refused_naming_each_terms_weight():
    """A mutant that raises without a message or with the names or weights dropped — caught because the message must
    map each term to its weight."""
    with pytest.raises(ValueError, match=r"^weights must be finite; got \{'a': 1\.0, 'b': inf\}$"):
        CompositeReward({"a": _lengths, "b": _lengths}, weights={"b": math.inf})


def test_a_fresh_composite_has_empty_per_term_statistics_and_its_name():
    """A mutant that starts ``frozen = None``, builds the statistics without ``shape=(K,)`` (one scalar for all
    terms) or names the composite otherwise — caught because the fresh state must be exactly zero counts and one
    0.0 per term, unfrozen, and the name ``composite(a, b)`` (what error messages call it)."""
    composite = CompositeReward({"a": _lengths, "b": _lengths})
    assert composite.state_dict() == {"count": 0, "mean": [0.0, 0.0], "m2": [0.0, 0.0], "frozen": False}
    assert composite.frozen is False
    assert composite.__name__ == "composite(a, b)" and as_reward(composite).name == "composite(a, b)"


def test_calibrate_takes_two_completions_and_load_state_dict_restores_frozen():
    """A mutant that needs three completions to calibrate (``<= 2``, ``< 3``) or restores ``frozen`` as
    ``bool(None)`` — caught because calibrating on lengths 1 and 3 must give mean 2 and sample std √2, and a frozen
    state must stay frozen: scoring after loading it leaves the count at 2.

    Lengths 1, 3: mean 2, m2 = 1 + 1 = 2, sample std = √(2 / (2 − 1)) = √2;
    a length 4 then scores (4 − 2)/√2 = √2.
    """
    composite = CompositeReward({"a": _lengths}, normalize_then_sum=True)
    assert composite.calibrate(["p", "p"], ["x", "xyz"]) == {"a": (2.0, pytest.approx(math.sqrt(2.0)))}
    state = composite.state_dict()
    assert state == {"count": 2, "mean": [2.0], "m2": [pytest.approx(2.0)], "frozen": True}
    restored = CompositeReward({"a": _lengths}, normalize_then_sum=True)
    restored.load_state_dict(state)
    assert restored.frozen is True
    assert restored(["p"], ["wxyz"])["a"] == [pytest.approx(math.sqrt(2.0))]
    assert restored.count == 2


# ==================================================================================== textenv/rewards/rules.py
def test_a_token_length_needs_a_tokenizer_and_says_so():
    """A mutant that words the refusal otherwise — caught by matching the whole message."""
    with pytest.raises(ValueError, match=r'^unit="tokens" needs tokenizer= \(a tokenizer or the path of one\)$'):
        LengthTarget(3, unit="tokens")


def test_token_lengths_count_the_completion_without_special_tokens():
    """A mutant that tokenises with ``add_special_tokens`` left at transformers' default (True) or forced True,
    or hands the length wrappers ``tokenizer=None`` (refused, or crashing when counting) — caught because with a
    tokenizer that adds a BOS, the two-word completion ``" a b"`` must count 2 tokens in every rule.

    LengthTarget(2): −|2 − 2|/2 = 0; LengthPenalty(coef 1, free 1): −(2 − 1) = −1;
    LengthNormalized: 4 / 2 = 2.
    """
    tok = _WordTokenizer()
    assert LengthTarget(2, unit="tokens", tokenizer=tok)(["p"], [" a b"]) == [0.0]
    penalty = LengthPenalty(lambda p, c: [4.0], coef=1.0, free=1, unit="tokens", tokenizer=tok)(["p"], [" a b"])
    assert penalty == {"score": [4.0], "length_penalty": [-1.0]}
    assert LengthNormalized(lambda p, c: [4.0], unit="tokens", tokenizer=tok)(["p"], [" a b"]) == [2.0]


def test_keyword_reward_refuses_an_empty_keyword_and_a_cap_below_one():
    """A mutant that accepts ``""`` (``isinstance(k, str) or k``), refuses ``max_hits=1`` (``<= 1``, ``< 2``) or
    raises without a message — caught because ``""`` and ``max_hits=0`` must be refused naming the value, and a
    cap of 1 must count one hit of two."""
    with pytest.raises(ValueError, match=r"^keywords=\['great', ''\] must be a non-empty list of non-empty strings$"):
        KeywordReward(["great", ""])
    with pytest.raises(ValueError, match=r"^max_hits=0 must be >= 1 or None$"):
        KeywordReward(["great"], max_hits=0)
    assert KeywordReward(["great"], max_hits=1)(["p"], [" great , great ."]) == [1.0]


def test_keyword_alternatives_try_the_longest_first_whatever_their_case():
    """A mutant that sorts the keywords without ``key=len`` (lexicographic: ``"view" > "great" > "Great view"``) or
    shortest first — caught because, matched case-insensitively, ``" great view"`` is one hit of ``"Great view"``,
    not ``"great"`` then ``"view"`` (two)."""
    assert KeywordReward(["view", "great", "Great view"])(["p"], [" great view ."]) == [1.0]


def test_a_case_sensitive_keyword_reward_is_built_without_warnings():
    """A mutant that compiles with flags ``1`` (``re.TEMPLATE``, deprecated, removed in Python 3.13) instead of 0 —
    caught because building a case-sensitive keyword reward must not warn, and it must match case-sensitively."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reward = KeywordReward(["Great"], case_sensitive=True)
    assert reward(["p"], [" great Great ."]) == [1.0]


def test_regex_reward_uses_its_flags_and_searches_the_unstripped_completion():
    """A mutant that compiles without ``flags`` or strips the completion in ``"search"`` mode too — caught because
    ``re.IGNORECASE`` must match ``GREAT`` in ``" great ."``, and ``\\s$`` must find the trailing space."""
    assert RegexReward("GREAT", flags=re.IGNORECASE)(["p"], [" great ."]) == [1.0]
    assert RegexReward(r"\s$")(["p", "p"], [" ok. ", " ok."]) == [1.0, 0.0]


def test_length_target_of_one_is_allowed():
    """A mutant that refuses ``target=1`` (``<= 1``, ``< 2``) — caught because a one-word target is valid:
    ``" a"`` scores 0, ``" a b"`` scores −|2 − 1|/1 = −1."""
    assert LengthTarget(1)(["p", "p"], [" a", " a b"]) == [0.0, -1.0]


def test_exact_match_lowercases_rather_than_uppercases():
    """A mutant that normalises with ``upper()`` — caught because ``"STRASSE".upper() == "straße".upper()``
    ("SS") while lowercase keeps ``"strasse" != "straße"``: only the spelling of the reference may match."""
    reward = ExactMatch({"q": "straße"})
    assert reward(["q", "q"], ["STRASSE", " Straße ."]) == [0.0, 1.0]


def test_length_wrappers_refuse_a_non_callable_and_a_negative_coefficient_by_value():
    """A mutant that raises without a message, names ``type(None)``, accepts ``coef=-1`` (``and`` for ``or``) or
    refuses ``coef=0`` (``<= 0``) — caught because the messages must name the type and the values, and a zero
    coefficient is a valid (no) penalty."""
    for wrapper in (lambda r: LengthPenalty(r, coef=1.0), LengthNormalized):
        with pytest.raises(TypeError, match=r"^reward must be callable \(prompts, completions\) -> scores; got int$"):
            wrapper(5)
    with pytest.raises(ValueError, match=r"^coef=-1 and free=0 must be >= 0$"):
        LengthPenalty(_lengths, coef=-1)
    assert LengthPenalty(lambda p, c: [1.0], coef=0)(["p"], [" a b c"]) == {"score": [1.0], "length_penalty": [0.0]}


def test_length_normalized_divides_by_the_length_of_one_word_and_takes_arrays():
    """A mutant that divides by at least 2 (``max(2, n)``) or drops an array's values (``scores = None``) — caught
    because a one-word completion keeps its score, and an array of scores divides like a list."""
    assert LengthNormalized(lambda p, c: [3.0])(["p"], [" great"]) == [3.0]
    assert LengthNormalized(lambda p, c: np.array([2.0, 4.0]))(["p", "p"], [" a", " a b"]) == [2.0, 2.0]


# ======================================================================================= textenv/rewards/hf.py
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
    from transformers import AutoModelForSequenceClassification

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
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

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


# ==================================================================================== textenv/rewards/judge.py
from textenv.rewards import PairwiseJudge, PointwiseJudge  # noqa: E402
from textenv.rewards.judge import _shared_prefix  # noqa: E402

TEMPLATE = "Review: {prompt}{completion}\nWas it good?"
ONE_TOKEN = {" great": 1.0, " bad": -1.0}  # one token each in the built-in tokenizer
TWO_TOKENS = {" great": 1.0, " awful": -1.0}  # " awful" is two: a forward per option


@pytest.fixture(scope="module")
def judge_lm(lm_dir):
    """The built-in LM and its tokenizer, loaded."""
    from textenv.lm import load_causal_lm, load_tokenizer

    return load_causal_lm(lm_dir), load_tokenizer(lm_dir)


def _option_probs(model, tokenizer, context, options, context_limit=None):
    """Softmax over ``options`` of log p(option | context) by unpadded, uncached forwards. When every option is one
    token, one forward of the context read at its end (the context cut to its last ``context_limit`` tokens);
    otherwise one forward per option fed after the context (cut to its last ``context_limit − len(option)``)."""
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    answers = [tokenizer(option, add_special_tokens=False)["input_ids"] for option in options]
    limit = context_limit or len(ctx) + max(map(len, answers))
    logps = []
    for ans in answers:
        fed = any(len(a) > 1 for a in answers)
        c = ctx[-(limit - len(ans)):] if fed else ctx[-limit:]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([c + ans if fed else c])).logits[0].double(), -1)  # (L, V)
        logps.append(sum(logp[len(c) - 1 + j, a].item() for j, a in enumerate(ans)))
    return np.exp(logps) / np.exp(logps).sum()


def _expected(model, tokenizer, contexts, options, context_limit=None):
    values = np.array(list(options.values()))
    return [_option_probs(model, tokenizer, c, list(options), context_limit) @ values for c in contexts]


class _Forwards:
    """Records the ``input_ids`` shape of every top-level forward of a model."""

    def __init__(self, model):
        self.shapes = []
        self._hook = model.register_forward_hook(
            lambda module, args, kwargs, out: self.shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._hook.remove()


def test_judges_are_named_after_their_model(judge_lm, lm_dir):
    """A mutant that names a judge's model ``None``/``'None'`` or ``NoneType`` — caught because ``__name__`` must be
    ``PointwiseJudge(<path>)`` for a path and the model's class for a loaded model, for both judges."""
    model, tokenizer = judge_lm
    assert PointwiseJudge(lm_dir, TEMPLATE, ONE_TOKEN).__name__ == f"PointwiseJudge({lm_dir})"
    assert PointwiseJudge(model, TEMPLATE, ONE_TOKEN, tokenizer=tokenizer).__name__ == "PointwiseJudge(GPT2LMHeadModel)"
    assert PairwiseJudge(model, tokenizer=tokenizer).__name__ == "PairwiseJudge(GPT2LMHeadModel)"


def test_a_judge_loads_its_model_on_the_device_asked_for(lm_dir):
    """A mutant that loads the judge's model without ``device`` (or with ``None``) or stores no device — caught
    because asking for ``meta`` (a non-default device that needs no accelerator) must put the weights there."""
    judge = PointwiseJudge(lm_dir, TEMPLATE, ONE_TOKEN, device="meta")
    assert judge.lm.device == torch.device("meta")
    assert {p.device.type for p in judge.lm.model.parameters()} == {"meta"}


def test_judge_arguments_are_refused_with_messages_naming_the_value(judge_lm, lm_dir):
    """A mutant that drops or rewords a refusal, refuses ``batch_size=1`` (``<= 1``, ``< 2``) or joins the missing
    template fields with another separator — caught because each refusal must read exactly as here, and a batch
    size of 1 must be accepted."""
    model, tokenizer = judge_lm
    with pytest.raises(ValueError, match=r"^a judge given a loaded model also needs tokenizer=$"):
        PointwiseJudge(model, TEMPLATE, ONE_TOKEN)
    with pytest.raises(ValueError, match=r"^batch_size=0 must be >= 1$"):
        PointwiseJudge(model, TEMPLATE, ONE_TOKEN, tokenizer=tokenizer, batch_size=0)
    assert PointwiseJudge(model, TEMPLATE, ONE_TOKEN, tokenizer=tokenizer, batch_size=1).lm.batch_size == 1
    with pytest.raises(ValueError, match=r"^system= is a chat system prompt; this judge reads plain text \(chat=False "
                                         r"or no template\)$"):
        PointwiseJudge(lm_dir, TEMPLATE, ONE_TOKEN, system="be fair")
    with pytest.raises(ValueError, match=r"^template must contain \{prompt\}, \{completion\}; got 'Rate it\.'$"):
        PointwiseJudge(model, "Rate it.", ONE_TOKEN, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"^options=\{' great': 1\.0\} needs at least two answers to compare$"):
        PointwiseJudge(model, TEMPLATE, {" great": 1.0}, tokenizer=tokenizer)
    pairwise = PairwiseJudge(model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"^prompts, a and b must have the same length; got 2, 1, 2$"):
        pairwise.compare(["p", "p"], ["a"], ["b", "b"])
    with pytest.raises(ValueError, match=r"^a PairwiseJudge used as a reward needs reference= \(a completion per "
                                         r"prompt to compare with\)$"):
        pairwise(["p"], ["a"])


class _PlainTokenizer:
    """A tokenizer object with only what a plain-text judge uses (no ``chat_template`` attribute at all)."""

    def __init__(self, tokenizer):
        self._tokenizer, self.pad_token_id = tokenizer, tokenizer.pad_token_id

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)


class _BosTokenizer(_PlainTokenizer):
    """Prepends a BOS id when ``add_special_tokens`` (transformers' default, True), as Llama's tokenizer does."""

    def __call__(self, texts, add_special_tokens=True, **kwargs):
        out = self._tokenizer(texts, add_special_tokens=False, **kwargs)
        bos = [self._tokenizer.eos_token_id] if add_special_tokens else []
        return {"input_ids": [bos + ids for ids in out["input_ids"]]}


def test_a_tokenizer_without_a_chat_template_attribute_reads_plain_text(judge_lm):
    """A mutant that reads ``chat_template`` without a default raises AttributeError — caught because a tokenizer
    object without the attribute must give a plain-text judge with the same scores."""
    model, tokenizer = judge_lm
    completions = [" great .", " awful and cold ."]
    judge = PointwiseJudge(model, TEMPLATE, ONE_TOKEN, tokenizer=_PlainTokenizer(tokenizer))
    assert not judge.lm.chat
    expected = PointwiseJudge(model, TEMPLATE, ONE_TOKEN, tokenizer=tokenizer, chat=False)(["the pasta was"] * 2,
                                                                                          completions)
    assert judge(["the pasta was"] * 2, completions) == pytest.approx(expected, abs=1e-6)


def test_judges_never_add_special_tokens(judge_lm):
    """A mutant that tokenises options, contexts or continuations with ``add_special_tokens`` left at transformers'
    default (or True) — caught because with a tokenizer that adds a BOS the scores must be those computed by hand
    without it, for one-token and two-token options, and one-token options must still take one forward per batch
    of contexts (a BOS would make them two tokens: a row per option, 6 rows in 3 batches of 2 instead of 2)."""
    model, tokenizer = judge_lm
    contexts = ["the food was great .", "our waiter was slow and rude .", "the room was clean ."]
    for options, n_forwards in ((ONE_TOKEN, 2), (TWO_TOKENS, 3)):  # batches of 2: 3 contexts, or 3 x 2 option rows
        judge = PointwiseJudge(model, "{prompt}{completion}", options, tokenizer=_BosTokenizer(tokenizer), chat=False,
                               batch_size=2)
        with _Forwards(model) as forwards:
            scores = judge(contexts, [""] * 3)
        assert scores == pytest.approx(_expected(model, tokenizer, contexts, options), abs=1e-5), options
        assert len(forwards.shapes) == n_forwards, forwards.shapes


def test_an_option_or_a_context_that_encodes_to_no_tokens_is_refused(judge_lm):
    """A mutant that drops or rewords these refusals, or returns a wrong shape for no contexts (``np.empty(None)``,
    one row) — caught by the exact messages and the ``(0, 2)`` shape."""
    model, tokenizer = judge_lm
    with pytest.raises(ValueError, match=r"^judge answer option '' encodes to no tokens; options must be non-empty$"):
        PointwiseJudge(model, TEMPLATE, {"": 1.0, " great": -1.0}, tokenizer=tokenizer)(["p"], ["c"])
    judge = PointwiseJudge(model, "{prompt}{completion}", ONE_TOKEN, tokenizer=tokenizer, chat=False)
    with pytest.raises(ValueError, match=r"^a judge context encodes to no tokens$"):
        judge([""], [""])
    with pytest.raises(ValueError, match=r"^a judge answer option is empty; options must be non-empty strings$"):
        judge.lm.logprobs(["the pasta was"], [""])
    assert judge.lm.next_token_logprobs([], [1581, 1731]).shape == (0, 2)


def _short_context_lm(tokenizer, positions: int, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, n_positions=positions,
                                      vocab_size=len(tokenizer))).eval()


def test_a_context_longer_than_the_model_keeps_its_end(judge_lm):
    """A mutant that ignores the model's context length (``and 1024``, ``context_length(None)``) or keeps
    ``context + len(option)`` tokens before a multi-token option — caught because on a 16-position model a
    20-token context must be scored on its last 16 tokens (one-token options) or its last ``16 − len(option)``
    tokens followed by the option (two-token options)."""
    _, tokenizer = judge_lm
    model = _short_context_lm(tokenizer, 16)
    context = "the room was clean and the staff were kind and the breakfast was good and the food was"
    assert len(tokenizer(context, add_special_tokens=False)["input_ids"]) > 20
    for options in (ONE_TOKEN, TWO_TOKENS):
        judge = PointwiseJudge(model, "{prompt}{completion}", options, tokenizer=tokenizer, chat=False)
        assert judge.lm.context == 16
        expected = _expected(model, tokenizer, [context], options, context_limit=16)
        assert judge([context], [""]) == pytest.approx(expected, abs=1e-5), options


def test_a_model_without_a_stated_context_length_is_read_with_its_last_1024_tokens(judge_lm):
    """A mutant that falls back to 1025 tokens — caught because a 1,800-token context on a model whose config
    states no context length must be scored on its last 1024 tokens (GPT-2's context); with 1025 the score moves
    by about 0.03 on this model."""
    _, tokenizer = judge_lm
    model = _short_context_lm(tokenizer, 1100)
    model.config.n_positions = 0  # no positive context length: context_length() is None
    context = " ".join(["the room was clean and quiet ."] * 200)
    judge = PointwiseJudge(model, "{prompt}{completion}", ONE_TOKEN, tokenizer=tokenizer, chat=False)
    assert judge.lm.context == 1024
    expected = _expected(model, tokenizer, [context], ONE_TOKEN, context_limit=1024)
    assert judge([context], [""]) == pytest.approx(expected, abs=1e-5)


def test_chat_true_and_a_pairwise_judges_chat_system_and_prefill_are_used(chat_lm):
    """A mutant that turns ``chat=True`` into ``bool(None)`` (plain text), or builds a pairwise judge without its
    ``chat``, ``system`` or ``prefill`` — caught because each must shape the rendered context as asked."""
    from textenv.lm import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(chat_lm), load_tokenizer(chat_lm)
    chat = PointwiseJudge(model, TEMPLATE, ONE_TOKEN, tokenizer=tokenizer, chat=True)
    assert chat.lm.render("x") == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
    plain = PairwiseJudge(model, tokenizer=tokenizer, chat=False, prefill=" The better is")
    assert plain.lm.render("x") == "x The better is"
    with_system = PairwiseJudge(model, tokenizer=tokenizer, system="be fair")
    assert with_system.lm.render("x") == ("<|im_start|>system\nbe fair<|im_end|>\n<|im_start|>user\nx<|im_end|>\n"
                                          "<|im_start|>assistant\n")


def test_contexts_are_batched_by_length_one_forward_per_batch(judge_lm):
    """A mutant that steps through the rows one at a time (``range(0, n)`` without the batch size: overlapping
    batches, a forward per row) or does not sort the contexts by length — caught by the forwards' shapes: with
    batch size 2, four contexts of lengths long, short, long, short are run as (2, short) then (2, long), and six
    option rows of three contexts as two forwards."""
    model, tokenizer = judge_lm
    short, long = "the food was great .", "we stayed at this hotel for two nights and the room was dirty ."
    contexts = [long, short, long.replace("dirty", "clean"), short.replace("great", "bad")]
    lengths = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in contexts]
    judge = PointwiseJudge(model, "{prompt}{completion}", ONE_TOKEN, tokenizer=tokenizer, chat=False, batch_size=2)
    with _Forwards(model) as forwards:
        scores = judge(contexts, [""] * 4)
    assert forwards.shapes == [(2, max(lengths[1], lengths[3])), (2, max(lengths[0], lengths[2]))]
    assert scores == pytest.approx(_expected(model, tokenizer, contexts, ONE_TOKEN), abs=1e-5)
    judge = PointwiseJudge(model, "{prompt}{completion}", TWO_TOKENS, tokenizer=tokenizer, chat=False, batch_size=4)
    with _Forwards(model) as forwards:
        scores = judge(contexts[:3], [""] * 3)  # 3 contexts x 2 options = 6 rows: batches of 4 and 2
    assert [shape[0] for shape in forwards.shapes] == [4, 2]
    assert scores == pytest.approx(_expected(model, tokenizer, contexts[:3], TWO_TOKENS), abs=1e-5)


def test_one_token_options_after_a_short_shared_prefix_match_hand_computed_forwards(judge_lm):
    """A mutant of the no-shared-prefix branch (``cache = ""``, ``shared = 1`` or ``None``) — caught because
    contexts sharing fewer than 8 tokens must score as separate unpadded forwards."""
    model, tokenizer = judge_lm
    contexts = ["the food was great .", "our waiter was slow and rude .", "the room was"]
    assert _shared_prefix(tokenizer(contexts, add_special_tokens=False)["input_ids"]) < 8
    judge = PointwiseJudge(model, "{prompt}{completion}", ONE_TOKEN, tokenizer=tokenizer, chat=False)
    assert judge(contexts, [""] * 3) == pytest.approx(_expected(model, tokenizer, contexts, ONE_TOKEN), abs=1e-5)


def test_a_shared_prefix_of_exactly_eight_tokens_is_run_once(judge_lm):
    """A mutant that runs a shared prefix only when it is longer than 8 tokens (``<=``) — caught because the
    constant's contract is "at least this long": contexts sharing exactly 8 tokens must run them once, as a
    (1, 8) forward, then the rest; and the scores must be those of separate forwards."""
    model, tokenizer = judge_lm
    contexts = [TEMPLATE.format(prompt="the pasta was", completion=c) for c in (" great .", " awful and cold .")]
    assert _shared_prefix(tokenizer(contexts, add_special_tokens=False)["input_ids"]) == 8
    judge = PointwiseJudge(model, TEMPLATE, ONE_TOKEN, tokenizer=tokenizer, chat=False)
    with _Forwards(model) as forwards:
        scores = judge(["the pasta was"] * 2, [" great .", " awful and cold ."])
    assert forwards.shapes[0] == (1, 8) and len(forwards.shapes) == 2
    assert scores == pytest.approx(_expected(model, tokenizer, contexts, ONE_TOKEN), abs=1e-5)


def test_a_shared_prefix_is_cached_even_when_the_config_turns_the_cache_off(lm_dir):
    """A mutant that runs the shared prefix without ``use_cache=True`` (``None`` or dropped) gets no cache back from
    a model saved with ``use_cache: false`` (as trainers that checkpoint gradients save them) — caught because
    such a judge must still score contexts sharing a prefix as separate forwards do."""
    from textenv.lm import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(lm_dir), load_tokenizer(lm_dir)
    model.config.use_cache = False
    completions = [" great .", " awful and cold ."]
    contexts = [TEMPLATE.format(prompt="the pasta was", completion=c) for c in completions]
    judge = PointwiseJudge(model, TEMPLATE, ONE_TOKEN, tokenizer=tokenizer, chat=False)
    assert judge(["the pasta was"] * 2, completions) == pytest.approx(
        _expected(model, tokenizer, contexts, ONE_TOKEN), abs=1e-5)


def test_shared_prefix_is_zero_when_the_first_tokens_differ():
    """A mutant that starts comparing at the second token (``n = 1``) — caught because rows that differ in their
    first token share nothing, whatever follows."""
    assert _shared_prefix([[1, 2, 3, 4], [5, 2, 3, 4]]) == 0


def test_the_default_options_are_yes_worth_1_and_no_worth_minus_1(judge_lm):
    """A mutant of the default options (another answer string or case, another value) — caught because the default
    score must be p(" Yes") − p(" No") over the two, computed by hand."""
    model, tokenizer = judge_lm
    judge = PointwiseJudge(model, TEMPLATE, tokenizer=tokenizer, chat=False)
    context = TEMPLATE.format(prompt="the pasta was", completion=" great .")
    expected = _expected(model, tokenizer, [context], {" Yes": 1.0, " No": -1.0})
    assert judge(["the pasta was"], [" great ."]) == pytest.approx(expected, abs=1e-5)


def test_a_pairwise_reference_may_be_a_function_and_a_missing_one_is_named(judge_lm):
    """A mutant that never calls a reference function (``callable(None)``, ``list(None)``, ``references = None``) or
    skips the missing-prompt check (``missing = None``: a bare KeyError) — caught because a function's references
    must score as ``2·P(completion ≻ reference) − 1``, and a prompt missing from a mapping must be named."""
    model, tokenizer = judge_lm
    prompts, completions = ["the pasta was", "the room was"], [" great .", " dirty ."]
    judge = PairwiseJudge(model, tokenizer=tokenizer, reference=lambda ps: [" fine ."] * len(ps))
    expected = 2.0 * judge.compare(prompts, completions, [" fine ."] * 2) - 1.0
    assert judge(prompts, completions) == pytest.approx(expected.tolist(), abs=1e-6)
    by_prompt = PairwiseJudge(model, tokenizer=tokenizer, reference={"the pasta was": " fine ."})
    with pytest.raises(KeyError, match=r"PairwiseJudge has no reference completion for prompt 'the room was'"):
        by_prompt(prompts, completions)
