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


# ============================================================================================== textenv/lm.py
from textenv import lm  # noqa: E402


class _Loader:
    """A stand-in for a transformers ``Auto*`` class: found only on "the hub" (not in local files)."""

    calls: list = []

    @classmethod
    def from_pretrained(cls, name, **kwargs):
        cls.calls.append((name, kwargs))
        if kwargs.get("local_files_only"):
            raise OSError("not in local files")
        return "from the hub"


@pytest.mark.parametrize("name", ["./no-such-model", "/no-such-model", "~/no-such-model", "no/such/model"])
def test_a_path_that_does_not_exist_fails_as_a_missing_directory(name):
    """A mutant that stops recognising a path (a misspelt ``"."``, ``"/"`` or ``"~"`` prefix, ``and`` for ``or``,
    more than two slashes, counting another string) takes it for a hub id — caught because each of these names
    must fail as ``no such model directory``, not as a hub id."""
    with pytest.raises(FileNotFoundError, match=rf"^cannot load thing from '{re.escape(name)}': no such model directory"):
        lm.load_pretrained(_Loader, name, "thing")


@pytest.mark.parametrize(("offline", "goes_to_the_hub"), [
    (None, True), ("0", True), ("", True), ("false", True), ("False", True), ("1", False), ("true", False)])
def test_hf_hub_offline_is_read_as_transformers_reads_it(monkeypatch, offline, goes_to_the_hub):
    """A mutant of the ``HF_HUB_OFFLINE`` check (another default, another variable, a misspelt or re-cased
    "off" value) — caught because unset, ``0``, empty, ``false`` and ``False`` must try the hub (with the caller's
    keyword arguments, after a local-files-only try), and ``1`` or ``true`` must fail at once naming the id."""
    if offline is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    _Loader.calls = []
    if goes_to_the_hub:
        assert lm.load_pretrained(_Loader, "owner/model", "thing", num_labels=1) == "from the hub"
        assert _Loader.calls == [("owner/model", {"local_files_only": True, "num_labels": 1}),
                                 ("owner/model", {"num_labels": 1})]
    else:
        with pytest.raises(FileNotFoundError, match=r"^cannot load thing 'owner/model': it is not a local directory"):
            lm.load_pretrained(_Loader, "owner/model", "thing")


def test_pad_batch_of_nothing_and_on_another_device():
    """A mutant that pads an empty batch to width 1 (``default=1``) or fails on it (``None``, no default), or
    builds the batch on the default device (``device=None`` or dropped) — caught because no sequences give two
    ``(0, 0)`` tensors, and ``device="meta"`` must put both tensors there."""
    ids, mask = lm.pad_batch([], pad_id=0)
    assert ids.shape == mask.shape == (0, 0)
    ids, mask = lm.pad_batch([[1, 2], [3]], pad_id=0, device="meta")
    assert ids.device.type == mask.device.type == "meta"


def test_at_completion_reads_the_predicting_positions_clamped_to_the_last_column():
    """A mutant that clamps to ``L − 2``, or builds the positions on the CPU whatever ``x``'s device (``device=None``,
    dropped, ``prompt_len`` moved to ``None``) — caught because with ``L = 4``, a 3-token prompt and ``T = 3`` the
    positions read must be 2, 3 and 3 (the last column, clamped), and logits on another device (``meta``) must work.
    """
    x = torch.arange(4.0).view(1, 4, 1)  # (B, L, D): the value is the position
    assert lm.at_completion(x, torch.tensor([3]), 3).flatten().tolist() == [2.0, 3.0, 3.0]
    assert lm.at_completion(torch.zeros(1, 4, 2, device="meta"), torch.tensor([3]), 3).device.type == "meta"


class _MetaLM:
    """A model whose logits live on another device (``meta``) than the batch (the CPU)."""

    def __call__(self, input_ids, attention_mask):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 7, device="meta")})()


def test_sequence_logprobs_moves_actions_and_mask_to_the_logits_device():
    """A mutant that leaves the actions or the mask on their own device (``.to(None)``) — caught because a model
    whose logits are on ``meta`` must give a result there rather than a device error."""
    batch = lm.completion_batch([[1, 2], [3]], [[4], [5, 6]], pad_id=0)
    assert lm.sequence_logprobs(_MetaLM(), batch).device.type == "meta"


def test_adapter_base_and_chain_refuse_damaged_or_looping_configs_by_name(tmp_path):
    """A mutant of the adapter-folder checks: ``config.json`` looked up under another name (a model folder holding
    a stray ``adapter_config.json`` read as an adapter), the damaged-JSON message dropped, a non-string base let
    through (``and`` for ``or``), a loop reported only after 33 folders (``and``) — caught by these exact results."""
    import json

    def folder(name, config=None, text=None, model=False):
        path = tmp_path / name
        path.mkdir()
        if config is not None or text is not None:
            (path / "adapter_config.json").write_text(text if text is not None else json.dumps(config))
        if model:
            (path / "config.json").write_text("{}")
        return path

    assert lm.adapter_base(folder("model", {"base_model_name_or_path": "gpt2"}, model=True)) is None
    damaged = folder("damaged", text="{not json")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(damaged))}/adapter_config\.json is not a JSON object; is "
                                         r"the adapter folder damaged\?$"):
        lm.adapter_base(damaged)
    with pytest.raises(ValueError, match=r"adapter_config\.json names no base_model_name_or_path; a PEFT adapter "
                                         r"folder loads on the base model it names there$"):
        lm.adapter_base(folder("number", {"base_model_name_or_path": 5}))
    a, b = tmp_path / "a", tmp_path / "b"
    folder("a", {"base_model_name_or_path": str(b)}), folder("b", {"base_model_name_or_path": str(a)})
    with pytest.raises(ValueError, match=rf"^PEFT adapter folders \['{re.escape(str(a))}', '{re.escape(str(b))}'\] "
                                         rf"name each other as base_model_name_or_path in a loop \(via "):
        lm.adapter_chain(a)


