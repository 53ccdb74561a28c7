"""The built-in world: a grammar, its corpus, a BPE tokenizer, a tiny GPT-2 LM, prompts and gold rewards.

Built by the project's own code from a seed (no downloads), cached by recipe hash; see :mod:`textenv.world.build`.
Each call below builds on first use, then reads the cache (checking that every file is there with its size)::

    lm = world.lm_path()          # about a minute; AutoModelForCausalLM / AutoTokenizer.from_pretrained(lm) load it
    rm = world.proxy_rm_path()    # the learned proxy reward model, about 2 minutes; reward_model= accepts it
    lm = world.arithmetic_lm_path()  # the arithmetic world's partly right LM (textenv/Arithmetic-v0), about a minute

Where they are cached (these build nothing):

>>> from textenv import world
>>> folder = world.world_dir()
>>> folder.parent == world.cache_root(), folder.name == "world-" + world.WorldRecipe().digest, len(folder.name)
(True, True, 18)
>>> world.world_dir(world.WorldRecipe(seed=1)) == folder      # another recipe, another folder
False
>>> world.proxy_dir().parent == folder                        # the proxy lives inside its world
True
"""

from __future__ import annotations

from pathlib import Path

from textenv.world.arithmetic import ArithmeticRecipe, arithmetic_dir
from textenv.world.arithmetic import build as build_arithmetic
from textenv.world.arithmetic import lm_path as arithmetic_lm_path
from textenv.world.arithmetic import problems_path as arithmetic_problems_path
from textenv.world.build import WorldRecipe, build, cache_root, world_dir
from textenv.world.cache import CacheError
from textenv.world.gold import gold_fluency, gold_sentiment
from textenv.world.guess import guess_lm_path
from textenv.world.proxy import ProxyRecipe, build_proxy, proxy_dir

__all__ = [
    "WorldRecipe",
    "build",
    "cache_root",
    "world_dir",
    "CacheError",
    "lm_path",
    "prompts_path",
    "gold_sentiment",
    "gold_fluency",
    "ProxyRecipe",
    "build_proxy",
    "proxy_dir",
    "proxy_rm_path",
    "preferences_path",
    "ArithmeticRecipe",
    "arithmetic_dir",
    "build_arithmetic",
    "arithmetic_lm_path",
    "arithmetic_problems_path",
    "guess_lm_path",
]


def lm_path(recipe: WorldRecipe = WorldRecipe(), progress: bool = True) -> Path:
    """Directory of the built-in base LM and its tokenizer (built if not cached)."""
    return build(recipe, progress=progress) / "lm"


def prompts_path(recipe: WorldRecipe = WorldRecipe(), progress: bool = True) -> Path:
    """``prompts.jsonl`` of the built-in sentiment task (each line ``{"prompt": ..., "split": "train" or "eval"}``)."""
    return build(recipe, progress=progress) / "prompts.jsonl"


def proxy_rm_path(world: WorldRecipe = WorldRecipe(), recipe: ProxyRecipe = ProxyRecipe(), progress: bool = True) -> Path:
    """Directory of the learned proxy reward model (built if not cached): ``reward_model=`` accepts it."""
    return build_proxy(world, recipe, progress=progress) / "rm"


def preferences_path(split: str = "train", world: WorldRecipe = WorldRecipe(), recipe: ProxyRecipe = ProxyRecipe(),
                     progress: bool = True) -> Path:
    """The built-in preference data, ``split`` ``"train"`` or ``"eval"`` (held out)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split={split!r} must be 'train' or 'eval'")
    return build_proxy(world, recipe, progress=progress) / f"preferences-{split}.jsonl"
