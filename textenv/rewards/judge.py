"""LLM-as-judge (RLAIF): a local causal LM scores completions by the log-probabilities of answer strings.

No text is generated: the judge reads a prompt template filled with the completion(s) and compares
``log p(answer | filled template)`` across the answer options (each option may span several tokens; its
log-probability is the sum over its tokens).

* :class:`PointwiseJudge` -- a rubric ("constitution") template with ``{prompt}`` and ``{completion}``;
  options map answers to values (``{" Yes": 1, " No": -1}``) and the score is the expected value under the
  judge's distribution restricted to the options (G-Eval's probability-weighted score).
* :class:`PairwiseJudge` -- a template with ``{prompt}``, ``{a}`` and ``{b}``; the judge's probability that
  the first response is better is averaged over both orders, which cancels position bias
  (``P(a ≻ b) = ½·[P(first | a, b) + 1 − P(first | b, a)]``). As a reward it compares each completion with a
  reference completion and returns ``2·P(completion ≻ reference) − 1``.

Any causal LM works, by path or as a loaded model. How well a judge agrees with the truth depends on the
LM: a small LM trained only on reviews (the built-in one) cannot follow an English instruction, which is why
:data:`REVIEW_CONTINUATION` phrases the rubric as a continuation in the reviews' own language.

**Instruction-tuned judges (chat).** With ``chat=None`` (default) a judge whose tokenizer has a chat template
renders the filled template as a user turn of it (the template's own system prompt, or ``system=``), then the
assistant header, then ``prefill`` -- the words the judge's answer is made to start with, so that the options
are the next token (``"The reviewer's opinion is"`` → ``" positive"`` / ``" negative"``)::

    <|im_start|>system\n…<|im_end|>\n<|im_start|>user\n{filled template}<|im_end|>\n<|im_start|>assistant\n{prefill}

``chat=False`` reads the filled template (+ ``prefill``) as plain text; ``chat=True`` requires a template.
:data:`SENTIMENT_TEMPLATE` and its relatives are the chat rubrics measured with SmolLM2-135M-Instruct in
``benchmarks/rlaif_judge.py``.

**Speed.** When every option is one token (the usual case) the judge runs one forward per context and reads the
next-token distribution at its end (a multi-token option needs a forward per option). The token prefix that all
contexts of a call share (system prompt, instruction) is run once per batch and its KV cache reused, and
contexts are batched by length; the scores are those of separate unbatched forwards (tested).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from textenv.lm import completion_batch, pad_batch, sequence_logprobs

RUBRIC_TEMPLATE = (
    "Read the response and judge it by this rule: a good response is positive, fluent and on topic.\n\n"
    "Prompt: {prompt}\nResponse: {prompt}{completion}\n\nDoes the response follow the rule? Answer:"
)
"""Generic pointwise rubric for instruction-following judges; options ``{" Yes": 1, " No": -1}``."""

REVIEW_CONTINUATION = "{prompt}{completion} i would"
"""Rubric phrased as a continuation, for an LM that only knows reviews (the built-in one): whether the review
would go on ``" highly"`` (recommend) or ``" not"`` (recommend); use with :data:`REVIEW_OPTIONS`."""

REVIEW_OPTIONS = {" highly": 1.0, " not": -1.0}
"""Options of :data:`REVIEW_CONTINUATION` (both continuations occur hundreds of times in the built-in corpus)."""

PAIRWISE_TEMPLATE = (
    "Which response continues the prompt better: more positive, fluent and on topic?\n\n"
    "Prompt: {prompt}\nResponse A: {prompt}{a}\nResponse B: {prompt}{b}\n\nThe better response is"
)
"""Generic pairwise template; options ``(" A", " B")``."""

SENTIMENT_TEMPLATE = ("Here is a customer review:\n\n{prompt}{completion}\n\n"
                      "Is the reviewer's opinion positive or negative?")
"""Chat rubric (a user turn) for the built-in world's sentiment; with :data:`SENTIMENT_PREFILL` and
:data:`SENTIMENT_OPTIONS`."""

SENTIMENT_PREFILL = "The reviewer's opinion is"
"""How the judge's answer to :data:`SENTIMENT_TEMPLATE` starts, so that the next token is the verdict."""