def test_an_adapter_chain_may_be_32_folders_deep_and_no_deeper(tmp_path):
    """A mutant that refuses a chain of 32 adapters (``>= 32``) or allows 33 (``> 33``) — caught because adapters
    stacked 32 deep on a model must resolve, and 33 deep must be refused as a loop would be."""
    import json

    bottom = tmp_path / "model"
    bottom.mkdir()
    (bottom / "config.json").write_text("{}")
    below = bottom
    for i in range(33):
        folder = tmp_path / f"adapter-{i}"
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(below)}))
        below = folder
    adapters, base = lm.adapter_chain(tmp_path / "adapter-31")
    assert len(adapters) == 32 and base == str(bottom)
    with pytest.raises(ValueError, match=r"in a loop"):
        lm.adapter_chain(tmp_path / "adapter-32")


def test_missing_peft_and_missing_folders_are_named_in_the_errors(tmp_path, monkeypatch):
    """A mutant that names ``None`` instead of the adapter, or changes what a loader says it loads (the default
    ``"model config"``, ``"tokenizer"``, ``"causal LM"``) — caught by these exact messages."""
    import sys

    missing = tmp_path / "missing"
    for load, what in ((lm.load_config, "model config"), (lm.load_tokenizer, "tokenizer"),
                       (lm.load_causal_lm, "causal LM")):
        with pytest.raises(FileNotFoundError, match=rf"^cannot load {what} from '{re.escape(str(missing))}': no such"):
            load(missing)
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match=r"^'my-adapter' needs the `peft` package \(LoRA adapters\), which is not "
                                          r"installed; `pip install peft`"):
        lm.require_peft("my-adapter")
    with pytest.raises(ImportError, match=r"^'some/adapter' needs the `peft` package"):
        lm.load_adapter(torch.nn.Linear(1, 1), "some/adapter")


def test_load_tokenizer_keeps_a_pad_gives_eos_where_none_and_refuses_no_eos(lm_dir, tmp_path):
    """A mutant that replaces every tokenizer's pad with EOS (``is not None``), sets the pad to ``None``, or drops
    or garbles the no-EOS refusal — caught because the built-in tokenizer keeps ``<pad>``, one saved without a pad
    gets EOS as pad, and one without EOS is refused naming its folder."""
    assert lm.load_tokenizer(lm_dir).pad_token == "<pad>"
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path / "no-pad")
    loaded = lm.load_tokenizer(tmp_path / "no-pad")
    assert loaded.pad_token == loaded.eos_token == "<|endoftext|>"
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    tokenizer.eos_token = None
    tokenizer.save_pretrained(tmp_path / "no-eos")
    with pytest.raises(ValueError, match=rf"^tokenizer of '{re.escape(str(tmp_path / 'no-eos'))}' has no EOS token; a "
                                         r"text env needs one to end episodes$"):
        lm.load_tokenizer(tmp_path / "no-eos")


def test_a_merged_adapter_is_named_after_its_folder_and_load_adapter_is_frozen_unless_asked(tiny_lm, tmp_path):
    """A mutant that names the merged model ``None``/``'None'``, makes ``load_adapter`` trainable by default
    (``is_trainable=True``), or drops the caller's ``is_trainable`` — caught because ``load_causal_lm(adapter)``
    must be named after the adapter folder (a LoRA run started from it names it as its base), and the adapter's
    weights must be frozen by default and trainable when asked."""
    from transformers import AutoModelForCausalLM

    _lora(AutoModelForCausalLM.from_pretrained(tiny_lm), 1).save_pretrained(tmp_path / "adapter")
    assert lm.load_causal_lm(tmp_path / "adapter").name_or_path == str(tmp_path / "adapter")
    for trainable in (False, True):
        kwargs = {"is_trainable": True} if trainable else {}
        peft_model = lm.load_adapter(AutoModelForCausalLM.from_pretrained(tiny_lm), tmp_path / "adapter", **kwargs)
        lora = [p.requires_grad for n, p in peft_model.named_parameters() if "lora_" in n]
        assert lora and all(r == trainable for r in lora), trainable


def test_context_length_reads_each_field_of_a_config_or_a_model():
    """A mutant that misspells one of the fields, reads ``None`` for a bare config (no ``.config``), or needs a value
    above 1 — caught because each field alone must be read, from a config or from a model holding it, and any
    positive integer counts."""
    from types import SimpleNamespace

    for field in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        config = SimpleNamespace(**{field: 7})
        assert lm.context_length(config) == 7 and lm.context_length(SimpleNamespace(config=config)) == 7, field
    assert lm.context_length(SimpleNamespace(n_positions=1)) == 1
    assert lm.context_length(SimpleNamespace(n_positions=0, n_ctx=5)) == 5


