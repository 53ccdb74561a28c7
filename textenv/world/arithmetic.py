"""The arithmetic world: two-digit sums and differences, a character-level tokenizer and a tiny GPT-2 that is
partly right. The built-in world of the verifiable task ``textenv/Arithmetic-v0``.

Every problem ``a+b=`` with ``0 <= a, b <= max_operand``, and ``a-b=`` with ``b <= a`` (no negative answers;
15,050 problems at the defaults), is written to ``problems.jsonl`` as ``{"prompt": "47+38=", "answer": "85",
"split": "train" or "eval"}``: a seeded shuffle puts ``n_eval`` of them in the held-out ``eval`` split and the
rest in ``train``. The LM is trained on the ``train``
problems only (``prompt + answer + EOS``, the loss on the answer and EOS), and stopped early on purpose: at the
default recipe it is right on 49% of the held-out problems greedily and 25% at temperature 1, while 8 samples
hold a right answer for 72% of them (``manifest.json`` records the figures of each build). Room for RL, and a
group of samples that usually has something to learn from.

Like the review world (:mod:`textenv.world.build`), the world is a pure function of an
:class:`ArithmeticRecipe` and of this file: the same recipe on the same machine gives the same files, bit for
bit, built once under a file lock into ``<cache>/arithmetic-<hash>/`` (:func:`textenv.world.cache.build_once`).

>>> solve("47+38="), solve("12-30="), solve("7+0=")
('85', '-18', '7')
>>> ArithmeticRecipe().digest == ArithmeticRecipe(seed=0).digest != ArithmeticRecipe(seed=1).digest
True
>>> arithmetic_dir().name == "arithmetic-" + ArithmeticRecipe().digest        # builds nothing
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from textenv.lm import pad_batch, save_pretrained
from textenv.world.build import cache_root
from textenv.world.cache import build_once, torch_threads

EOS, PAD, UNK = "<|endoftext|>", "<pad>", "<unk>"
CHARACTERS = "0123456789+-= "
"""The tokenizer's vocabulary besides its three special tokens: one token per character."""
ANSWER_PATTERN = r"(-?\d+)"
"""What :class:`textenv.rewards.ExactMatch` extracts from a completion: its first integer."""
_PROBLEM = re.compile(r"\s*(\d+)\s*([+-])\s*(\d+)\s*=\s*")


@dataclass(frozen=True)
class ArithmeticRecipe:
    """Everything the arithmetic world is made from. Change a field and the world is rebuilt under a new hash."""

    seed: int = 0
    """Seed of the train/eval split, the LM's initialisation, its batches and the manifest's samples."""
    max_operand: int = 99
    """Largest operand: every ``a+b=``, and ``a-b=`` with ``b <= a``, for ``0 <= a, b <= max_operand`` is a problem."""
    n_eval: int = 500
    """Problems held out (``split == "eval"``): never trained on."""
    n_layer: int = 2
    """Transformer blocks of the LM."""
    n_embd: int = 64
    """Width of the LM."""
    n_head: int = 4
    """Attention heads of the LM."""
    n_positions: int = 64
    """Context length of the LM (a prompt is at most 6 tokens; the rest is room for completions)."""
    train_steps: int = 1000
    """Optimizer steps (under a minute on one thread); fewer leave the LM less right, more make it more right."""
    batch_size: int = 128
    """Problems per training batch."""
    lr: float = 5e-3
    """Peak AdamW learning rate (linear warm-up over 5% of the steps, then cosine decay to 10%)."""
    torch_threads: int = 1
    """torch threads while training: fixed, because float sums (and so the weights) depend on the count."""

    def __post_init__(self):
        for name in ("max_operand", "n_eval", "n_layer", "n_embd", "n_head", "n_positions", "train_steps",
                     "batch_size", "torch_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ArithmeticRecipe.{name}={value!r} must be an integer >= 1")
        n = self.max_operand + 1
        if n * n + n * (n + 1) // 2 <= self.n_eval:
            raise ValueError(f"ArithmeticRecipe.n_eval={self.n_eval} leaves no training problems out of "
                             f"{n * n + n * (n + 1) // 2} (max_operand={self.max_operand}); lower n_eval")
        if self.n_embd % self.n_head:
            raise ValueError(f"ArithmeticRecipe.n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        longest = 2 * len(str(self.max_operand)) + 2 + len(str(2 * self.max_operand)) + 1
        if self.n_positions < longest:
            raise ValueError(f"ArithmeticRecipe.n_positions={self.n_positions} is shorter than a problem with its "
                             f"answer and EOS ({longest} tokens at max_operand={self.max_operand})")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"ArithmeticRecipe.lr={self.lr!r} must be a finite number > 0")

    @property
    def digest(self) -> str:
        """Hash of the recipe and of this file (12 hex digits)."""
        h = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
        h.update(Path(__file__).read_bytes())
        return h.hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ paths
