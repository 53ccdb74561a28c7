"""Tests written to kill the mutants of ``textenv/rewards/protocol.py``, ``composite.py`` and ``rules.py`` that survived ``benchmarks/mutation.py`` (see
benchmarks/results/mutation.md).

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


