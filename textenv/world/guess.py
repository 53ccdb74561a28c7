"""The guess-the-number world: transcripts of a player that guesses at random, a character-level tokenizer and a
tiny GPT-2 that has learned the game's format but not how to play it. The base world of ``textenv/GuessNumber-v0``.

The game, character by character: the prompt ``"guess 1-16\\n"``; each agent turn is a guess in decimal and a
newline (``"8\\n"``); the env replies ``"higher\\n"`` (the secret is higher), ``"lower\\n"`` or ``"correct\\n"``.
A transcript ends with EOS after ``"correct\\n"`` or after the reply to the 8th guess::

    guess 1-16
    8
    higher
    12
    lower
    10
    correct
    <eos>

The corpus is ``n_games`` transcripts of a player that guesses uniformly in [1, 16] with replacement, ignoring the
replies (:func:`play_random_transcript`); the LM is trained on them (every token, replies included). It writes
well-formed guesses (about 99% of its turns at temperature 1) and wins about as often as random guessing,
``1 - (15/16)^8 ≈ 40%``: room for RL to learn to bisect (4 turns always suffice). :func:`simulate` measures
both; the manifest records the figures of the build.

Like the other worlds (:mod:`textenv.world.build`), it is a pure function of a :class:`GuessRecipe` and of this
file and :mod:`textenv.world.tiny`: the same recipe on the same machine gives the same files, bit for bit,
built once under a file lock into ``<cache>/guess-<hash>/`` (:func:`textenv.world.cache.build_once`).

>>> reply(secret=10, guess=8), reply(10, 12), reply(10, 10)
('higher\\n', 'lower\\n', 'correct\\n')
>>> parse_guess("8\\n"), parse_guess("16\\n"), parse_guess("17\\n"), parse_guess("08\\n"), parse_guess("8")
(8, 16, None, None, None)
>>> GuessRecipe().digest == GuessRecipe(seed=0).digest != GuessRecipe(seed=1).digest
True
>>> guess_dir().name == "guess-" + GuessRecipe().digest        # builds nothing
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from textenv.lm import save_pretrained
from textenv.world import tiny
from textenv.world.build import cache_root
from textenv.world.cache import build_once, torch_threads

LOW, HIGH = 1, 16
"""The secret and the guesses are integers in ``[LOW, HIGH]``."""
MAX_TURNS = 8
"""Guesses per game (a transcript that has not said ``correct`` after the 8th reply ends there)."""
PROMPT = f"guess {LOW}-{HIGH}\n"
CHARACTERS = "0123456789abcdefghijklmnopqrstuvwxyz -\n"
"""The tokenizer's vocabulary after ``<eos>`` (id 0) and ``<unk>`` (id 1): one token per character."""
MAX_TURN_TOKENS = 4
"""Tokens :func:`simulate` samples for one turn before calling it unfinished (a guess takes at most 3)."""
_GUESS = re.compile(rf"(1[0-{HIGH - 10}]|[1-9])\n")


@dataclass(frozen=True)
class GuessRecipe:
    """Everything the guess world is made from. Change a field and the world is rebuilt under a new hash."""

    seed: int = 0
    """Seed of the corpus (``numpy.random.default_rng(seed)``), of the LM's initialisation and batches, and of
    the manifest's simulated games."""
    n_games: int = 30_000
    """Random-player transcripts in the corpus."""
    n_layer: int = 2
    """Transformer blocks of the LM."""
    n_embd: int = 64
    """Width of the LM."""
    n_head: int = 4
    """Attention heads of the LM."""
    n_positions: int = 160
    """Context length of the LM (a transcript with EOS is at most 92 tokens; the rest is room for an env's limits)."""
    train_steps: int = 600
    """Optimizer steps (about a minute on one idle thread); the format is learned by about 300."""
    batch_size: int = 32
    """Transcripts per training batch."""
    lr: float = 5e-3
    """Peak AdamW learning rate (linear warm-up over 5% of the steps, then cosine decay to 10%)."""
    eval_games: int = 300
    """Games :func:`simulate` plays at temperature 1 for the manifest (0: none)."""
    torch_threads: int = 1
    """torch threads while training: fixed, because float sums (and so the weights) depend on the count."""

    def __post_init__(self):
        for name in ("n_games", "n_layer", "n_embd", "n_head", "n_positions", "train_steps", "batch_size",
                     "torch_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GuessRecipe.{name}={value!r} must be an integer >= 1")
        if not isinstance(self.eval_games, int) or self.eval_games < 0:
            raise ValueError(f"GuessRecipe.eval_games={self.eval_games!r} must be an integer >= 0")
        if self.n_embd % self.n_head:
            raise ValueError(f"GuessRecipe.n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        longest = len(PROMPT) + MAX_TURNS * (len(str(HIGH)) + 1 + len("higher\n")) + 1
        if self.n_positions < longest:
            raise ValueError(f"GuessRecipe.n_positions={self.n_positions} is shorter than the longest transcript "
                             f"with EOS ({longest} tokens)")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"GuessRecipe.lr={self.lr!r} must be a finite number > 0")

    @property
    def digest(self) -> str:
        """Hash of the recipe and of the code that turns it into files (12 hex digits)."""
        h = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
        for module_file in (tiny.__file__, __file__):
            h.update(Path(module_file).read_bytes())
        return h.hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ paths
