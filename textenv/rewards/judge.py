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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from textenv.lm import completion_batch, sequence_logprobs

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


class _JudgeLM:
    """A causal LM and its tokenizer, scoring ``log p(continuation | context)`` for batches of pairs."""

    def __init__(self, model, tokenizer=None, device: str | torch.device = "cpu", batch_size: int = 32):
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
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.context = context_length(model) or 1024

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

    def option_probs(self, contexts: Sequence[str], options: Sequence[str]) -> np.ndarray:
        """Distribution over ``options`` after each context, renormalised over the options, shape (N, n_options)."""
        n, k = len(contexts), len(options)
        flat = self.logprobs([c for c in contexts for _ in range(k)], [o for _ in range(n) for o in options])
        return torch.softmax(torch.from_numpy(flat.reshape(n, k)), dim=1).numpy()


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
    """

    def __init__(self, model, template: str = RUBRIC_TEMPLATE, options: Mapping[str, float] | None = None, tokenizer=None,
                 device: str | torch.device = "cpu", batch_size: int = 32):
        _check_template(template, ("prompt", "completion"))
        options = dict(options or {" Yes": 1.0, " No": -1.0})
        if len(options) < 2:
            raise ValueError(f"options={options!r} needs at least two answers to compare")
        self.template, self.options = template, options
        self.values = np.array(list(options.values()), dtype=float)
        self.lm = _JudgeLM(model, tokenizer, device, batch_size)
        self.__name__ = f"PointwiseJudge({self.lm.name})"

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts and {len(completions)} completions; they must pair up")
        contexts = [self.template.format(prompt=p, completion=c) for p, c in zip(prompts, completions)]
        return (self.lm.option_probs(contexts, list(self.options)) @ self.values).tolist()


class PairwiseJudge:
    """Compare two completions, in both orders; see the module docstring.

    Args:
        model: path of a causal LM, or a loaded one (then pass ``tokenizer=``).
        template: a string with ``{prompt}``, ``{a}`` and ``{b}``.
        options: the two answers naming the first and the second response.
        reference: for use as a reward: ``{prompt: reference completion}`` or a function
            ``prompts -> reference completions``; each completion is scored ``2·P(completion ≻ reference) − 1``.
    """

    def __init__(self, model, template: str = PAIRWISE_TEMPLATE, options: tuple[str, str] = (" A", " B"),
                 reference: Mapping[str, str] | Callable[[list[str]], list[str]] | None = None, tokenizer=None,
                 device: str | torch.device = "cpu", batch_size: int = 32):
        _check_template(template, ("prompt", "a", "b"))
        if isinstance(options, str) or len(options) != 2 or options[0] == options[1]:
            raise ValueError(f"options={options!r} must be two different answers (first, second)")
        self.template, self.options, self.reference = template, tuple(options), reference
        self.lm = _JudgeLM(model, tokenizer, device, batch_size)
        self.__name__ = f"PairwiseJudge({self.lm.name})"

    def first_probs(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """The judge's P(first response is better) with ``a`` shown first, shape (N,) (no order averaging)."""
        contexts = [self.template.format(prompt=p, a=x, b=y) for p, x, y in zip(prompts, a, b)]
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