def test_incremental_lm_clamps_positions_past_its_context():
    """A mutant that forgets ``max_positions`` (``None``) or clamps it wrongly (never, ``max + 1``, ``max − 2``)
    — caught because a row stepped past a 6-position model's context (a frozen row fed padding) must be fed
    position 5, the last, and the step must not fail."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=11, n_positions=6, n_embd=8, n_layer=1, n_head=2)).eval()
    inc = lm.IncrementalLM(model, 1, pad_token_id=0, max_positions=6)
    inc.reset_rows([0], [[1, 2, 3, 4, 5]])
    for _ in range(3):  # positions 5, 6, 7: the last two are past the context
        assert inc._step_positions().tolist() == [[min(int(inc.positions[0]), 5)]]
        inc.step(torch.tensor([1]))
    assert inc._step_positions().tolist() == [[5]]


def test_a_cache_that_is_not_a_plain_dynamic_cache_is_refused_naming_its_layers():
    """A mutant that refuses only when both checks fail (``and``), or garbles the message (the cache's or the
    layers' type names, ``getattr`` of the layers with another name, object or default) — caught because an object
    without layers and a cache of foreign layers must both be refused with exactly this message."""
    from types import SimpleNamespace

    with pytest.raises(NotImplementedError, match=r"^IncrementalLM needs a model whose cache is a plain DynamicCache "
                                                  r"\(full attention\); got object with layers \[\]$"):
        lm._check_dynamic(object())
    with pytest.raises(NotImplementedError, match=r"; got SimpleNamespace with layers \['object'\]$"):
        lm._check_dynamic(SimpleNamespace(layers=[object()]))


# ====================================================================================== textenv/vector_env.py
import gymnasium as gym  # noqa: E402
from gymnasium.vector import AutoresetMode  # noqa: E402

from textenv.vector_env import TextGenerationVectorEnv  # noqa: E402

PROMPTS = ["the food was", "the room was", "our waiter was"]


def _chars(prompts, completions):
    return [float(len(c)) for c in completions]


def _vec(lm_dir, n=2, **kwargs):
    """The batched env built from task keyword arguments: the built-in tokenizer, a length reward, no gold."""
    fields = dict(model=str(lm_dir), reward_model=_chars, prompts=PROMPTS, gold_reward=None, max_new_tokens=2)
    return TextGenerationVectorEnv(n, **{**fields, **kwargs})


def test_the_batched_env_is_built_from_task_keywords_with_its_spaces_and_metadata(lm_dir):
    """A mutant that drops the task keywords (``as_task(task, None)``), misspells the default ``"same_step"``, the
    ``render_modes`` entry or ``"ansi"``, starts ``render_mode`` as ``""``, leaves ``action_space`` unbatched (or
    None), starts with placeholder prompts, accepts ``num_envs`` 0 or 2.0 (``and``) or refuses 1 — caught by the
    env's exact metadata, spaces, initial prompts and these refusals."""
    env = _vec(lm_dir)
    V = env.single_action_space.n
    assert env.metadata == {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": ["ansi"]}
    assert env.render_mode is None
    assert env.action_space == gym.spaces.MultiDiscrete([V, V])
    assert env.prompts == ["", ""] and env.render() == ["|", "|"]
    assert _vec(lm_dir, n=1).num_envs == 1
    for bad in (0, 2.0):
        with pytest.raises(ValueError, match=rf"^num_envs={bad!r} must be an integer >= 1$"):
            _vec(lm_dir, n=bad)


def test_reset_seeds_each_env_and_refuses_a_wrong_number_of_seeds(lm_dir):
    """A mutant that has no random generators before the first seeded reset (``None``, the seed instead of the
    generator), treats a list of seeds as one int (``or True``: a TypeError) or drops the refusal's message —
    caught because an unseeded reset must sample prompts, ``seed=7`` must equal ``seed=[7, 8]``, and one seed for
    two envs must be refused naming the counts."""
    env = _vec(lm_dir)
    _, info = env.reset()
    assert set(info["prompt"]) <= set(PROMPTS)
    by_int = env.reset(seed=7)[1]["prompt"].tolist()
    assert env.reset(seed=[7, 8])[1]["prompt"].tolist() == by_int
    with pytest.raises(ValueError, match=r"^reset got 1 seeds for 2 envs$"):
        env.reset(seed=[1])


def test_reset_options_set_prompts_and_restart_only_the_masked_envs(lm_dir):
    """A mutant that ignores ``options["prompts"]`` (a misspelt key, ``prompts = None`` with a mask) or
    ``options["reset_mask"]`` (a misspelt key), keeps an int mask as ints, reports prompts in a ``<U`` array or
    ``_prompt`` under another key, or drops a refusal's message — caught by the info, the untouched env and the
    messages here."""
    env = _vec(lm_dir)
    obs, info = env.reset(options={"prompts": ["the pasta was", "the view was"]})
    assert info["prompt"].tolist() == ["the pasta was", "the view was"] and info["prompt"].dtype == object
    assert info["_prompt"].tolist() == [True, True]
    obs2, info = env.reset(options={"prompts": ["ignored", "the bed was"], "reset_mask": [0, 1]})
    assert info["prompt"].tolist() == ["the pasta was", "the bed was"]
    assert info["_prompt"].dtype == bool and info["_prompt"].tolist() == [False, True]
    np.testing.assert_array_equal(obs2["input_ids"][0], obs["input_ids"][0])
    with pytest.raises(ValueError, match=r"^reset_mask has shape \(3,\); expected \(2,\)$"):
        env.reset(options={"reset_mask": [True, True, False]})
    with pytest.raises(ValueError, match=r"^options\['prompts'\] has 1 prompts for 2 envs$"):
        env.reset(options={"prompts": ["one"]})


def test_stepping_before_reset_says_what_to_do(lm_dir):
    """A mutant that rewords the refusal — caught by matching all of it."""
    with pytest.raises(RuntimeError, match=r"^step\(\) called with every episode ended \(or before the first "
                                           r"reset\); call reset\(\) first$"):
        _vec(lm_dir).step(np.array([5, 6]))


def test_a_step_whose_reward_raises_leaves_the_completion_length_as_it_was(lm_dir):
    """A mutant that restores the length of a failed step as 1 (``= 1`` for ``-= 1``) — caught because after two
    tokens a failing third step must leave two, and the retried step then scores as if nothing had failed."""
    fail = {"now": False}

    def reward(prompts, completions):
        if fail["now"]:
            raise RuntimeError("reward server down")
        return _chars(prompts, completions)

    env = _vec(lm_dir, reward_model=reward, dense=True, max_new_tokens=4)
    env.reset(seed=0)
    env.step(np.array([5, 6]))
    env.step(np.array([7, 8]))
    fail["now"] = True
    with pytest.raises(RuntimeError, match="reward server down"):
        env.step(np.array([9, 10]))
    assert env.gen_len.tolist() == [2, 2]
    fail["now"] = False
    env.step(np.array([9, 10]))
    assert env.gen_len.tolist() == [3, 3]


def test_an_autoreset_step_reports_the_final_observation_and_info(lm_dir):
    """A mutant that drops the final observations or their mask (``None``, misspelt ``_final_obs``/``_final_info``),
    the final prompt or score, or the gold reward (``ended = None``, ``i not in gold``, ``gold is None and ...``,
    the value or key replaced) — caught because two envs capped in the same step must report exactly their last
    observation, prompt, score (the completion's length in characters, by hand) and gold value."""
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    env = _vec(lm_dir, gold_reward=lambda p, c: [10.0 + len(x) for x in c])
    obs, _ = env.reset(options={"prompts": PROMPTS[:2]})
    env.step(np.array([5, 6]))
    _, rewards, terminated, _, info = env.step(np.array([7, 8]))
    completions = [tokenizer.decode([5, 7]), tokenizer.decode([6, 8])]
    assert terminated.tolist() == [True, True]
    assert rewards.tolist() == [float(len(c)) for c in completions]
    for i, tokens in enumerate(([5, 7], [6, 8])):
        start = int(obs["attention_mask"][i].sum())
        ids, mask = obs["input_ids"][i].copy(), obs["attention_mask"][i].copy()
        ids[start:start + 2], mask[start:start + 2] = tokens, 1
        np.testing.assert_array_equal(info["final_obs"][i]["input_ids"], ids)
        np.testing.assert_array_equal(info["final_obs"][i]["attention_mask"], mask)
    assert info["_final_obs"].tolist() == info["_final_info"].tolist() == [True, True]
    final = info["final_info"]
    assert final["prompt"].tolist() == PROMPTS[:2]
    assert final["score"].tolist() == [float(len(c)) for c in completions]
    assert final["reward_gold"].tolist() == [10.0 + len(c) for c in completions]


def test_episodes_end_without_a_gold_reward(lm_dir):
    """A mutant that calls a missing gold reward (``or`` for ``and``) or looks a row up in no gold (``gold = None``)
    — caught because without a gold reward two capped episodes must end normally, with no ``reward_gold``."""
    env = _vec(lm_dir)
    env.reset(seed=0)
    env.step(np.array([5, 6]))
    _, _, terminated, _, info = env.step(np.array([7, 8]))
    assert terminated.tolist() == [True, True] and "reward_gold" not in info["final_info"]


def test_actions_are_integer_token_ids_in_any_container(lm_dir):
    """A mutant that accepts float actions (``and`` in the dtype check), or no longer routes non-tensor actions
    through numpy (a list of 0-d arrays, what ``dist.sample().numpy()`` gives per env, then fails) — caught by
    the refusal message and by a step on such a list; ``render`` then shows each prompt and its completion."""
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    env = _vec(lm_dir, max_new_tokens=3)
    env.reset(options={"prompts": PROMPTS[:2]})
    with pytest.raises(ValueError, match=r"^actions must be 2 integer token ids, got \(2,\) of torch\.float64$"):
        env.step(np.array([5.0, 6.0]))
    with pytest.raises(ValueError, match=r"^actions must be 2 integer token ids, got \(2,\) of torch\.bool$"):
        env.step(np.array([True, False]))
    env.step([np.array(5), np.array(6)])
    assert env.render() == [PROMPTS[0] + "|" + tokenizer.decode([5]), PROMPTS[1] + "|" + tokenizer.decode([6])]


def test_int32_actions_are_written_as_int64_token_ids(lm_dir):
    """A mutant that keeps the actions' own integer type (``dtype=None`` or dropped) — caught because writing int32
    ids into the env's int64 token buffer fails (index put needs equal dtypes): int32 actions must step and be
    stored as given."""
    env = _vec(lm_dir)
    obs, _ = env.reset(options={"prompts": PROMPTS[:2]})
    start = obs["attention_mask"].sum(1)
    obs, *_ = env.step(np.array([5, 6], dtype=np.int32))
    assert [obs["input_ids"][i, start[i]] for i in range(2)] == [5, 6]


# ============================================================================================== textenv/kl.py
from textenv.kl import KLController, KLShaping, KLShapingVector, _kl_wrapper, kl_estimate  # noqa: E402
from textenv.kl import supply_policy_logprobs  # noqa: E402

V = 2048  # the built-in tokenizer's vocabulary


def _zero(prompts, completions):
    return [0.0] * len(prompts)


def _single(ref, **kwargs):
    """A single Sentiment-v1 env with KL shaping against ``ref`` (a loaded module), no reward model to load."""
    fields = dict(reward_model=_zero, gold_reward=None, max_new_tokens=4, kl_coef=0.2, ref_model=ref)
    return gym.make("textenv/Sentiment-v1", **{**fields, **kwargs})


def _batched(ref, n=2, **kwargs):
    fields = dict(reward_model=_zero, gold_reward=None, max_new_tokens=4, kl_coef=0.2, ref_model=ref)
    return gym.make_vec("textenv/Sentiment-v1", num_envs=n, **{**fields, **kwargs})


def _ref_logprobs(model, ids, temperature=1.0):
    """log π_ref(· | ids) at the end of one unpadded row, (V,)."""
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double() / temperature, -1)


class _Forbidding(torch.nn.Module):
    """``base`` with probability 0 (logit −inf) on some tokens."""

    def __init__(self, base, tokens):
        super().__init__()
        self.base, self.config, self.tokens = base, base.config, list(tokens)

    def forward(self, **kwargs):
        out = self.base(**kwargs)
        out.logits[..., self.tokens] = -math.inf
        return out


class _WithConfig(torch.nn.Module):
    """A reference module that only carries a ``config`` (what the vocabulary check reads)."""

    def __init__(self, config):
        super().__init__()
        self.config, self.weight = config, torch.nn.Parameter(torch.zeros(1))


def test_kl_estimate_defaults_to_k1_and_full_needs_both_vectors():
    """A mutant that misspells the default estimator or lets ``full`` run with one vector missing (``and``) or
    words the refusal otherwise — caught because the default must be ``k1 = r`` and the refusal exact."""
    lp, lr = torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))
    assert kl_estimate(lp, lr).item() == pytest.approx(math.log(2.0))
    with pytest.raises(ValueError, match=r"^the 'full' KL estimator needs the whole policy and reference log-prob "
                                         r"vectors \(\.\.\., V\)$"):
        kl_estimate(None, None, "full", torch.zeros(3), None)


