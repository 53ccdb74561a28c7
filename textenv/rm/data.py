"""Preference data: the JSONL format, its validation, K-wise expansion, and generation from a gold reward.

## Format (one JSON object per line)

* a pair: ``{"prompt": str, "chosen": str, "rejected": str}``
* a K-wise ranking: ``{"prompt": str, "completions": [str, ...], "ranking": [int, ...]}`` where ``ranking``
  lists indices into ``completions``, best first (a permutation of ``0..K-1``). It expands into all
  ``C(K, 2)`` ordered pairs (better, worse), InstructGPT's scheme, and is trained as one group so that each
  completion is scored once and each prompt weighs the same.

Both take an optional ``"margin"`` (float, default 0; the Bradley-Terry loss becomes
``-log σ(r_chosen - r_rejected - margin)``, Llama-2's margin loss) and an optional ``"gold"`` list (the true
score of each completion, written by :func:`generate_preferences`; used only for evaluation). Other fields are
ignored. Completions are continuations: the scored text is ``prompt + completion``, exactly concatenated.

>>> ranking_pairs([2, 0, 1])              # completion 2 best, then 0, then 1
[(2, 0), (2, 1), (0, 1)]
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from textenv.checkpoint import atomic_write
from textenv.jsonl import read_jsonl


@dataclass(frozen=True)
class PreferenceRecord:
    """One line of a preference file: a prompt, its completions, and the ordered pairs (winner, loser)."""

    prompt: str
    completions: tuple[str, ...]
    pairs: tuple[tuple[int, int], ...]
    margin: float = 0.0
    gold: tuple[float, ...] | None = None

    @property
    def k(self) -> int:
        return len(self.completions)

    def to_json(self) -> dict:
        if self.k == 2 and len(self.pairs) == 1:
            (w, l), = self.pairs
            out: dict = {"prompt": self.prompt, "chosen": self.completions[w], "rejected": self.completions[l]}
            gold = None if self.gold is None else [self.gold[w], self.gold[l]]
        else:
            out = {"prompt": self.prompt, "completions": list(self.completions), "ranking": _ranking_of(self.pairs, self.k)}
            gold = None if self.gold is None else list(self.gold)
        if self.margin:
            out["margin"] = self.margin
        if gold is not None:
            out["gold"] = gold
        return out


def ranking_pairs(ranking: Sequence[int]) -> list[tuple[int, int]]:
    """All ``C(K, 2)`` ordered pairs ``(better, worse)`` of a ranking given best first."""
    return [(ranking[i], ranking[j]) for i, j in combinations(range(len(ranking)), 2)]


def _ranking_of(pairs: Sequence[tuple[int, int]], k: int) -> list[int]:
    wins = [0] * k
    for w, _ in pairs:
        wins[w] += 1
    return sorted(range(k), key=lambda i: -wins[i])


def parse_record(obj, where: str = "record") -> PreferenceRecord:
    """Validate one decoded JSON object; errors name ``where`` (e.g. ``file.jsonl:12``) and the problem."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: \"prompt\" must be a non-empty string, got {prompt!r}")
    margin = obj.get("margin", 0.0)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
        raise ValueError(f"{where}: \"margin\" must be a finite number, got {margin!r}")
    if "chosen" in obj or "rejected" in obj:
        chosen, rejected = obj.get("chosen"), obj.get("rejected")
        for key, value in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(value, str):
                raise ValueError(f"{where}: \"{key}\" must be a string, got {value!r}")
        if chosen == rejected:
            raise ValueError(f"{where}: chosen == rejected ({chosen!r}); a preference needs two different completions")
        completions, pairs = (chosen, rejected), ((0, 1),)
    elif "completions" in obj:
        completions, ranking = obj.get("completions"), obj.get("ranking")
        if not isinstance(completions, list) or len(completions) < 2 or not all(isinstance(c, str) for c in completions):
            raise ValueError(f"{where}: \"completions\" must be a list of at least 2 strings, got {completions!r}")
        if len(set(completions)) != len(completions):
            duplicate = next(c for c in completions if completions.count(c) > 1)
            raise ValueError(f"{where}: completion {duplicate!r} appears twice; ranked completions must differ")
        if not isinstance(ranking, list) or sorted(ranking) != list(range(len(completions))):
            raise ValueError(
                f"{where}: \"ranking\" must be a permutation of 0..{len(completions) - 1} (indices of completions, best "
                f"first), got {ranking!r}"
            )
        completions, pairs = tuple(completions), tuple(ranking_pairs(ranking))
    else:
        raise ValueError(f"{where}: expected \"chosen\"/\"rejected\" or \"completions\"/\"ranking\"; got keys {sorted(obj)}")
    gold = obj.get("gold")
    if gold is not None:
        if not isinstance(gold, list) or len(gold) != len(completions):
            raise ValueError(f"{where}: \"gold\" must list one score per completion, got {gold!r}")
        gold = tuple(float(g) for g in gold)  # in the order of completions ((chosen, rejected) for a pair)
    return PreferenceRecord(prompt, tuple(completions), pairs, float(margin), gold)


def load_preferences(path: str | os.PathLike) -> list[PreferenceRecord]:
    """Read and validate a preference JSONL file (blank lines are skipped; errors name ``file:line``)."""
    records = [parse_record(obj, where) for where, obj in read_jsonl(path, "preference file")]
    if not records:
        raise ValueError(f"preference file {str(path)!r} holds no records; expected JSON lines of pairs or rankings")
    return records


