"""The built-in world's preference data and its learned **proxy** reward model.

Built like the rest of the world, from a recipe and cached by hash, in ``<world>/proxy-<hash>/``:

| file | what |
|---|---|
| ``preferences-train.jsonl`` | K=4 completions of the base LM for each of 4,000 grammar prompts, ranked by a noisy Bradley-Terry draw on gold sentiment |
| ``preferences-eval.jsonl`` | the same for 500 prompts of the world's ``eval`` split (held out) |
| ``labels.json`` | agreement of the labels with gold, share of gold ties, and the accuracy ceiling the label noise allows |
| ``rm/`` | the reward model (``AutoModelForSequenceClassification``, normalisation in ``config.json``), ``metrics.json``, ``report.png``, ``log.csv`` |

The proxy is the default reward of ``textenv/Sentiment-v0``; gold sentiment is reported beside it as
``info["reward_gold"]``, so reward over-optimization (Gao et al. 2022) shows in every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from textenv.world.build import WorldRecipe, build
from textenv.world.cache import build_once, torch_threads
from textenv.world.gold import gold_sentiment


@dataclass(frozen=True)
class ProxyRecipe:
    """How the preference data and the proxy reward model are made. A changed field gives a new hash."""

    seed: int = 0
    """Seed of the preference prompts, the sampling, the labels and the reward model's training."""
    n_prompts: int = 4000
    """Training prompts, drawn from the grammar (seed ``seed + 100``), each with ``k`` sampled completions."""
    n_eval_prompts: int = 500
    """Held-out prompts, the first of the world's ``eval`` split."""
    k: int = 4
    """Completions per prompt, ranked K-wise (C(K, 2) pairs each)."""
    label_temperature: float = 0.5
    """Noise of the Bradley-Terry labels: P(a above b) = σ((gold_a − gold_b) / temperature)."""
    max_new_tokens: int = 24
    """Completion length cap, the env's default."""
    epochs: int = 3
    """Passes of reward-model training over the training records."""
    batch_size: int = 32
    """Records per optimizer step."""
    lr: float = 1e-3
    """Peak learning rate."""
    center_coef: float = 0.01
    """Reward-centering penalty."""
    torch_threads: int = 2
    """Fixed thread count (float sums, and so the weights, depend on it)."""

    def rm_config(self, folder: str | Path, base_model: str | Path, **overrides):
        """The :class:`~textenv.rm.RewardModelConfig` of the proxy, reading the preference files in ``folder``."""
        from textenv.rm import RewardModelConfig

        folder = Path(folder)
        fields = dict(
            train_file=str(folder / "preferences-train.jsonl"), eval_file=str(folder / "preferences-eval.jsonl"),
            output_dir=str(folder / "rm"), base_model=str(base_model), epochs=self.epochs, batch_size=self.batch_size,
            lr=self.lr, center_coef=self.center_coef, seed=self.seed, checkpoint_every=10**9,
        )
        return RewardModelConfig(**{**fields, **overrides})

    def digest(self, world: WorldRecipe) -> str:
        """Hash of this recipe, the world's, and the source of every module the build runs."""
        from textenv.rewards import hf
        from textenv.rm import data, evaluate, train

        h = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode() + world.digest.encode())
        for module in (data, train, evaluate, hf):
            h.update(Path(module.__file__).read_bytes())
        h.update(Path(__file__).read_bytes())
        return h.hexdigest()[:12]


def proxy_dir(world: WorldRecipe = WorldRecipe(), recipe: ProxyRecipe = ProxyRecipe()) -> Path:
    from textenv.world.build import world_dir

    return world_dir(world) / f"proxy-{recipe.digest(world)}"


def build_proxy(world: WorldRecipe = WorldRecipe(), recipe: ProxyRecipe = ProxyRecipe(), force: bool = False, progress: bool = True) -> Path:
    """Build the preference data and the proxy reward model unless cached; returns their directory."""
    world_path = build(world, progress=progress)
    announce = ("textenv: building the proxy reward model (preference data sampled from the base LM, then "
                "Bradley-Terry training): first use, cached afterwards; about 4 minutes on 2 idle CPU cores") if progress else None
    return build_once(proxy_dir(world, recipe), "rm/metrics.json",
                      lambda tmp: _build_into(tmp, world_path, recipe, progress), force, announce)


def _build_into(out: Path, world_path: Path, recipe: ProxyRecipe, progress: bool) -> None:
    from textenv.rm import generate_preferences, label_stats, train_reward_model, write_preferences
    from textenv.task import load_prompts
    from textenv.world import grammar

    with torch_threads(recipe.torch_threads):
        lm = world_path / "lm"
        train_prompts = grammar.sample_prompts(recipe.n_prompts, seed=recipe.seed + 100)
        eval_prompts = load_prompts(world_path / "prompts.jsonl", split="eval")[: recipe.n_eval_prompts]
        sample = {"gold": gold_sentiment, "k": recipe.k, "temperature": recipe.label_temperature,
                  "max_new_tokens": recipe.max_new_tokens, "progress": progress}
        train = generate_preferences(lm, train_prompts, seed=recipe.seed, **sample)
        held_out = generate_preferences(lm, eval_prompts, seed=recipe.seed + 1, **sample)
        write_preferences(out / "preferences-train.jsonl", train)
        write_preferences(out / "preferences-eval.jsonl", held_out)
        labels = {split: dataclasses.asdict(label_stats(records, recipe.label_temperature))
                  for split, records in (("train", train), ("eval", held_out))}
        (out / "labels.json").write_text(json.dumps({"label_temperature": recipe.label_temperature, **labels}, indent=2) + "\n")
        train_reward_model(recipe.rm_config(out, lm), resume=False, progress=progress, gold=gold_sentiment)