def test_a_controller_takes_beta_zero_and_a_horizon_of_one():
    """A mutant that refuses β = 0 (``> 0``) or a horizon of 1 (``<= 1``, ``< 2``) — caught because both are valid:
    with horizon 1 an error of +0.2 moves β by 20 % in one episode (0.1 → 0.12)."""
    assert KLController(0.0).value == 0.0
    controller = KLController(0.1, target=1.0, horizon=1)
    controller.observe(5.0)
    assert controller.end_batch() == pytest.approx(0.12)


def test_kl_options_are_refused_naming_the_value_and_the_choices(lm_dir):
    """A mutant that raises these refusals without a message or rewords them — caught by the exact messages."""
    base = gym.make("textenv/Sentiment-v1", reward_model=_zero, gold_reward=None)
    for kwargs, message in (
            (dict(kl_estimator="k4"), r"^kl_estimator='k4'; expected one of \('k1', 'k2', 'k3', 'full'\)$"),
            (dict(kl_mode="both"), r"^kl_mode='both'; expected one of \('policy', 'reference'\)$"),
            (dict(kl_timing="later"), r"^kl_timing='later'; expected one of \('step', 'end'\) \(when the reference "
                                      r"scores the tokens\)$"),
            (dict(kl_mode="reference", kl_target=1.0), r"^kl_target needs kl_mode='policy': in 'reference' mode the "
                                                      r"env cannot measure the KL$")):
        with pytest.raises(ValueError, match=message):
            KLShaping(base, **kwargs)