def arithmetic_dir(recipe: ArithmeticRecipe = ArithmeticRecipe()) -> Path:
    """Where the world of ``recipe`` is (or will be) cached: ``<cache>/arithmetic-<digest>`` (builds nothing)."""
    return cache_root() / f"arithmetic-{recipe.digest}"


def build(recipe: ArithmeticRecipe = ArithmeticRecipe(), force: bool = False, progress: bool = True) -> Path:
    """Build the arithmetic world for ``recipe`` unless it is cached; returns its directory.

    Layout: ``lm/`` (character tokenizer + GPT-2 LM, loadable with ``from_pretrained``), ``problems.jsonl`` and
    ``manifest.json`` (recipe, sizes, timings, the LM's held-out accuracy).
    """
    announce = ("textenv: building the arithmetic world (problems, character tokenizer, a partly right LM): "
                "first use, cached afterwards; about a minute on one idle CPU core") if progress else None
    return build_once(arithmetic_dir(recipe), "manifest.json", lambda tmp: _build_into(tmp, recipe, progress), force,
                      announce)


def lm_path(recipe: ArithmeticRecipe = ArithmeticRecipe(), progress: bool = True) -> Path:
    """Directory of the arithmetic LM and its tokenizer (built if not cached)."""
    return build(recipe, progress=progress) / "lm"


def problems_path(recipe: ArithmeticRecipe = ArithmeticRecipe(), progress: bool = True) -> Path:
    """``problems.jsonl`` (built if not cached): ``{"prompt", "answer", "split"}`` lines, ``split`` train or eval."""
    return build(recipe, progress=progress) / "problems.jsonl"


# ------------------------------------------------------------------------------------------------ problems
def solve(prompt: str) -> str:
    """The answer to ``"a+b="`` or ``"a-b="`` (non-negative integer operands), as the LM is taught to write it.

    Raises ``ValueError`` naming the prompt when it is not such a problem.
    """
    found = _PROBLEM.fullmatch(prompt) if isinstance(prompt, str) else None
    if found is None:
        raise ValueError(f"prompt {prompt!r} is not an arithmetic problem of the form 'a+b=' or 'a-b=' "
                         f"(non-negative integers a and b)")
    a, op, b = int(found.group(1)), found.group(2), int(found.group(3))
    return str(a + b if op == "+" else a - b)


def make_problems(recipe: ArithmeticRecipe = ArithmeticRecipe()) -> list[dict[str, str]]:
    """Every problem of the recipe, in its seeded order: the first ``n_eval`` held out (``eval``), then ``train``."""
    n = recipe.max_operand + 1
    prompts = [f"{a}{op}{b}=" for a in range(n) for op in "+-" for b in range(n) if op == "+" or a >= b]
    random.Random(recipe.seed).shuffle(prompts)
    return [{"prompt": p, "answer": solve(p), "split": "eval" if i < recipe.n_eval else "train"}
            for i, p in enumerate(prompts)]


def load_problems(path: str | Path, split: str | None = None) -> list[dict[str, str]]:
    """The problems of ``problems.jsonl`` (of one ``split``, ``"train"`` or ``"eval"``, or all)."""
    if split not in (None, "train", "eval"):
        raise ValueError(f"split={split!r} must be 'train', 'eval' or None (both)")
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


def answer_key(path: str | Path | None = None) -> dict[str, str]:
    """``{prompt: answer}`` of every problem in ``path`` (default: the default recipe's ``problems.jsonl``)."""
    return {r["prompt"]: r["answer"] for r in load_problems(path or problems_path())}


@dataclass
class Answers:
    """The reference answer of a prompt: from ``table`` (the problems file's answers), else :func:`solve`'s.

    What :class:`textenv.rewards.ExactMatch` is given as ``answers`` in ``textenv/Arithmetic-v0``, so a prompt
    passed to ``reset(options={"prompt": ...})`` is scored too. A prompt that is neither in the table nor a
    problem raises ``ValueError`` naming it.

    >>> Answers({"2+2=": "4"})("2+2="), Answers({})("31-9=")
    ('4', '22')
    """

    table: dict[str, str] = dataclasses.field(default_factory=dict)

    def __call__(self, prompt: str) -> str:
        found = self.table.get(prompt)
        return found if found is not None else solve(prompt)


