"""Loading causal LMs and tokenizers by name or path, and stepping a batch of them with a KV cache.

Every model in textenv loads through ``from_pretrained(name_or_path)``: the built-in world's LM is a directory
like any other, and a user with network access may pass ``"gpt2"``. A path that does not exist fails at once
(no hub retries); a hub id fails at once too when ``HF_HUB_OFFLINE=1``. A PEFT (LoRA) adapter folder (no
``config.json``; ``adapter_config.json`` names its base) is accepted wherever a model is: its tokenizer is its own
or its base's, its config is its base's, and :func:`load_causal_lm` merges it into its base.

:class:`IncrementalLM` keeps a batch of ragged sequences in one ``DynamicCache`` so that every new token costs
one forward of shape ``(B, 1)``, whatever the length so far, and rows can restart with new prompts at any step
(what a vector env with autoreset needs). Both the env's reference model and an agent's sampler use it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache, DynamicLayer


def _looks_like_path(name: str) -> bool:
    """A local path rather than a hub id ``owner/name``."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


@contextlib.contextmanager
def quiet_progress():
    """Silence transformers' per-file progress bars ("Loading weights", "Writing model shards") for a block."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def save_pretrained(obj, path: str | os.PathLike) -> Path:
    """``obj.save_pretrained(path)`` (a model, a tokenizer, a policy) without transformers' "Writing model shards"
    progress bars: our own saves are a detail of a larger step that has its own progress bar."""
    with quiet_progress():
        obj.save_pretrained(path)
    return Path(path)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "left",
              device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged token-id lists as one batch ``ids`` ``(B, T)``, ``T`` the longest, padded with ``pad_id`` on
    ``side``, and its attention mask ``(B, T)`` (1 on tokens, 0 on padding), both ``torch.long``.

    ``"left"`` puts every row's last token in the last column (prefill before generating; position ids are then
    ``mask.cumsum(-1) - 1``); ``"right"`` puts every row's first token in the first column (teacher forcing).

    >>> ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    >>> pad_batch([[5, 6, 7], [8]], pad_id=0, side="right")[0].tolist()
    [[5, 6, 7], [8, 0, 0]]
    """
    if side not in ("left", "right"):
        raise ValueError(f"side={side!r} must be 'left' or 'right'")
    B, T = len(sequences), max((len(s) for s in sequences), default=0)
    ids = torch.full((B, T), pad_id, dtype=torch.long, device=device)  # (B, T)
    mask = torch.zeros((B, T), dtype=torch.long, device=device)  # (B, T)
    for i, seq in enumerate(sequences):
        if len(seq):
            where = slice(T - len(seq), T) if side == "left" else slice(0, len(seq))
            ids[i, where] = torch.as_tensor(seq, dtype=torch.long)
            mask[i, where] = 1
    return ids, mask


def completion_batch(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                     pad_id: int) -> dict[str, torch.Tensor]:
    """Token ids of ``prompt + completion`` pairs as one teacher-forcing batch: ``input_ids``/``attention_mask``
    ``(B, L)`` (right-padded), ``prompt_len`` ``(B,)``, ``actions`` ``(B, T)`` (the completion tokens,
    left-aligned) and ``mask`` ``(B, T)`` (bool, True on completion tokens). What :func:`sequence_logprobs` reads.

    >>> batch = completion_batch([[1, 2], [3]], [[4], [5, 6]], pad_id=0)
    >>> batch["input_ids"].tolist(), batch["prompt_len"].tolist(), batch["actions"].tolist()
    ([[1, 2, 4], [3, 5, 6]], [2, 1], [[4, 0], [5, 6]])
    """
    ids, attention = pad_batch([list(p) + list(c) for p, c in zip(prompts, completions)], pad_id, "right")  # (B, L)
    actions, mask = pad_batch(completions, pad_id, "right")  # (B, T)
    return {"input_ids": ids, "attention_mask": attention, "prompt_len": torch.tensor([len(p) for p in prompts]),
            "actions": actions, "mask": mask.bool()}


def at_completion(x: torch.Tensor, prompt_len: torch.Tensor, T: int) -> torch.Tensor:
    """``x`` ``(B, L, D)`` (logits, hidden states) read where each completion token is predicted: position
    ``prompt_len − 1 + t`` for ``t < T`` (clamped to the last column), ``(B, T, D)``."""
    B, L, D = x.shape
    positions = (prompt_len.view(-1, 1).to(x.device) - 1 + torch.arange(T, device=x.device)).clamp(max=L - 1)  # (B, T)
    return x.gather(1, positions[..., None].expand(B, T, D))  # (B, T, D)