def test_the_reference_vocabulary_is_read_from_the_text_config_or_the_config(base_lm):
    """A mutant that reads the vocabulary size without defaults (a module without ``config``: AttributeError), from
    the top-level config when a text config exists (``and False``, ``hasattr(None, ...)``, a misspelt name), or
    always from ``get_text_config`` (``or True``) — caught because a module without a config must be refused with
    this message, and a config whose text config (or itself, having none) says 2048 must be accepted."""
    from types import SimpleNamespace

    base = gym.make("textenv/Sentiment-v1", reward_model=_zero, gold_reward=None)
    with pytest.raises(ValueError, match=r"^reference model vocabulary None differs from the env's 2048 \(.*\); the "
                                         r"reference must share the policy's tokenizer$"):
        KLShaping(base, kl_mode="reference", ref_model=torch.nn.Linear(1, 1))
    multimodal = SimpleNamespace(vocab_size=5, get_text_config=lambda: SimpleNamespace(vocab_size=V))
    for config in (SimpleNamespace(vocab_size=V), multimodal):
        assert KLShaping(base, kl_mode="reference", kl_timing="end", ref_model=_WithConfig(config)).ref is None


def test_a_reference_loaded_by_name_is_frozen_and_on_the_device_asked_for():
    """A mutant that loads the reference without ``device`` (or ``None``; single or batched wrapper) or leaves its
    weights trainable (``requires_grad_(True)``) — caught because ``device="meta"`` must put the weights there, and
    a reference it loads itself must be frozen."""
    base = gym.make("textenv/Sentiment-v1", reward_model=_zero, gold_reward=None)
    single = KLShaping(base, kl_mode="reference", device="meta")
    batched = KLShapingVector(gym.make_vec("textenv/Sentiment-v1", num_envs=2, reward_model=_zero, gold_reward=None),
                              kl_mode="reference", device="meta")
    for wrapper in (single, batched):
        params = list(wrapper.ref_model.parameters())
        assert {p.device.type for p in params} == {"meta"} and not any(p.requires_grad for p in params)


def test_a_wrapper_made_directly_uses_its_documented_defaults_and_the_given_reference(base_lm):
    """A mutant that changes a wrapper's defaults (β 1.05, horizon 10001) or ignores ``ref_model`` (``None``: a fresh
    copy of the env's model) — caught because both wrappers must start with β 0.05, the controller's horizon of
    10 000 episodes, k1, policy mode, step timing, and use the module they are given."""
    base = gym.make("textenv/Sentiment-v1", reward_model=_zero, gold_reward=None)
    base_vec = gym.make_vec("textenv/Sentiment-v1", num_envs=2, reward_model=_zero, gold_reward=None)
    for wrapper in (KLShaping(base, ref_model=base_lm), KLShapingVector(base_vec, ref_model=base_lm)):
        assert (wrapper.controller.value, wrapper.controller.horizon) == (0.05, 10_000)
        assert (wrapper.estimator, wrapper.mode, wrapper.timing) == ("k1", "policy", "step")
        assert wrapper.ref_model is base_lm


