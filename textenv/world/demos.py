"""Demonstrations for supervised fine-tuning on the built-in world: prompts continued by the grammar itself.

A demonstration is a review written in one mood (``"positive"`` by default: what the sentiment task rewards),
cut after a few leading words exactly as the task's prompts are cut, with the rest of the review as the
completion. They play the part of InstructGPT's human demonstrations. This module is not part of the world's
hash: demonstrations are drawn on demand and never cached.
"""

from __future__ import annotations

import random

from textenv.world import grammar


def sample_demonstrations(n: int, seed: int = 0, mood: str = "positive") -> list[dict[str, str]]:
    """``n`` records ``{"prompt": ..., "completion": ...}`` in ``mood`` (deterministic given ``seed``).

    >>> d = sample_demonstrations(2, seed=0)
    >>> [set(r) for r in d] == [{"prompt", "completion"}] * 2 and d[0]["completion"].startswith(" ")
    True
    """
    if mood not in grammar.MOODS:
        raise ValueError(f"mood={mood!r}; expected one of {sorted(grammar.MOODS)}")
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    rng = random.Random(seed)
    topics = list(grammar.TOPICS)
    out = []
    while len(out) < n:
        words: list[str] = []
        grammar._expand(f"REVIEW@{rng.choice(topics)}", rng, grammar._WEIGHTS_BY_MOOD[mood], words)
        review = " ".join(words)
        first = review.split(" . ")[0].removesuffix(" .").split()
        cut = next((i for i, word in enumerate(first) if word in grammar._MOOD_WORDS), len(first) - 1)
        if cut >= 2:
            prompt = " ".join(first[: rng.randint(2, min(6, cut))])
            out.append({"prompt": prompt, "completion": review[len(prompt):]})
    return out
