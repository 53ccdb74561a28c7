"""Building the built-in world: corpus → byte-level BPE tokenizer → tiny GPT-2 LM, cached by recipe hash.

The world is a pure function of a :class:`WorldRecipe` (and of the source code that reads it): the same recipe
on the same machine gives the same files, bit for bit. It is written to ``<cache>/world-<hash>/`` where the
hash covers the recipe and the source of the grammar and of this file, so editing either rebuilds the world
and nothing else does. ``<cache>`` is ``$TEXTENV_CACHE`` if set, else ``$XDG_CACHE_HOME/textenv`` (default
``~/.cache/textenv``). Builds write into a temporary folder and rename it into place, under a file lock, so
an interrupted or concurrent build never leaves a half-written world.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from textenv.lm import pad_batch, save_pretrained
from textenv.world import grammar
from textenv.world.cache import build_once, torch_threads

EOS, PAD = "<|endoftext|>", "<pad>"


@dataclass(frozen=True)
class WorldRecipe:
    """Everything the built-in world is made from. Change a field and the world is rebuilt under a new hash."""

    seed: int = 0
    """Seed of the corpus, the prompts and the LM's initialisation and batches."""
    n_reviews: int = 20_000
    """Size of the synthetic review corpus the tokenizer and the LM are trained on."""
    n_prompts: int = 2_000
    """Number of task prompts written to ``prompts.jsonl`` (first half train, second half eval)."""
    vocab_size: int = 2048
    """Vocabulary size asked of the BPE trainer (the corpus decides how much of it is filled)."""
    n_layer: int = 2
    """Transformer blocks of the base LM."""
    n_embd: int = 128
    """Width of the base LM."""
    n_head: int = 4
    """Attention heads of the base LM."""
    n_positions: int = 128
    """Context length of the base LM (prompt + completion must fit)."""
    train_steps: int = 1200
    """Optimizer steps of LM training (about a minute on 2 CPU cores at the defaults)."""
    batch_size: int = 64
    """Reviews per LM training batch."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warm-up over 5% of the steps, then cosine decay to 10%)."""
    torch_threads: int = 2
    """torch threads while training: fixed, because float sums (and so the weights) depend on the count."""

    def __post_init__(self):
        for field in ("n_reviews", "n_prompts", "vocab_size", "n_layer", "n_embd", "n_head", "train_steps", "batch_size", "torch_threads"):
            if getattr(self, field) < 1:
                raise ValueError(f"WorldRecipe.{field}={getattr(self, field)} must be >= 1")
        if self.vocab_size < 300:
            raise ValueError(f"WorldRecipe.vocab_size={self.vocab_size} must be >= 300 (256 bytes + merges)")
        if self.n_embd % self.n_head:
            raise ValueError(f"WorldRecipe.n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if not self.lr > 0:
            raise ValueError(f"WorldRecipe.lr={self.lr} must be > 0")

    @property
    def digest(self) -> str:
        """Hash of the recipe and of the code that turns it into files (12 hex digits)."""
        h = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
        for module_file in (grammar.__file__, __file__):
            h.update(Path(module_file).read_bytes())
        return h.hexdigest()[:12]


def cache_root() -> Path:
    """``$TEXTENV_CACHE``, else ``$XDG_CACHE_HOME/textenv``, else ``~/.cache/textenv``."""
    if os.environ.get("TEXTENV_CACHE"):
        return Path(os.environ["TEXTENV_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "textenv"


def world_dir(recipe: WorldRecipe = WorldRecipe()) -> Path:
    return cache_root() / f"world-{recipe.digest}"


def build(recipe: WorldRecipe = WorldRecipe(), force: bool = False, progress: bool = True) -> Path:
    """Build the world for ``recipe`` unless it is cached; returns its directory.

    Layout: ``lm/`` (tokenizer + GPT-2 LM, loadable with ``from_pretrained``), ``prompts.jsonl``,
    ``corpus.txt`` and ``manifest.json`` (recipe, sizes, timings, sample fluency).
    """
    announce = ("textenv: building the built-in world (review corpus, BPE tokenizer, base LM, prompts): first use, "
                "cached afterwards; about 2 minutes on 2 idle CPU cores") if progress else None
    return build_once(world_dir(recipe), "manifest.json", lambda tmp: _build_into(tmp, recipe, progress), force, announce)


def _build_into(out: Path, recipe: WorldRecipe, progress: bool) -> None:
    started = time.perf_counter()
    corpus = grammar.sample_corpus(recipe.n_reviews, seed=recipe.seed)
    (out / "corpus.txt").write_text("\n".join(corpus) + "\n")
    prompts = grammar.sample_prompts(recipe.n_prompts, seed=recipe.seed + 1)
    with open(out / "prompts.jsonl", "w") as f:
        for i, prompt in enumerate(prompts):
            split = "train" if i < len(prompts) // 2 else "eval"
            f.write(json.dumps({"prompt": prompt, "split": split}) + "\n")

    tokenizer = train_tokenizer(corpus, recipe.vocab_size)
    tokenizer_seconds = time.perf_counter() - started
    with torch_threads(recipe.torch_threads):
        model, losses = train_lm(corpus, tokenizer, recipe, progress)
    lm_dir = out / "lm"
    save_pretrained(model, lm_dir)
    tokenizer.save_pretrained(lm_dir)

    fluency = sample_fluency(model, tokenizer, prompts[-64:], seed=recipe.seed)
    manifest = {
        "recipe": dataclasses.asdict(recipe),
        "digest": recipe.digest,
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "distinct_words": len({w for review in corpus for w in review.split()}),
        "tokenizer_seconds": round(tokenizer_seconds, 2),
        "build_seconds": round(time.perf_counter() - started, 1),
        "final_train_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
        "sample_fluency": fluency,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def train_tokenizer(corpus: list[str], vocab_size: int):
    """A GPT-2-style byte-level BPE trained on ``corpus``, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=PAD, model_max_length=10**6
    )


def train_lm(corpus: list[str], tokenizer, recipe: WorldRecipe, progress: bool = True):
    """Train a tiny GPT-2 on ``review + EOS`` sequences (one review per row, loss masked on padding)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(recipe.seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=recipe.n_positions,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    encoded = tokenizer([review + EOS for review in corpus], add_special_tokens=False)["input_ids"]
    encoded = [ids[: recipe.n_positions] for ids in encoded]
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, recipe.train_steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_ = (step - warmup) / max(1, recipe.train_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    batches = _length_bucketed_batches([len(ids) for ids in encoded], recipe.batch_size, recipe.train_steps, recipe.seed)
    losses: list[float] = []
    model.train()
    bar = tqdm(batches, desc="training built-in LM", disable=not progress, unit="step", mininterval=1.0)
    for step, rows in enumerate(bar):
        input_ids, mask = pad_batch([encoded[i] for i in rows], tokenizer.pad_token_id, "right")  # (B, T)
        logits = model(input_ids=input_ids, attention_mask=mask).logits  # (B, T, V)
        labels = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)  # (B, T-1)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model, losses


def _length_bucketed_batches(lengths: list[int], batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """``steps`` batches of row indices, each of similar lengths (little padding), in a seeded random order.

    Every epoch shuffles the rows, sorts each window of 50 batches by length, cuts it into batches and
    shuffles the batches: padding drops by about half against random batches at the same randomness.
    """
    generator = torch.Generator().manual_seed(seed)
    batches: list[list[int]] = []
    while len(batches) < steps:
        order = torch.randperm(len(lengths), generator=generator).tolist()
        window = batch_size * 50
        epoch = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
            epoch += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size) if len(chunk[i : i + batch_size]) == batch_size]
        batches += [epoch[i] for i in torch.randperm(len(epoch), generator=generator).tolist()]
    return batches[:steps]


@torch.inference_mode()
def sample_fluency(model, tokenizer, prompts: list[str], seed: int, max_new_tokens: int = 48) -> float:
    """Fraction of sampled completions (temperature 1) whose prompt + completion parses under the grammar."""
    torch.manual_seed(seed)
    ids, mask = pad_batch(tokenizer(prompts, add_special_tokens=False)["input_ids"], tokenizer.pad_token_id)  # (B, P)
    out = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id, top_k=0,
    )
    completions = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    return sum(grammar.fluency(p + c) for p, c in zip(prompts, completions)) / len(prompts)