def test_a_reference_with_a_shorter_context_than_the_episode_is_clamped(lm_dir):
    """A mutant that gives the reference's cache no ``max_positions`` (``None``, dropped, ``context_length(None)``)
    — caught because a reference of 8 positions must follow a 4-token prompt through 8 tokens (positions 4..11)
    without an index error."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    short = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=8, n_embd=8, n_layer=1, n_head=2)).eval()
    env = _single(short, kl_mode="reference", max_new_tokens=8)
    _, info = env.reset(options={"prompt": "the food was"})
    assert info["prompt"] == "the food was"
    for _ in range(8):
        _, reward, terminated, truncated, _ = env.step(5)
        assert math.isfinite(reward)
    assert terminated or truncated


def test_supply_errors_name_the_shape_expected_for_the_estimator_and_the_batch(base_lm):
    """A mutant that rewords the missing-supply refusal, takes one log-prob per env for ``full`` (a misspelt
    ``"full"``), or builds the expected shape or the estimator's alternatives wrongly (single vs batched, ``full``
    vs ``k1``) — caught by the exact messages for a single env (k1, full) and a batched one (k1)."""
    env = _single(base_lm)
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match=r"^KL shaping in kl_mode='policy' needs the acting policy's log-probs before "
                                           r"each step: call textenv\.supply_policy_logprobs\(env, logprobs\) first, or "
                                           r"make the env with kl_mode='reference' for black-box agents \(and give the "
                                           r"agent an entropy bonus of kl_coef; see textenv\.kl\)$"):
        env.step(5)
    supply_policy_logprobs(env, torch.zeros(3))
    with pytest.raises(ValueError, match=r"^supplied policy log-probs have shape \(3,\); expected \(2048,\) \(the "
                                         r"next-token log-softmax\) or one log-prob per env for estimator 'k1'$"):
        env.step(5)
    full = _single(base_lm, kl_estimator="full")
    full.reset(seed=0)
    supply_policy_logprobs(full, torch.tensor(-1.0))
    with pytest.raises(ValueError, match=r"^supplied policy log-probs have shape \(\); expected \(2048,\) \(the "
                                         r"next-token log-softmax\) for estimator 'full'$"):
        full.step(5)
    batched = _batched(base_lm)
    batched.reset(seed=0)
    supply_policy_logprobs(batched, torch.zeros(3))
    with pytest.raises(ValueError, match=r"^supplied policy log-probs have shape \(3,\); expected \(2, 2048\) \(the "
                                         r"next-token log-softmax\) or one log-prob per env for estimator 'k1'$"):
        batched.step(np.array([5, 6]))


def test_reference_mode_at_temperature_two_scores_the_tempered_reference(base_lm):
    """A mutant that applies the temperature only when it is not 2.0 — caught because at ``kl_temperature=2`` each
    reward must be ``β·log softmax(logits / 2)[a]``, by hand."""
    env = _single(base_lm, kl_mode="reference", kl_temperature=2.0)
    env.reset(options={"prompt": "the food was"})
    ids = env.unwrapped.prompt_token_ids()
    for action in (5, 17):
        expected = 0.2 * _ref_logprobs(base_lm, ids, temperature=2.0)[action].item()
        assert env.step(action)[1] == pytest.approx(expected, abs=1e-5)
        ids.append(action)


def test_a_token_the_reference_forbids_is_named_in_reference_and_k1_policy_modes(base_lm):
    """A mutant that checks the reference's log-probs without the actions or without the log-probs (``None``) —
    caught because taking a token of probability 0 under the reference must be refused naming it, in reference
    mode and in policy mode with one log-prob per step (k1)."""
    forbidding = _Forbidding(base_lm, [5])
    message = r"^env 0: the reference gives token 5 probability 0 where the policy can take it, so KL"
    reference = _single(forbidding, kl_mode="reference")
    reference.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        reference.step(5)
    policy = _single(forbidding)
    policy.reset(seed=0)
    supply_policy_logprobs(policy, torch.tensor(-1.0))
    with pytest.raises(ValueError, match=message):
        policy.step(5)


def test_the_full_estimator_names_the_first_token_the_policy_can_take_and_the_reference_cannot(base_lm):
    """A mutant that also counts tokens the policy cannot take (``>= -inf``), assumes a blocked token exists
    (``or True``: IndexError), tests the token with ``or``, or garbles the NaN refusal — caught because with the
    policy giving token 3 probability 0 and the reference forbidding 3 and 7, token 7 must be named; and a NaN in
    the policy's log-probs must be refused as such, naming env 0."""
    env = _single(_Forbidding(base_lm, [3, 7]), kl_estimator="full")
    env.reset(seed=0)
    policy = torch.log_softmax(torch.zeros(V), -1)
    policy[3] = -math.inf
    supply_policy_logprobs(env, policy)
    with pytest.raises(ValueError, match=r"^env 0: the reference gives token 7 probability 0"):
        env.step(9)
    plain = _single(base_lm, kl_estimator="full")
    plain.reset(seed=0)
    nan = torch.log_softmax(torch.zeros(V), -1)
    nan[4] = math.nan
    supply_policy_logprobs(plain, nan)
    with pytest.raises(ValueError, match=r"^env 0: KL estimate is nan; check the supplied policy log-probs \(NaN or "
                                         r"\+inf\?\)$"):
        plain.step(9)


def test_end_timing_names_the_token_the_estimators_own_record_blocks(base_lm):
    """A mutant that checks an ended episode without the policy's full log-probs (``full`` estimator: ``None``), or
    records them for another estimator (``or``: k1 then names a token from the full vector) — caught because with
    ``full`` the first token the policy can take and the reference forbids (3) must be named, and with k1 the
    sampled token (5)."""
    uniform = torch.log_softmax(torch.zeros(V), -1)
    for estimator, tokens, action, named in (("full", [3], 9, 3), ("k1", [3, 5], 5, 5)):
        env = _single(_Forbidding(base_lm, tokens), kl_estimator=estimator, kl_timing="end", max_new_tokens=1)
        env.reset(seed=0)
        supply_policy_logprobs(env, uniform)
        with pytest.raises(ValueError, match=rf"^env 0, completion token 0, the reference gives token {named} "
                                             r"probability 0"):
            env.step(action)


