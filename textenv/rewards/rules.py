"""Rule and verifiable rewards, and length-bias mitigation for any reward.

Each is a small object following the reward protocol ``reward(prompts, completions) -> list[float]`` (the length
wrappers return named terms, so the env reports each in ``info``). They compose with :class:`CompositeReward`.

| reward | score of a completion |
|---|---|
| :class:`KeywordReward` | ``weight`` × number of keyword hits (whole words), capped at ``max_hits`` |
| :class:`RegexReward` | ``reward`` if the pattern is found (``mode="search"``) or matches the whole completion (``mode="fullmatch"``: a format check), else ``otherwise`` |
| :class:`LengthTarget` | ``-|length - target| / target`` |
| :class:`ExactMatch` | 1 if the (extracted, normalised) answer equals the prompt's reference answer, else 0 |
| :class:`LengthPenalty` (wrapper) | terms ``score`` (the wrapped reward) and ``length_penalty = -coef·max(0, length - free)`` |
| :class:`LengthNormalized` (wrapper) | the wrapped reward divided by the length (per-word or per-token reward) |

Lengths are counted in ``"words"`` (whitespace-separated), ``"chars"``, or ``"tokens"`` (give a tokenizer or
the path of one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from textenv.rewards.protocol import RewardFn

_UNITS = ("words", "chars", "tokens")


def _check_unit(unit: str, tokenizer) -> None:
    if unit not in _UNITS:
        raise ValueError(f"unit={unit!r} is not one of {_UNITS}")
    if unit == "tokens" and tokenizer is None:
        raise ValueError('unit="tokens" needs tokenizer= (a tokenizer or the path of one)')


def _lengths(completions: Sequence[str], unit: str, tokenizer) -> list[int]:
    if unit == "words":
        return [len(c.split()) for c in completions]
    if unit == "chars":
        return [len(c) for c in completions]
    if isinstance(tokenizer, str) or hasattr(tokenizer, "__fspath__"):
        from textenv.lm import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    return [len(ids) for ids in tokenizer(list(completions), add_special_tokens=False)["input_ids"]]


def _check_pairs(prompts: Sequence[str], completions: Sequence[str]) -> None:
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts and {len(completions)} completions; they must pair up")


@dataclass
class KeywordReward:
    """``weight`` per whole-word occurrence of any keyword in the completion, at most ``max_hits`` counted.

    >>> KeywordReward(["great", "clean"])(["the room was"] * 3, [" great and clean .", " dirty .", " greatly ."])
    [2.0, 0.0, 0.0]
    """

    keywords: Sequence[str]
    weight: float = 1.0
    max_hits: int | None = None
    case_sensitive: bool = False

    def __post_init__(self):
        if isinstance(self.keywords, str) or not self.keywords or not all(isinstance(k, str) and k for k in self.keywords):
            raise ValueError(f"keywords={self.keywords!r} must be a non-empty list of non-empty strings")
        if self.max_hits is not None and self.max_hits < 1:
            raise ValueError(f"max_hits={self.max_hits} must be >= 1 or None")
        words = "|".join(re.escape(k) for k in sorted(self.keywords, key=len, reverse=True))
        self._pattern = re.compile(rf"(?<!\w)(?:{words})(?!\w)", 0 if self.case_sensitive else re.IGNORECASE)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_pairs(prompts, completions)
        hits = [len(self._pattern.findall(c)) for c in completions]
        cap = self.max_hits
        return [self.weight * float(h if cap is None else min(h, cap)) for h in hits]


@dataclass
class RegexReward:
    """``reward`` where ``pattern`` is found in the completion (``mode="fullmatch"``: matches all of it, after
    stripping surrounding whitespace, which makes it a format check), else ``otherwise``.

    >>> ends_with_full_stop = RegexReward(r".*\\.", mode="fullmatch")
    >>> ends_with_full_stop(["p", "p"], [" it was fine .", " it was"])
    [1.0, 0.0]
    """

    pattern: str
    reward: float = 1.0
    otherwise: float = 0.0
    mode: str = "search"
    flags: int = 0

    def __post_init__(self):
        if self.mode not in ("search", "fullmatch"):
            raise ValueError(f"mode={self.mode!r} must be 'search' or 'fullmatch'")
        try:
            self._regex = re.compile(self.pattern, self.flags)
        except re.error as error:
            raise ValueError(f"pattern={self.pattern!r} is not a valid regular expression: {error}") from error

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_pairs(prompts, completions)
        match = self._regex.search if self.mode == "search" else self._regex.fullmatch
        return [self.reward if match(c.strip() if self.mode == "fullmatch" else c) else self.otherwise for c in completions]


@dataclass
class LengthTarget:
    """``-|length - target| / target``: 0 at the target length, -1 at twice (or zero times) the target.

    >>> LengthTarget(4)(["p"] * 3, [" a b c d", " a b", " a b c d e f g h"])
    [0.0, -0.5, -1.0]
    """

    target: int
    unit: str = "words"
    tokenizer: object = None

    def __post_init__(self):
        if not isinstance(self.target, int) or isinstance(self.target, bool) or self.target < 1:
            raise ValueError(f"target={self.target!r} must be an integer >= 1")
        _check_unit(self.unit, self.tokenizer)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_pairs(prompts, completions)
        return [0.0 - abs(n - self.target) / self.target for n in _lengths(completions, self.unit, self.tokenizer)]


def _normalize_answer(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".!").split())


@dataclass
class ExactMatch:
    """A verifiable reward: 1.0 when the completion's answer equals the prompt's reference answer, else 0.0.

    ``answers`` maps each prompt to its reference (or is a function of the prompt). ``extract`` is a regex
    whose first group is the answer (default: the whole completion). Both sides are lowercased, stripped of
    surrounding whitespace and a final ``.``/``!``, and have runs of spaces collapsed.

    >>> reward = ExactMatch({"2 + 3 =": "5", "4 + 4 =": "8"}, extract=r"(-?\\d+)")
    >>> reward(["2 + 3 =", "4 + 4 =", "2 + 3 ="], [" 5 .", " 9", " five"])
    [1.0, 0.0, 0.0]
    """

    answers: Mapping[str, str] | Callable[[str], str]
    extract: str | None = None

    def __post_init__(self):
        try:
            self._extract = re.compile(self.extract) if self.extract else None
        except re.error as error:
            raise ValueError(f"extract={self.extract!r} is not a valid regular expression: {error}") from error
        if self._extract is not None and self._extract.groups < 1:
            raise ValueError(f"extract={self.extract!r} needs one capturing group, the answer")

    def _reference(self, prompt: str) -> str:
        if callable(self.answers):
            return self.answers(prompt)
        try:
            return self.answers[prompt]
        except KeyError:
            raise KeyError(f"ExactMatch has no reference answer for prompt {prompt!r} ({len(self.answers)} known)") from None

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_pairs(prompts, completions)
        scores = []
        for prompt, completion in zip(prompts, completions):
            if self._extract is not None:
                found = self._extract.search(completion)
                completion = found.group(1) if found else None
            ok = completion is not None and _normalize_answer(completion) == _normalize_answer(self._reference(prompt))
            scores.append(float(ok))
        return scores


@dataclass
class LengthPenalty:
    """Length-penalised reward: terms ``score`` (the wrapped reward) and ``length_penalty = -coef·max(0, L - free)``.

    Counters a reward model's length bias (longer completions scoring higher for their length alone).

    >>> per_word = lambda p, c: [float(len(x.split())) for x in c]   # a reward that loves length
    >>> LengthPenalty(per_word, coef=1.5, free=2)(["p", "p"], [" good .", " good , fine , ok ."])
    {'score': [2.0, 6.0], 'length_penalty': [-0.0, -6.0]}
    """

    reward: RewardFn
    coef: float
    free: int = 0
    unit: str = "words"
    tokenizer: object = None

    def __post_init__(self):
        if not callable(self.reward):
            raise TypeError(f"reward must be callable (prompts, completions) -> scores; got {type(self.reward).__name__}")
        if self.coef < 0 or self.free < 0:
            raise ValueError(f"coef={self.coef} and free={self.free} must be >= 0")
        _check_unit(self.unit, self.tokenizer)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> dict[str, list[float]]:
        _check_pairs(prompts, completions)
        base = _as_list(self.reward(prompts, completions))
        lengths = _lengths(completions, self.unit, self.tokenizer)
        return {"score": base, "length_penalty": [-self.coef * max(0, n - self.free) for n in lengths]}


@dataclass
class LengthNormalized:
    """The wrapped reward divided by the completion's length (at least 1): reward per word, char or token.

    >>> hits = KeywordReward(["great"])
    >>> LengthNormalized(hits)(["p", "p"], [" great .", " great food , great view , awful bed , awful bath ."])
    [0.5, 0.1666...]
    """

    reward: RewardFn
    unit: str = "words"
    tokenizer: object = None

    def __post_init__(self):
        if not callable(self.reward):
            raise TypeError(f"reward must be callable (prompts, completions) -> scores; got {type(self.reward).__name__}")
        _check_unit(self.unit, self.tokenizer)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_pairs(prompts, completions)
        base = _as_list(self.reward(prompts, completions))
        return [s / max(1, n) for s, n in zip(base, _lengths(completions, self.unit, self.tokenizer))]


def _as_list(scores) -> list[float]:
    """One float per completion from a plain reward (a mapping of terms is summed)."""
    if isinstance(scores, Mapping):
        columns = [list(map(float, v)) for v in scores.values()]
        return [sum(values) for values in zip(*columns)]
    if hasattr(scores, "tolist"):
        scores = scores.tolist()
    return [float(s) for s in scores]


__all__ = ["ExactMatch", "KeywordReward", "LengthNormalized", "LengthPenalty", "LengthTarget", "RegexReward"]