SENTIMENT_OPTIONS = {" positive": 1.0, " negative": -1.0}
"""Options after :data:`SENTIMENT_PREFILL` (one SmolLM2 token each)."""

SENTIMENT_CLASSIFY_TEMPLATE = ("Classify the sentiment of this review as positive or negative.\n\n"
                               "Review: {prompt}{completion}")
"""Chat rubric as a classification instruction; with :data:`SENTIMENT_CLASSIFY_PREFILL` and
:data:`SENTIMENT_OPTIONS`."""

SENTIMENT_CLASSIFY_PREFILL = "Sentiment:"
"""How the judge's answer to :data:`SENTIMENT_CLASSIFY_TEMPLATE` starts."""

SENTIMENT_HAPPY_TEMPLATE = "Here is a customer review:\n\n{prompt}{completion}\n\nWas the customer happy or unhappy?"
"""Chat rubric asking about the customer; with :data:`SENTIMENT_HAPPY_PREFILL` and :data:`HAPPY_OPTIONS`."""

SENTIMENT_HAPPY_PREFILL = "The customer was"
"""How the judge's answer to :data:`SENTIMENT_HAPPY_TEMPLATE` starts."""

HAPPY_OPTIONS = {" happy": 1.0, " unhappy": -1.0}
"""Options after :data:`SENTIMENT_HAPPY_PREFILL` (one SmolLM2 token each)."""

SENTIMENT_RATING_TEMPLATE = ("Here is a customer review:\n\n{prompt}{completion}\n\nRate how positive the review is, "
                             "from 1 (very negative) to 5 (very positive). Reply with the number only.")
"""Chat rubric as a 1-5 rating (G-Eval's probability-weighted score); options :data:`RATING_OPTIONS`."""

RATING_OPTIONS = {"1": -1.0, "2": -0.5, "3": 0.0, "4": 0.5, "5": 1.0}
"""The five ratings mapped to [-1, 1]."""

PAIRWISE_SENTIMENT_TEMPLATE = ("Here are two customer reviews.\n\nReview A: {prompt}{a}\n\nReview B: {prompt}{b}\n\n"
                               "Which review is more positive, A or B?")
"""Chat pairwise rubric; with :data:`PAIRWISE_SENTIMENT_PREFILL` and options ``(" A", " B")``."""

PAIRWISE_SENTIMENT_PREFILL = "The more positive review is Review"
"""How the judge's answer to :data:`PAIRWISE_SENTIMENT_TEMPLATE` starts."""

_MIN_SHARED_PREFIX = 8
"""A shared token prefix at least this long is run once per batch and its KV cache reused."""


