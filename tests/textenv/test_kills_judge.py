"""Tests written to kill the mutants of ``textenv/rewards/judge.py`` that survived ``benchmarks/mutation.py`` (see
benchmarks/results/mutation.md).

Each test names, in its docstring, the mutation it guards against and why the test catches it; expected values are
worked out by hand in the comments or come from an independent computation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textenv.rewards import (
    PairwiseJudge,
    PointwiseJudge,
)
from textenv.rewards.judge import _shared_prefix

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


