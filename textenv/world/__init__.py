"""The built-in world: a grammar, its corpus, a BPE tokenizer, a tiny GPT-2 LM, prompts and gold rewards.

Built by the project's own code from a seed (no downloads), cached by recipe hash; see :mod:`textenv.world.build`.

>>> from textenv import world
>>> lm = world.lm_path()          # builds on first use (about a minute), then cached
>>> # AutoModelForCausalLM.from_pretrained(lm) and AutoTokenizer.from_pretrained(lm) both load it
"""

from __future__ import annotations

from pathlib import Path

from textenv.world.build import WorldRecipe, build, cache_root, world_dir
from textenv.world.gold import gold_fluency, gold_sentiment

__all__ = [
    "WorldRecipe",
    "build",
    "cache_root",
    "world_dir",
    "lm_path",
    "prompts_path",
    "gold_sentiment",
    "gold_fluency",
]


def lm_path(recipe: WorldRecipe = WorldRecipe(), progress: bool = True) -> Path:
    """Directory of the built-in base LM and its tokenizer (built if not cached)."""
    return build(recipe, progress=progress) / "lm"


def prompts_path(recipe: WorldRecipe = WorldRecipe(), progress: bool = True) -> Path:
    """``prompts.jsonl`` of the built-in sentiment task (``split`` is ``train`` or ``eval``)."""
    return build(recipe, progress=progress) / "prompts.jsonl"
