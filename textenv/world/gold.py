"""Gold rewards of the built-in world, computed by program rather than learned.

Both follow the reward protocol ``reward(prompts, completions) -> list[float]`` (one score per pair):

* :func:`gold_sentiment` -- lexicon sentiment of the completion, in [-1, 1];
* :func:`gold_fluency` -- fraction of the sentences of prompt + completion that parse under the grammar, in [0, 1].

They are the "true" objectives against which a learned reward model (and the policy it trains) can be checked.
"""

from __future__ import annotations

from collections.abc import Sequence

from textenv.world.grammar import fluency, sentiment


def _check_lengths(prompts: Sequence[str], completions: Sequence[str]) -> None:
    if len(prompts) != len(completions):
        raise ValueError(
            f"prompts and completions must have the same length; got {len(prompts)} prompts "
            f"and {len(completions)} completions"
        )


def gold_sentiment(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """Sentiment of each completion alone (the prompt was not written by the policy), in [-1, 1].

    >>> gold_sentiment(["the room was", "the room was"], [" clean .", " not clean . the bed was great ."])
    [1.0, 0.0]
    """
    _check_lengths(prompts, completions)
    return [sentiment(completion) for completion in completions]


def gold_fluency(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """Fluency of the text ``prompt + completion``: the fraction of its sentences that parse.

    The completion continues the prompt's text exactly as its tokens do (a decoded continuation starts with a
    space unless it continues the prompt's last word), so no space is inserted; runs of spaces are normalised.

    >>> gold_fluency(["the room was"] * 4, [" clean .", " clean . was the", " clean", "clean ."])
    [1.0, 0.5, 0.0, 0.0]
    """
    _check_lengths(prompts, completions)
    return [fluency(" ".join((prompt + completion).split())) for prompt, completion in zip(prompts, completions)]