class _JudgeLM:
    """A causal LM and its tokenizer, scoring ``log p(continuation | context)`` for batches of pairs."""

    def __init__(self, model, tokenizer=None, device: str | torch.device = "cpu", batch_size: int = 32,
                 chat: bool | None = None, system: str | None = None, prefill: str = ""):
        from textenv.lm import context_length, load_causal_lm, load_tokenizer

        if isinstance(model, (str, os.PathLike)):
            self.name = str(model)
            tokenizer = tokenizer or load_tokenizer(model)
            model = load_causal_lm(model, device)
        else:
            self.name = type(model).__name__
            if tokenizer is None:
                raise ValueError("a judge given a loaded model also needs tokenizer=")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if chat is not None and not isinstance(chat, (bool, np.bool_)):
            raise TypeError(f"chat={chat!r} must be True, False or None (None: the tokenizer's chat template if any)")
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat and not has_template:
            raise ValueError(f"chat=True, but the tokenizer of {self.name!r} has no chat template; pass chat=False (or "
                             f"None) to read the template as plain text")
        if system is not None and not (chat or (chat is None and has_template)):
            raise ValueError("system= is a chat system prompt; this judge reads plain text (chat=False or no template)")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.context = context_length(model) or 1024
        self.chat = has_template if chat is None else bool(chat)
        self.system, self.prefill = system, prefill

    def render(self, text: str) -> str:
        """The context the judge reads for a filled template: the text itself, or a user turn of the chat
        template (after ``system``, if given) and the assistant header; then ``prefill``."""
        if not self.chat:
            return text + self.prefill
        messages = [{"role": "system", "content": self.system}] if self.system is not None else []
        messages.append({"role": "user", "content": text})
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return rendered + self.prefill

    def _option_ids(self, options: Sequence[str]) -> list[list[int]]:
        ids = self.tokenizer(list(options), add_special_tokens=False)["input_ids"]
        for option, tokens in zip(options, ids):
            if not tokens:
                raise ValueError(f"judge answer option {option!r} encodes to no tokens; options must be non-empty")
        return ids

    def logprobs(self, contexts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        """``log p(continuation_i | context_i)`` summed over the continuation's tokens, shape (N,)."""
        ctx_ids = self.tokenizer(list(contexts), add_special_tokens=False)["input_ids"]
        cont_ids = self.tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
        rows = []
        for c, a in zip(ctx_ids, cont_ids):
            if not a:
                raise ValueError("a judge answer option is empty; options must be non-empty strings")
            rows.append((c[-(self.context - len(a)) :], a))  # keep the end of a context too long for the model
        out = np.empty(len(rows))
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                batch = completion_batch([c for c, _ in chunk], [a for _, a in chunk], self.tokenizer.pad_token_id)
                batch = {k: v.to(self.device) for k, v in batch.items()}
                out[start : start + len(chunk)] = sequence_logprobs(self.model, batch).cpu().numpy()  # (N,)
        return out

    def next_token_logprobs(self, contexts: Sequence[str], tokens: Sequence[int]) -> np.ndarray:
        """``log p(token_j | context_i)`` for every context and each of ``tokens``, shape (N, len(tokens)).

        One forward per context, batched by length; the prefix shared by all contexts is run once per batch."""
        if not contexts:
            return np.empty((0, len(tokens)))
        rows = [ids[-self.context :] for ids in self.tokenizer(list(contexts), add_special_tokens=False)["input_ids"]]
        if any(not ids for ids in rows):
            raise ValueError("a judge context encodes to no tokens")
        shared = _shared_prefix(rows)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths together: little padding
        out = np.empty((len(rows), len(tokens)))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                logprobs = self._last_logprobs([rows[i] for i in chunk], shared)  # (B, V)
                out[chunk] = logprobs[:, list(tokens)].cpu().numpy()
        return out

    def _last_logprobs(self, rows: list[list[int]], shared: int) -> torch.Tensor:
        """Next-token log-probs after each row, (B, V): the first ``shared`` tokens (common to all rows) run once
        with batch 1 and their KV cache repeated; the rest left-padded so every row ends in the last column."""
        B = len(rows)
        cache = None
        if shared < _MIN_SHARED_PREFIX:
            shared = 0
        else:
            prefix = torch.tensor([rows[0][:shared]], device=self.device)  # (1, S)
            cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
            cache.batch_repeat_interleave(B)
        ids, mask = pad_batch([r[shared:] for r in rows], self.tokenizer.pad_token_id, "left", self.device)  # (B, T)
        position_ids = shared + (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        attention = torch.cat([mask.new_ones((B, shared)), mask], dim=1)  # (B, S + T)
        out = self.model(input_ids=ids, attention_mask=attention, position_ids=position_ids, past_key_values=cache,
                         use_cache=cache is not None, logits_to_keep=1)
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V)

    def option_probs(self, contexts: Sequence[str], options: Sequence[str]) -> np.ndarray:
        """Distribution over ``options`` after each context, renormalised over the options, shape (N, n_options)."""
        n, k = len(contexts), len(options)
        if n == 0:  # an empty batch (a tokenizer refuses an empty list)
            return np.empty((0, k))
        option_ids = self._option_ids(options)
        if all(len(ids) == 1 for ids in option_ids):  # one forward per context
            logps = self.next_token_logprobs(contexts, [ids[0] for ids in option_ids])  # (N, k)
        else:
            logps = self.logprobs([c for c in contexts for _ in range(k)], [o for _ in range(n) for o in options])
            logps = logps.reshape(n, k)
        return torch.softmax(torch.from_numpy(logps), dim=1).numpy()


def _shared_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all rows share, leaving every row at least one token of its own.

    >>> _shared_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]])
    2
    >>> _shared_prefix([[1, 2], [1, 2]])
    1
    """
    first, limit = rows[0], min(len(r) for r in rows) - 1
    n = 0
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return n


def _check_template(template: str, fields: Sequence[str]) -> None:
    missing = [f for f in fields if "{" + f + "}" not in template]
    if missing:
        raise ValueError(f"template must contain {', '.join('{' + f + '}' for f in missing)}; got {template!r}")


class PointwiseJudge:
    """Score each completion by a rubric template; see the module docstring.

    Args:
        model: path of a causal LM, or a loaded one (then pass ``tokenizer=``).
        template: a string with ``{prompt}`` and ``{completion}``.
        options: ``{answer string: value}``; the score is ``Σ p(answer) · value`` over the options.
        chat: render the filled template as a user turn of the tokenizer's chat template (``None``: when it has
            one); see the module docstring.
        system: a chat system prompt (``None``: the chat template's own default, if any).
        prefill: text the judge's answer starts with, read before the options.
    """

    def __init__(self, model, template: str = RUBRIC_TEMPLATE, options: Mapping[str, float] | None = None, tokenizer=None,
                 device: str | torch.device = "cpu", batch_size: int = 32, chat: bool | None = None,
                 system: str | None = None, prefill: str = ""):
        _check_template(template, ("prompt", "completion"))
        options = dict(options or {" Yes": 1.0, " No": -1.0})
        if len(options) < 2:
            raise ValueError(f"options={options!r} needs at least two answers to compare")
        self.template, self.options = template, options
        self.values = np.array(list(options.values()), dtype=float)
        self.lm = _JudgeLM(model, tokenizer, device, batch_size, chat, system, prefill)
        self.__name__ = f"PointwiseJudge({self.lm.name})"

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts and {len(completions)} completions; they must pair up")
        contexts = [self.lm.render(self.template.format(prompt=p, completion=c))
                    for p, c in zip(prompts, completions)]
        return (self.lm.option_probs(contexts, list(self.options)) @ self.values).tolist()


class PairwiseJudge:
    """Compare two completions, in both orders; see the module docstring.

    Args:
        model: path of a causal LM, or a loaded one (then pass ``tokenizer=``).
        template: a string with ``{prompt}``, ``{a}`` and ``{b}``.
        options: the two answers naming the first and the second response.
        reference: for use as a reward: ``{prompt: reference completion}`` or a function
            ``prompts -> reference completions``; each completion is scored ``2·P(completion ≻ reference) − 1``.
        chat, system, prefill: as for :class:`PointwiseJudge`.
    """

    def __init__(self, model, template: str = PAIRWISE_TEMPLATE, options: tuple[str, str] = (" A", " B"),
                 reference: Mapping[str, str] | Callable[[list[str]], list[str]] | None = None, tokenizer=None,
                 device: str | torch.device = "cpu", batch_size: int = 32, chat: bool | None = None,
                 system: str | None = None, prefill: str = ""):
        _check_template(template, ("prompt", "a", "b"))
        if isinstance(options, str) or len(options) != 2 or options[0] == options[1]:
            raise ValueError(f"options={options!r} must be two different answers (first, second)")
        self.template, self.options, self.reference = template, tuple(options), reference
        self.lm = _JudgeLM(model, tokenizer, device, batch_size, chat, system, prefill)
        self.__name__ = f"PairwiseJudge({self.lm.name})"

    def first_probs(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """The judge's P(first response is better) with ``a`` shown first, shape (N,) (no order averaging)."""
        contexts = [self.lm.render(self.template.format(prompt=p, a=x, b=y)) for p, x, y in zip(prompts, a, b)]
        return self.lm.option_probs(contexts, list(self.options))[:, 0]

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """P(a ≻ b), averaged over both presentation orders, shape (N,)."""
        if not len(prompts) == len(a) == len(b):
            raise ValueError(f"prompts, a and b must have the same length; got {len(prompts)}, {len(a)}, {len(b)}")
        return 0.5 * (self.first_probs(prompts, a, b) + 1.0 - self.first_probs(prompts, b, a))

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        if self.reference is None:
            raise ValueError("a PairwiseJudge used as a reward needs reference= (a completion per prompt to compare with)")
        if callable(self.reference):
            references = list(self.reference(list(prompts)))
        else:
            missing = [p for p in prompts if p not in self.reference]
            if missing:
                raise KeyError(f"PairwiseJudge has no reference completion for prompt {missing[0]!r}")
            references = [self.reference[p] for p in prompts]
        return (2.0 * self.compare(prompts, completions, references) - 1.0).tolist()