def guess_dir(recipe: GuessRecipe = GuessRecipe()) -> Path:
    """Where the world of ``recipe`` is (or will be) cached: ``<cache>/guess-<digest>`` (builds nothing)."""
    return cache_root() / f"guess-{recipe.digest}"


def build_guess(recipe: GuessRecipe = GuessRecipe(), progress: bool = True, force: bool = False) -> Path:
    """Build the guess world for ``recipe`` unless it is cached; returns its directory.

    Layout: ``lm/`` (character tokenizer + GPT-2 LM, loadable with ``from_pretrained``), ``corpus.jsonl``
    (``{"secret", "transcript"}`` lines) and ``manifest.json`` (recipe, sizes, timings, :func:`simulate`'s figures).
    """
    announce = ("textenv: building the guess-the-number world (random-player transcripts, character tokenizer, "
                "a base LM that knows the format): first use, cached afterwards; about a minute on one idle CPU "
                "core") if progress else None
    return build_once(guess_dir(recipe), "manifest.json", lambda tmp: _build_into(tmp, recipe, progress), force,
                      announce)


def guess_lm_path(recipe: GuessRecipe = GuessRecipe(), progress: bool = True) -> Path:
    """Directory of the guess world's base LM and its tokenizer (built if not cached)."""
    return build_guess(recipe, progress=progress) / "lm"


# ------------------------------------------------------------------------------------------------ the game
def reply(secret: int, guess: int) -> str:
    """The env's answer to ``guess``: ``"higher\\n"`` if the secret is higher, ``"lower\\n"``, or ``"correct\\n"``."""
    return "higher\n" if secret > guess else "lower\n" if secret < guess else "correct\n"


def parse_guess(turn: str) -> int | None:
    """The guess of an agent turn (``"8\\n"`` → 8), or ``None`` unless it is exactly an integer in
    ``[LOW, HIGH]`` in plain decimal followed by a newline."""
    found = _GUESS.fullmatch(turn)
    return int(found.group(1)) if found else None


def play_random_transcript(rng: np.random.Generator, secret: int | None = None) -> tuple[int, str]:
    """``(secret, transcript)`` of one game of a player that guesses uniformly in ``[LOW, HIGH]`` with replacement,
    ignoring the replies: the prompt, then each guess and its reply, until ``correct`` or ``MAX_TURNS`` guesses (no
    EOS; the trainer appends it). ``secret``: drawn from ``rng`` (uniform) unless given.

    >>> play_random_transcript(np.random.default_rng(0), secret=5)
    (5, 'guess 1-16\\n14\\nlower\\n11\\nlower\\n9\\nlower\\n5\\ncorrect\\n')
    """
    if secret is None:
        secret = int(rng.integers(LOW, HIGH + 1))
    elif not LOW <= secret <= HIGH:
        raise ValueError(f"secret={secret!r} must be an integer in [{LOW}, {HIGH}]")
    text = PROMPT
    for guess in rng.integers(LOW, HIGH + 1, size=MAX_TURNS).tolist():
        text += f"{guess}\n" + reply(secret, guess)
        if guess == secret:
            break
    return secret, text


def make_corpus(recipe: GuessRecipe = GuessRecipe()) -> list[tuple[int, str]]:
    """The recipe's ``n_games`` ``(secret, transcript)`` pairs, from ``numpy.random.default_rng(recipe.seed)``."""
    rng = np.random.default_rng(recipe.seed)
    return [play_random_transcript(rng) for _ in range(recipe.n_games)]


def make_tokenizer():
    """The world's character tokenizer: ``<eos>`` (id 0), ``<unk>`` (id 1), then :data:`CHARACTERS`; no pad token
    (textenv pads with EOS); the newline is one token."""
    return tiny.char_tokenizer(CHARACTERS)