def test_single_env_end_timing_with_the_full_estimator_gives_the_step_timings_values(base_lm):
    """A mutant that records no full log-probs at a single env's step (``None``), reports a non-final step's
    ``reward_kl`` otherwise (``None``, 1.0, another key) or hands the controller ``None`` — caught because the
    end-timed episode must carry the step-timed per-token KL values, 0.0 on earlier steps, and leave its summed KL
    pending in an adaptive controller."""
    rng = torch.Generator().manual_seed(0)
    policies = [torch.log_softmax(torch.randn(V, generator=rng), -1) for _ in range(3)]
    actions = [5, 17, 300]
    per_step = []
    step_env = _single(base_lm, kl_estimator="full", max_new_tokens=3)
    step_env.reset(options={"prompt": "the food was"})
    for policy, action in zip(policies, actions):
        supply_policy_logprobs(step_env, policy)
        per_step.append(step_env.step(action)[4]["kl"])
    end_env = _single(base_lm, kl_estimator="full", kl_timing="end", max_new_tokens=3, kl_target=1.0)
    end_env.reset(options={"prompt": "the food was"})
    for t, (policy, action) in enumerate(zip(policies, actions)):
        supply_policy_logprobs(end_env, policy)
        _, _, terminated, _, info = end_env.step(action)
        if t < 2:
            assert info["reward_kl"] == 0.0 and not terminated
    assert info["kl_tokens"] == pytest.approx(per_step, abs=1e-5)
    assert _kl_wrapper(end_env).controller.pending == [pytest.approx(sum(per_step), abs=1e-5)]


def test_end_timing_refuses_a_non_finite_supplied_logprob_before_the_step(base_lm):
    """A mutant that marks the single env's row as not live when checking the supply (``False``) — caught because
    a NaN log-prob of the sampled token must be refused before the step, naming env 0 and the token."""
    env = _single(base_lm, kl_timing="end")
    env.reset(seed=0)
    supply_policy_logprobs(env, torch.tensor(math.nan))
    with pytest.raises(ValueError, match=r"^supplied policy log-prob of env 0 \(token 5\) is nan; expected a finite "
                                         r"log-probability of the sampled token$"):
        env.step(5)


def test_a_step_that_fails_in_the_env_keeps_the_supplied_logprobs(base_lm):
    """A mutant that forgets the supply when the env's step raises (saved or restored as ``None``; single and
    batched) — caught because after a failing reward the retried step must go through without a new supply."""
    fail = {"now": True}

    def reward(prompts, completions):
        if fail["now"]:
            raise RuntimeError("reward server down")
        return _zero(prompts, completions)

    for env, action, supply in ((_single(base_lm, reward_model=reward, dense=True), 5, torch.tensor(-1.0)),
                                (_batched(base_lm, reward_model=reward, dense=True), np.array([5, 6]),
                                 torch.tensor([-1.0, -1.0]))):
        fail["now"] = False
        env.reset(seed=0)
        fail["now"] = True
        supply_policy_logprobs(env, supply)
        with pytest.raises(RuntimeError, match="reward server down"):
            env.step(action)
        fail["now"] = False
        env.step(action)  # the supply is still there


def test_a_batched_episode_kl_is_summed_in_float64_and_reset_options_reach_the_env(base_lm):
    """A mutant that sums the batched episode KL in float32 (``dtype=None`` or dropped) or drops the reset
    ``options`` — caught because each ``episode_kl`` must be exactly the float64 sum of its steps' ``kl``, and the
    prompts asked for must be the ones used."""
    env = _batched(base_lm, max_new_tokens=3)
    _, info = env.reset(options={"prompts": ["the food was", "the room was"]})
    assert info["prompt"].tolist() == ["the food was", "the room was"]
    rng = torch.Generator().manual_seed(1)
    kls = []
    for step in range(3):
        supply_policy_logprobs(env, -torch.rand(2, generator=rng) * 5)
        _, _, terminated, _, info = env.step(np.array([5 + step, 9 + step]))
        kls.append(info["kl"])
    assert terminated.all()
    assert info["episode_kl"].tolist() == [kls[0][i] + kls[1][i] + kls[2][i] for i in range(2)]


def test_a_partial_reset_restarts_only_the_masked_envs_reference_rows(base_lm):
    """A mutant that ignores ``reset_mask`` (``None``, a misspelt key) restarts every reference row — caught because
    env 0, not reset, must go on being scored after its prompt and its first token, by hand."""
    env = _batched(base_lm, kl_mode="reference")
    env.reset(options={"prompts": ["the food was", "the room was"]})
    ids = env.unwrapped.prompt_token_ids([0])[0]
    env.step(np.array([5, 6]))
    env.reset(options={"prompts": ["the food was", "the bed was"], "reset_mask": np.array([False, True])})
    rewards = env.step(np.array([17, 18]))[1]
    assert rewards[0] == pytest.approx(0.2 * _ref_logprobs(base_lm, ids + [5])[17].item(), abs=1e-5)


def test_frozen_envs_actions_are_clamped_before_the_reference_reads_them(base_lm):
    """A mutant that clamps frozen envs' (unchecked) actions wrongly (no bound, no lower bound, ``V + 1``) or
    live ones too (``V − 2``) — caught because with env 0 frozen, its actions ``V + 5`` and ``−3`` must not fail,
    and env 1's last-token action ``V − 1`` must be scored as itself, by hand."""
    env = _batched(base_lm, kl_mode="reference", autoreset_mode="disabled", max_new_tokens=6)
    env.reset(options={"prompts": ["the food was", "the room was"]})
    ids = env.unwrapped.prompt_token_ids([1])[0]
    env.step(np.array([0, 6]))  # EOS: env 0 ends and is frozen
    ids.append(6)
    for frozen_action in (V + 5, -3):
        rewards = env.step(np.array([frozen_action, V - 1]))[1]
        assert rewards[0] == 0.0
        assert rewards[1] == pytest.approx(0.2 * _ref_logprobs(base_lm, ids)[V - 1].item(), abs=1e-5)
        ids.append(V - 1)