def sequence_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(B,)`` summed log-probability of each completion of ``batch`` (:func:`completion_batch`'s layout) under
    ``model``, one teacher-forced forward, with gradients unless disabled.

    ``model`` is a causal LM (anything called with ``input_ids``/``attention_mask`` that returns ``.logits``);
    its ``temperature`` attribute, if it has one (an agents ``LMPolicy``), divides the logits, as when it samples.
    """
    ids, actions = batch["input_ids"], batch["actions"]
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits  # (B, L, V)
    logits = at_completion(logits, batch["prompt_len"], actions.shape[1])  # (B, T, V)
    logprobs = torch.log_softmax(logits.float() / getattr(model, "temperature", 1.0), -1)  # (B, T, V)
    logprob = logprobs.gather(-1, actions.long().to(logprobs.device)[..., None]).squeeze(-1)  # (B, T)
    return (logprob * batch["mask"].to(logprob.device)).sum(1)


def load_pretrained(loader, name_or_path: str | os.PathLike, what: str, **kwargs):
    """``loader.from_pretrained(name_or_path)``, local files first; fails fast for a missing path, or for a hub
    id that is not cached while ``HF_HUB_OFFLINE`` is set, instead of waiting on hub retries."""
    name = str(name_or_path)
    try:
        with quiet_progress():
            return loader.from_pretrained(name, local_files_only=True, **kwargs)
    except OSError as local_error:
        if _looks_like_path(name):
            raise FileNotFoundError(
                f"cannot load {what} from {name!r}: no such model directory (expected a folder written by "
                f"save_pretrained, with config.json and weights, or a PEFT adapter folder with adapter_config.json)"
            ) from local_error
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise FileNotFoundError(
                f"cannot load {what} {name!r}: it is not a local directory, not in the local Hugging Face cache, "
                f"and HF_HUB_OFFLINE is set; pass the path of a saved model (the built-in world's LM is the default)"
            ) from local_error
    return loader.from_pretrained(name, **kwargs)


# ------------------------------------------------------------------------------------------- PEFT adapter folders
ADAPTER_CONFIG = "adapter_config.json"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def adapter_base(name_or_path: str | os.PathLike) -> str | None:
    """``base_model_name_or_path`` of a PEFT (LoRA) adapter folder, or None when ``name_or_path`` is not one.

    An adapter folder holds ``adapter_config.json`` and the adapter weights but no ``config.json`` (what
    ``PeftModel.save_pretrained`` writes, and what :meth:`agents.policies.lm.LMPolicy.save_pretrained` writes for a
    LoRA policy). Reading this needs no ``peft``.
    """
    folder = Path(name_or_path)
    if not (folder / ADAPTER_CONFIG).is_file() or (folder / "config.json").is_file():
        return None
    try:
        base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{folder / ADAPTER_CONFIG} is not a JSON object; is the adapter folder damaged?") from error
    if not isinstance(base, str) or not base:
        raise ValueError(
            f"{folder / ADAPTER_CONFIG} names no base_model_name_or_path; a PEFT adapter folder loads on the base "
            f"model it names there"
        )
    if _looks_like_path(base) and not Path(base).expanduser().exists():
        raise FileNotFoundError(
            f"{folder / ADAPTER_CONFIG} names base_model_name_or_path={base!r}, which does not exist (moved or "
            f"deleted?); point it at the base model's folder"
        )
    return base


def adapter_chain(name_or_path: str | os.PathLike) -> tuple[list[str], str]:
    """``(adapters, base)``: the PEFT adapter folders from ``name_or_path`` down (outermost first; empty when it is
    no adapter) and the model at the bottom. An adapter may sit on another adapter folder (a LoRA run started from
    a LoRA run's policy); a chain that loops is refused."""
    adapters, current = [], str(name_or_path)
    while (base := adapter_base(current)) is not None:
        adapters.append(current)
        if base in adapters or len(adapters) > 32:
            raise ValueError(f"PEFT adapter folders {adapters} name each other as base_model_name_or_path in a loop "
                             f"(via {base!r}); an adapter's base must lead to a model folder")
        current = base
    return adapters, current


def require_peft(name: str | os.PathLike):
    """The ``peft`` module, or an ``ImportError`` saying that ``name`` (an adapter folder, or LoRA) needs it."""
    try:
        import peft
    except ImportError as error:
        raise ImportError(
            f"{str(name)!r} needs the `peft` package (LoRA adapters), which is not installed; `pip install peft` "
            f"(or textenv's dev extra)"
        ) from error
    return peft


def load_config(name_or_path: str | os.PathLike, what: str = "model config"):
    """``AutoConfig.from_pretrained``; for a PEFT adapter folder, its base model's config."""
    return load_pretrained(AutoConfig, adapter_chain(name_or_path)[1], what)


def load_tokenizer(name_or_path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained`` with a pad token guaranteed (EOS is used when the tokenizer has none).

    A PEFT adapter folder supplies its own tokenizer when it holds tokenizer files, else its base model's.
    """
    adapters, base = adapter_chain(name_or_path)
    source = next((a for a in adapters if any((Path(a) / f).is_file() for f in _TOKENIZER_FILES)), base)
    tokenizer = load_pretrained(AutoTokenizer, source, "tokenizer")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer of {str(name_or_path)!r} has no EOS token; a text env needs one to end episodes")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` in eval mode on ``device``.

    A PEFT (LoRA) adapter folder loads as its base (itself loaded by this function, so it may be an adapter
    folder too) with the adapter **merged** into the weights: a plain ``PreTrainedModel``, as fast as the base and
    stepped by :class:`IncrementalLM` like any other (an env's reference model, a sampler's LM). Its outputs equal
    the unmerged base + adapter's up to float rounding. Needs ``peft`` (an ``ImportError`` says so otherwise).
    """
    adapters, base = adapter_chain(name_or_path)
    model = load_pretrained(AutoModelForCausalLM, base, "causal LM")
    for adapter in reversed(adapters):  # the innermost first
        model = load_adapter(model, adapter).merge_and_unload()
    if adapters:  # what it is now: that adapter folder's model (a new LoRA adapter on it names it as its base)
        model.name_or_path = str(name_or_path)
    return model.to(device).eval()


def load_adapter(model: PreTrainedModel, adapter_path: str | os.PathLike, is_trainable: bool = False):
    """``peft.PeftModel.from_pretrained(model, adapter_path)``: the adapter folder's weights on ``model`` (its
    base), unmerged; ``is_trainable`` keeps the adapter's weights trainable (continuing a LoRA run)."""
    peft = require_peft(adapter_path)
    with quiet_progress():
        return peft.PeftModel.from_pretrained(model, str(adapter_path), is_trainable=is_trainable)


def context_length(model_or_config) -> int | None:
    """The model's maximum number of positions, or None when its config does not say."""
    config = getattr(model_or_config, "config", model_or_config)
    for field in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class IncrementalLM:
    """A batch of ragged token sequences stepped through a causal LM with one shared KV cache.

    Rows are left-padded inside the cache; ``attention_mask`` hides padding and the stale past of rows that
    restarted, and ``position_ids`` are kept per row, so every row sees exactly what the unpadded model sees
    (checked against a full forward in the tests). Leading columns no row attends to are dropped on reset,
    so the cache never grows past the longest live sequence.

    After :meth:`reset_rows` or :meth:`step`, :attr:`next_logprobs` holds ``log p(next token | row so far)``
    for every row, shape ``(B, V)``.
    """

    def __init__(self, model: PreTrainedModel, batch_size: int, pad_token_id: int, max_positions: int | None = None):
        self.model = model
        self.max_positions = max_positions
        self.batch_size = batch_size
        self.pad_token_id = pad_token_id
        self.device = next(model.parameters()).device
        self.cache: DynamicCache | None = None
        self.attention_mask = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)  # (B, L)
        self.positions = torch.zeros(batch_size, dtype=torch.long, device=self.device)  # (B,) next position id
        self.next_logprobs: torch.Tensor | None = None  # (B, V)

    @torch.inference_mode()
    def reset_rows(self, rows: torch.Tensor | list[int], prompts: list[list[int]]) -> None:
        """Restart ``rows`` with the given prompt token ids (prefilled in one batched forward)."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.device).view(-1)  # (R,)
        if len(rows) != len(prompts) or len(rows) == 0:
            raise ValueError(f"reset_rows needs one prompt per row, got {len(rows)} rows and {len(prompts)} prompts")
        if int(rows.min()) < 0 or int(rows.max()) >= self.batch_size or len(rows.unique()) != len(rows):
            raise ValueError(f"reset_rows got rows {rows.tolist()}; expected distinct row indices in [0, {self.batch_size})")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("reset_rows got an empty prompt; every row needs at least one token")
        # identical prompts (a group of K completions of one prompt) are prefilled once and their cache rows repeated
        unique: dict[tuple[int, ...], int] = {}
        copy_of = torch.tensor([unique.setdefault(tuple(p), len(unique)) for p in prompts], device=self.device)  # (R,)
        ids, mask = pad_batch(list(unique), self.pad_token_id, "left", self.device)  # (U, P): last column = last token
        P = ids.shape[1]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # (U, P)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True, logits_to_keep=1
        )
        logprobs = F.log_softmax(out.logits[:, -1].float(), dim=-1)[copy_of]  # (R, V)
        mask = mask[copy_of]  # (R, P)
        if len(unique) < len(prompts):
            for layer in out.past_key_values.layers:
                for name in ("keys", "values"):
                    setattr(layer, name, getattr(layer, name)[copy_of])  # (R, H, P, D)
        if self.next_logprobs is None:
            self.next_logprobs = torch.zeros(self.batch_size, logprobs.shape[-1], device=self.device)
        self.next_logprobs[rows] = logprobs
        self.positions[rows] = mask.sum(-1)
        cache = out.past_key_values
        _check_dynamic(cache)
        if len(rows) == self.batch_size and torch.equal(rows, torch.arange(self.batch_size, device=self.device)):
            self.cache, self.attention_mask = cache, mask  # every row, in order: the prefill is the whole cache
        elif self.cache is None:  # first call, some rows or a permutation: scatter into a cache of all B rows
            self.attention_mask = mask.new_zeros((self.batch_size, P))  # (B, P); rows not reset attend to nothing
            self.attention_mask[rows] = mask
            for layer in cache.layers:
                for name in ("keys", "values"):
                    new = getattr(layer, name)  # (R, H, P, D)
                    full = new.new_zeros((self.batch_size, *new.shape[1:]))  # (B, H, P, D)
                    full[rows] = new
                    setattr(layer, name, full)
            self.cache = cache
        else:
            self._splice(rows, cache, mask)

    def _splice(self, rows: torch.Tensor, new_cache: DynamicCache, new_mask: torch.Tensor) -> None:
        """Write a prefilled cache into ``rows``, right-aligned, growing or trimming the shared cache."""
        L, P = self.attention_mask.shape[1], new_mask.shape[1]
        grow = max(0, P - L)
        self.attention_mask = F.pad(self.attention_mask, (grow, 0))
        self.attention_mask[rows] = 0
        self.attention_mask[rows, -P:] = new_mask
        keep_from = int((self.attention_mask.sum(0) > 0).nonzero()[0])  # first column some row attends to
        self.attention_mask = self.attention_mask[:, keep_from:]
        for layer, new in zip(self.cache.layers, new_cache.layers):
            for name in ("keys", "values"):
                full = F.pad(getattr(layer, name), (0, 0, grow, 0))  # (B, H, L + grow, D)
                full[rows, :, -P:] = getattr(new, name)
                setattr(layer, name, full[:, :, keep_from:].contiguous())

    def _step_positions(self) -> torch.Tensor:
        """Position ids of the fed tokens, ``(B, 1)``; rows past the context (frozen rows fed padding) are clamped."""
        positions = self.positions.view(-1, 1)
        return positions if self.max_positions is None else positions.clamp(max=self.max_positions - 1)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row, shape ``(B,)``; returns the next-token log-probs ``(B, V)``."""
        if self.cache is None:
            raise RuntimeError("IncrementalLM.step called before reset_rows")
        self.attention_mask = F.pad(self.attention_mask, (0, 1), value=1)
        out = self.model(
            input_ids=tokens.view(-1, 1).to(self.device),
            attention_mask=self.attention_mask,
            position_ids=self._step_positions(),
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache = out.past_key_values
        self.positions += 1
        self.next_logprobs = F.log_softmax(out.logits[:, -1].float(), dim=-1)
        return self.next_logprobs

    @torch.inference_mode()
    def extend(self, tokens: Sequence[Sequence[int]]) -> torch.Tensor:
        """Append a ragged list of tokens to each row (at least one per row; a multi-turn env's reply after the
        agent's token) in one forward ``(B, k)``, ``k`` the longest list; returns the next-token log-probs ``(B, V)``.

        Shorter lists are left-padded inside the new columns; the padding is masked and skipped by the position
        ids, so each row sees exactly its tokens in order (checked against a full forward in the tests).
        """
        if self.cache is None:
            raise RuntimeError("IncrementalLM.extend called before reset_rows")
        if len(tokens) != self.batch_size or any(len(t) == 0 for t in tokens):
            raise ValueError(f"extend needs a non-empty token list for each of the {self.batch_size} rows, got "
                             f"{[len(t) for t in tokens]}")
        ids, mask = pad_batch(tokens, self.pad_token_id, "left", self.device)  # (B, k)
        self.attention_mask = torch.cat([self.attention_mask, mask], 1)
        positions = self.positions.view(-1, 1) + (mask.cumsum(-1) - 1).clamp(min=0)  # (B, k)
        if self.max_positions is not None:
            positions = positions.clamp(max=self.max_positions - 1)
        out = self.model(input_ids=ids, attention_mask=self.attention_mask, position_ids=positions,
                         past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        self.positions += mask.sum(-1)
        self.next_logprobs = F.log_softmax(out.logits[:, -1].float(), dim=-1)
        return self.next_logprobs


def _check_dynamic(cache) -> None:
    if not isinstance(cache, DynamicCache) or not all(type(layer) is DynamicLayer for layer in cache.layers):
        raise NotImplementedError(
            f"IncrementalLM needs a model whose cache is a plain DynamicCache (full attention); got "
            f"{type(cache).__name__} with layers {sorted({type(l).__name__ for l in getattr(cache, 'layers', [])})}"
        )