def write_preferences(path: str | os.PathLike, records: Iterable[PreferenceRecord]) -> Path:
    """Write records as JSONL atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        for record in records:
            f.write(json.dumps(record.to_json()) + "\n")
    return path


def expand_pairs(records: Iterable[PreferenceRecord]) -> list[tuple[str, str, str, float]]:
    """Every record as ``(prompt, chosen, rejected, margin)`` pairs: C(K, 2) per ranking.

    >>> r = parse_record({"prompt": "p", "completions": ["x", "y", "z"], "ranking": [1, 2, 0], "margin": 0.5})
    >>> expand_pairs([r])
    [('p', 'y', 'z', 0.5), ('p', 'y', 'x', 0.5), ('p', 'z', 'x', 0.5)]
    """
    return [(r.prompt, r.completions[w], r.completions[l], r.margin) for r in records for w, l in r.pairs]


# ---------------------------------------------------------------------------------------------- generation


@dataclass
class LabelStats:
    """How the noisy labels relate to gold, over all expanded pairs."""

    pairs: int
    """Number of labelled pairs."""
    ties: float
    """Share of pairs whose two completions have the same gold score (their label is a coin flip)."""
    agreement: float
    """Share of the non-tied pairs whose label agrees with gold."""
    bayes_accuracy: float
    """Expected accuracy of the best possible predictor (gold order) on these labels: what label noise allows."""


def bradley_terry_rank(gold: np.ndarray, temperature: float, rng: np.random.Generator) -> list[int]:
    """A ranking (best first) drawn from Plackett-Luce with utilities ``gold / temperature``.

    Sorting Gumbel-perturbed utilities draws from Plackett-Luce, whose pairwise marginals are exactly
    Bradley-Terry: ``P(i above j) = σ((g_i - g_j) / temperature)``. ``temperature=0`` ranks by gold, ties at random.
    """
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0")
    noise = rng.gumbel(size=len(gold))
    keys = gold / temperature + noise if temperature > 0 else gold + 1e-9 * noise
    return np.argsort(-keys, kind="stable").tolist()


def label_stats(records: Sequence[PreferenceRecord], temperature: float) -> LabelStats:
    """Agreement of the records' labels with their ``gold`` scores, and the accuracy ceiling the noise allows."""
    diffs = np.array([r.gold[w] - r.gold[l] for r in records if r.gold is not None for w, l in r.pairs])
    if diffs.size == 0:
        raise ValueError("label_stats needs records with \"gold\" scores")
    tied = np.isclose(diffs, 0.0)
    p = 1.0 / (1.0 + np.exp(-diffs / temperature)) if temperature > 0 else np.where(tied, 0.5, 1.0)
    return LabelStats(
        pairs=int(diffs.size),
        ties=float(tied.mean()),
        agreement=float((diffs[~tied] > 0).mean()) if (~tied).any() else float("nan"),
        bayes_accuracy=float(np.maximum(p, 1 - p).mean()),
    )


def generate_preferences(
    model: str | os.PathLike,
    prompts: Sequence[str],
    gold: Callable[[list[str], list[str]], Sequence[float]],
    k: int = 4,
    temperature: float = 0.5,
    max_new_tokens: int = 24,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
) -> list[PreferenceRecord]:
    """Sample ``k`` completions per prompt from a causal LM and rank them by a noisy Bradley-Terry draw on gold.

    Completions are sampled at temperature 1 (pure ancestral sampling, like the env's base policy); duplicates
    within a prompt are dropped, and a prompt left with fewer than two distinct completions is skipped. The
    labels follow :func:`bradley_terry_rank` with ``temperature`` (0: noiseless), so like human labels they
    are noisy where the completions are close. The gold scores are kept in each record's ``gold`` field.
    """
    import torch
    from tqdm.auto import tqdm

    from textenv.lm import load_causal_lm, load_tokenizer

    if k < 2:
        raise ValueError(f"k={k} must be >= 2 (completions per prompt to rank)")
    if not prompts:
        raise ValueError("prompts is empty; preference generation needs at least one prompt")
    tokenizer, lm = load_tokenizer(model), load_causal_lm(model)
    tokenizer.padding_side = "left"
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    per_batch = max(1, batch_size // k)
    records: list[PreferenceRecord] = []
    bar = tqdm(total=len(prompts), desc="sampling preference data", unit="prompt", disable=not progress, mininterval=1.0)
    for start in range(0, len(prompts), per_batch):
        chunk = list(prompts[start : start + per_batch])
        rows = [p for p in chunk for _ in range(k)]
        batch = tokenizer(rows, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = lm.generate(
                **batch, do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, prompt in enumerate(chunk):
            distinct = list(dict.fromkeys(t for t in texts[i * k : (i + 1) * k] if t.strip()))
            if len(distinct) < 2:
                continue
            scores = np.asarray(gold([prompt] * len(distinct), distinct), dtype=float)
            ranking = bradley_terry_rank(scores, temperature, rng)
            records.append(PreferenceRecord(prompt, tuple(distinct), tuple(ranking_pairs(ranking)), 0.0, tuple(scores.tolist())))
        bar.update(len(chunk))
    bar.close()
    if not records:
        raise ValueError("no prompt got two distinct completions; raise max_new_tokens or k")
    return records