# ------------------------------------------------------------------------------------------------ building
def _build_into(out: Path, recipe: ArithmeticRecipe, progress: bool) -> None:
    started = time.perf_counter()
    problems = make_problems(recipe)
    with open(out / "problems.jsonl", "w") as f:
        for row in problems:
            f.write(json.dumps(row) + "\n")
    train = [r for r in problems if r["split"] == "train"]
    held_out = [r for r in problems if r["split"] == "eval"]
    tokenizer = make_tokenizer()
    with torch_threads(recipe.torch_threads):
        model, losses = train_lm(train, tokenizer, recipe, progress)
        accuracy = held_out_accuracy(model, tokenizer, held_out, k=8, seed=recipe.seed)
    lm_dir = out / "lm"
    save_pretrained(model, lm_dir)
    tokenizer.save_pretrained(lm_dir)
    manifest = {
        "recipe": dataclasses.asdict(recipe),
        "digest": recipe.digest,
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_problems": len(train),
        "eval_problems": len(held_out),
        "final_train_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
        **{f"eval_{k}": round(v, 4) for k, v in accuracy.items()},
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def make_tokenizer():
    """A character-level ``PreTrainedTokenizerFast``: EOS, PAD and UNK, then one token per character of
    :data:`CHARACTERS` (any other character encodes as UNK); it decodes by joining the characters."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([EOS, PAD, UNK, *CHARACTERS])}
    characters = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    characters.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    characters.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=characters, eos_token=EOS, bos_token=EOS, unk_token=UNK,
                                   pad_token=PAD, model_max_length=10**6)


def train_lm(problems: list[dict[str, str]], tokenizer, recipe: ArithmeticRecipe, progress: bool = True):
    """Train a tiny GPT-2 on ``prompt + answer + EOS`` rows, the loss on the answer and EOS only."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(recipe.seed)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_positions=recipe.n_positions, n_embd=recipe.n_embd, n_layer=recipe.n_layer,
        n_head=recipe.n_head, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    prompts = tokenizer([r["prompt"] for r in problems], add_special_tokens=False)["input_ids"]
    answers = tokenizer([r["answer"] for r in problems], add_special_tokens=False)["input_ids"]
    ids, attention = pad_batch([p + a + [tokenizer.eos_token_id] for p, a in zip(prompts, answers)],
                               tokenizer.pad_token_id, "right")  # (N, W)
    labels = torch.full_like(ids, -100)  # (N, W): the target of position t is token t + 1
    for i, (p, a) in enumerate(zip(prompts, answers)):
        labels[i, len(p) - 1 : len(p) + len(a)] = ids[i, len(p) : len(p) + len(a) + 1]
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, recipe.train_steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, recipe.train_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    generator = torch.Generator().manual_seed(recipe.seed)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(recipe.train_steps), desc="training arithmetic LM", disable=not progress, unit="step",
               mininterval=1.0)
    for step in bar:
        rows = torch.randint(len(ids), (recipe.batch_size,), generator=generator)  # (B,)
        logits = model(input_ids=ids[rows], attention_mask=attention[rows]).logits  # (B, W, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[rows].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model, losses


@torch.inference_mode()
def held_out_accuracy(model, tokenizer, problems: list[dict[str, str]], k: int = 8, seed: int = 0,
                      max_new_tokens: int = 8) -> dict[str, float]:
    """Exact-match accuracy of ``model`` on ``problems`` with ``generate``: ``greedy``, ``sampled`` (temperature 1,
    the mean over ``k`` samples per problem) and ``pass_at_k`` (a right answer among the ``k`` samples).

    A quick check recorded in the manifest; :mod:`agents.text.verifiable` measures the same through the env.
    """
    torch.manual_seed(seed)
    ids, mask = pad_batch(tokenizer([r["prompt"] for r in problems], add_special_tokens=False)["input_ids"],
                          tokenizer.pad_token_id)  # (P, T) left-padded
    common = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    greedy = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, **common)  # (P, T + new)
    sampled = model.generate(input_ids=ids.repeat_interleave(k, 0), attention_mask=mask.repeat_interleave(k, 0),
                             do_sample=True, top_k=0, top_p=1.0, temperature=1.0, **common)  # (P·k, T + new)

    def right(out, group: int) -> torch.Tensor:
        texts = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
        return torch.tensor([_first_integer(t) == problems[i // group]["answer"] for i, t in enumerate(texts)],
                            dtype=torch.float).view(-1, group)  # (P, group)

    ok = right(sampled, k)  # (P, k)
    return {"greedy": float(right(greedy, 1).mean()), "sampled": float(ok.mean()),
            f"pass_at_{k}": float((ok.sum(1) > 0).float().mean())}


def _first_integer(text: str) -> str | None:
    found = re.search(ANSWER_PATTERN, text)
    return found.group(1) if found else None