def test_batched_kl_infos_keep_strings_as_objects_and_numbers_as_floats(base_lm):
    """A mutant that lets numpy pick the info arrays' dtypes (``'<U9'`` strings) or makes every one an object array
    — caught because ``kl_mode`` must be an object array (as Gymnasium keeps non-numeric infos) and ``kl_coef`` a
    float array."""
    env = _batched(base_lm, kl_mode="reference")
    env.reset(seed=0)
    infos = env.step(np.array([5, 6]))[4]
    assert infos["kl_mode"].dtype == object and infos["kl_mode"].tolist() == ["reference", "reference"]
    assert infos["kl_coef"].dtype == np.float64


def test_after_a_refused_episode_end_same_step_autoreset_scores_the_new_episode(base_lm):
    """A mutant that does not restart the refused envs' records with same-step autoreset (``!=``) — caught because
    the episode after the refusal must be scored after its own prompt, by hand."""
    env = _batched(_Forbidding(base_lm, [5]), kl_mode="reference", kl_timing="end", max_new_tokens=2)
    env.reset(seed=0)
    env.step(np.array([6, 7]))
    with pytest.raises(ValueError, match="the reference gives token 5 probability 0"):
        env.step(np.array([5, 8]))
    prompts = env.unwrapped.prompt_token_ids([0, 1])
    env.step(np.array([9, 10]))
    infos = env.step(np.array([11, 12]))[4]
    for i, tokens in enumerate(([9, 11], [10, 12])):
        expected = [0.2 * _ref_logprobs(base_lm, prompts[i] + tokens[:t])[tokens[t]].item() for t in range(2)]
        assert infos["reward_kl_tokens"][i].tolist() == pytest.approx(expected, abs=1e-5)


def test_reference_mode_reports_no_episode_kl(base_lm):
    """A mutant that reports an episode KL whenever an episode ends (``or``) — caught because reference mode cannot
    measure the KL: no ``episode_kl`` at the end."""
    env = _batched(base_lm, kl_mode="reference", max_new_tokens=1)
    env.reset(seed=0)
    infos = env.step(np.array([5, 6]))[4]
    assert "episode_kl" not in infos and "episode_kl" not in infos["final_info"]


def test_the_reference_runs_no_forward_for_envs_that_all_restart_or_all_freeze(base_lm):
    """A mutant that steps the reference although every env restarts (``<=``, ``or``), although every env is frozen
    (``bool(None)``), or prefills envs that froze (``or True``) — caught by the reference's forwards in such steps:
    one prefill when both envs restart, none when both freeze, one step when one of two freezes."""
    forwards = []
    hook = base_lm.register_forward_hook(lambda *args: forwards.append(1))
    try:
        same_step = _batched(base_lm, kl_mode="reference", max_new_tokens=1)
        same_step.reset(seed=0)
        forwards.clear()
        same_step.step(np.array([5, 6]))
        assert len(forwards) == 1  # the two new prompts' prefill, no step of the old ones
        disabled = _batched(base_lm, kl_mode="reference", max_new_tokens=2, autoreset_mode="disabled")
        disabled.reset(seed=0)
        forwards.clear()
        disabled.step(np.array([0, 6]))  # env 0 freezes (EOS), env 1 goes on
        assert len(forwards) == 1
        forwards.clear()
        disabled.step(np.array([5, 7]))  # env 1 reaches the cap: both frozen
        assert len(forwards) == 0
    finally:
        hook.remove()


def test_end_timing_rewards_are_the_float64_sums_of_the_per_token_terms(base_lm):
    """A mutant that sums an ended episode's KL terms in float32 (``dtype=None`` or dropped) — caught because each
    reward must be exactly the float64 sum of its ``reward_kl_tokens`` (the reward model scores 0)."""
    env = _batched(base_lm, kl_mode="reference", kl_timing="end", max_new_tokens=3)
    env.reset(seed=0)
    for step in range(3):
        rewards, _, _, infos = env.step(np.array([5 + step, 9 + step]))[1:]
    assert infos["reward_kl"].dtype == np.float64
    assert rewards.tolist() == [float(np.sum(infos["reward_kl_tokens"][i])) for i in range(2)]


def test_supplying_through_a_sync_vector_env_says_whether_any_env_took_them(base_lm):
    """A mutant that answers ``None`` or always ``True``, or asks a sub-env without KL shaping for its mode (``or``)
    — caught because a SyncVectorEnv of a policy-mode KL env and a plain env must take the rows (True), and one of
    reference-mode KL envs must not (False)."""
    mixed = gym.vector.SyncVectorEnv([lambda: _single(base_lm),
                                      lambda: gym.make("textenv/Sentiment-v1", reward_model=_zero, gold_reward=None,
                                                       max_new_tokens=4)])
    assert supply_policy_logprobs(mixed, torch.tensor([-1.0, -2.0])) is True
    reference = gym.vector.SyncVectorEnv([lambda: _single(base_lm, kl_mode="reference")] * 2)
    assert supply_policy_logprobs(reference, torch.tensor([-1.0, -2.0])) is False


def test_a_batched_end_timing_env_stepped_before_its_first_reset_raises_a_runtime_error(base_lm):
    """A mutant that starts the wrappers with ``_supplied = ""`` instead of ``None`` fails inside the wrapper with an
    AttributeError — caught because stepping before the first reset must be the RuntimeError that says what is
    missing."""
    env = _batched(base_lm, kl_timing="end")
    with pytest.raises(RuntimeError, match="needs the acting policy's log-probs"):
        env.step(np.array([5, 6]))