# ------------------------------------------------------------------------------------------------ building
def _build_into(out: Path, recipe: GuessRecipe, progress: bool) -> None:
    started = time.perf_counter()
    corpus = make_corpus(recipe)
    with open(out / "corpus.jsonl", "w") as f:
        for secret, text in corpus:
            f.write(json.dumps({"secret": secret, "transcript": text}) + "\n")
    tokenizer = make_tokenizer()
    lm_dir = out / "lm"
    with torch_threads(recipe.torch_threads):
        model, losses = tiny.train_char_lm(
            [text for _, text in corpus], tokenizer, n_layer=recipe.n_layer, n_embd=recipe.n_embd,
            n_head=recipe.n_head, n_positions=recipe.n_positions, steps=recipe.train_steps,
            batch_size=recipe.batch_size, lr=recipe.lr, seed=recipe.seed, desc="training guess LM",
            progress=progress)
        save_pretrained(model, lm_dir)
        tokenizer.save_pretrained(lm_dir)
        train_seconds = time.perf_counter() - started
        figures = simulate(lm_dir, recipe.eval_games, seed=recipe.seed) if recipe.eval_games else {}
    manifest = {
        "recipe": dataclasses.asdict(recipe),
        "digest": recipe.digest,
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus_games": len(corpus),
        "corpus_success_rate": round(sum(t.endswith("correct\n") for _, t in corpus) / len(corpus), 4),
        "final_train_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
        "train_seconds": round(train_seconds, 1),
        **{f"sim_{k}": round(v, 4) if isinstance(v, float) else v for k, v in figures.items()},
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------ simulation
@torch.inference_mode()
def simulate(model_path, n_games: int, seed: int = 0, temperature: float = 1.0) -> dict[str, float | int]:
    """Play ``n_games`` games with the LM at ``model_path`` (a folder ``from_pretrained`` loads, with its tokenizer)
    as the player, all at once with one KV cache (:class:`textenv.lm.IncrementalLM`), no env.

    Each game: the prompt; then per turn, tokens sampled at ``temperature`` (0: greedy) until a newline, EOS or
    :data:`MAX_TURN_TOKENS` tokens; a turn that :func:`parse_guess` rejects ends the game, lost; otherwise the true
    reply is fed in, until ``correct`` or :data:`MAX_TURNS` guesses. Secrets are drawn from
    ``numpy.random.default_rng(seed)``, samples from a torch generator seeded with ``seed``.

    Returns ``format_rate`` (well-formed turns / turns), ``success_rate`` (games won), ``mean_turns`` (guesses per
    won game; NaN if none), ``games`` and ``turns``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from textenv.lm import IncrementalLM

    if not isinstance(n_games, int) or n_games < 1:
        raise ValueError(f"n_games={n_games!r} must be an integer >= 1")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature={temperature!r} must be a finite number >= 0 (0: greedy)")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    eos = tokenizer.eos_token_id
    newline = tokenizer.encode("\n", add_special_tokens=False)
    if len(newline) != 1:
        raise ValueError(f"the tokenizer of {model_path} encodes a newline as {newline}; the game needs one token")
    secrets = np.random.default_rng(seed).integers(LOW, HIGH + 1, size=n_games).tolist()
    generator = torch.Generator().manual_seed(seed)
    lm = IncrementalLM(model, n_games, eos, getattr(model.config, "n_positions", None))
    lm.reset_rows(list(range(n_games)), [tokenizer.encode(PROMPT, add_special_tokens=False)] * n_games)
    done, won = [False] * n_games, [False] * n_games
    turn = [[] for _ in range(n_games)]
    turns, well_formed = [0] * n_games, 0
    while not all(done):
        logits = lm.next_logprobs  # (B, V)
        if temperature == 0:
            tokens = logits.argmax(-1)  # (B,)
        else:
            tokens = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)[:, 0]  # (B,)
        feed = []
        for i, token in enumerate(tokens.tolist()):
            if done[i]:
                feed.append([eos])  # a finished game idles on padding
                continue
            turn[i].append(token)
            feed.append([token])
            if token not in (newline[0], eos) and len(turn[i]) < MAX_TURN_TOKENS:
                continue
            guess = parse_guess(tokenizer.decode(turn[i], skip_special_tokens=False))
            turns[i] += 1
            turn[i] = []
            if guess is None:
                done[i] = True
                continue
            well_formed += 1
            answer = reply(secrets[i], guess)
            won[i] = answer == "correct\n"
            done[i] = won[i] or turns[i] == MAX_TURNS
            if not done[i]:
                feed[i] += tokenizer.encode(answer, add_special_tokens=False)
        if not all(done):
            lm.extend(feed)
    n_won = sum(won)
    return {
        "format_rate": well_formed / sum(turns),
        "success_rate": n_won / n_games,
        "mean_turns": sum(t for t, w in zip(turns, won) if w) / n_won if n_won else float("nan"),
        "games": n_games,
        "turns": sum(turns),
    }
