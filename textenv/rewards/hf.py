"""Hugging Face sequence-classification reward models (``num_labels=1``), optionally normalised.

A checkpoint trained by :mod:`textenv.rm` carries its normalisation statistics in ``config.json`` under
``reward_normalization`` (``{"mean", "std", "count", "data"}``, measured on held-out completions), so one
directory is all the env needs; any other ``num_labels=1`` checkpoint (TRL's ``RewardTrainer``, or OpenRLHF and
DeepSpeed-Chat models saved in the Hugging Face layout) loads too, read the way its trainer read it (see
:class:`HFRewardModel`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

NORMALIZATION_KEY = "reward_normalization"


def check_tokenizer_fits(tokenizer, config, name: str) -> None:
    """Refuse a tokenizer that produces ids the model has no embedding for."""
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise ValueError(
            f"tokenizer of {name!r} has {len(tokenizer)} tokens but the model's vocab_size is {vocab}: they do not "
            f"belong together (ids >= {vocab} would index past the embeddings); save the model and its own tokenizer "
            f"in the same directory"
        )


def _load_scoring_model(name_or_path):
    """``AutoModelForSequenceClassification`` with one output, refusing a checkpoint without a trained score head.

    ``num_labels=1`` is passed so that a causal-LM config (which defaults to two labels) or a LoRA adapter with a
    ``[1, d]`` head loads; a checkpoint that *is* a classifier with another number of labels is refused first.
    A PEFT (LoRA) adapter folder (TRL's ``RewardTrainer`` with ``peft_config``) loads on its base when ``peft`` is
    installed; its score head must be among the adapter's weights (``modules_to_save``).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from textenv.lm import load_pretrained

    name = str(name_or_path)
    adapter = _adapter_weight_names(name)  # None unless a PEFT (LoRA) adapter folder
    if adapter is not None:
        base = json.loads((Path(name) / "adapter_config.json").read_text())["base_model_name_or_path"]
    else:
        base = name
    config = load_pretrained(AutoConfig, base, "reward model config")
    architectures = getattr(config, "architectures", None) or []
    if config.num_labels != 1 and any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ValueError(
            f"reward model {base!r} has num_labels={config.num_labels}; a reward model must output one score "
            f"(num_labels=1)"
        )
    model, info = load_pretrained(
        AutoModelForSequenceClassification, name, "reward model", num_labels=1, output_loading_info=True
    )
    trunk = model.base_model_prefix + "."
    head = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(trunk))
    if adapter is not None:  # the loading info is the adapter's: the head comes from the adapter or a classifier base
        base_has_head = any(a.endswith("ForSequenceClassification") for a in architectures)
        head = [] if base_has_head or any(".score." in f".{k}" for k in adapter) else ["score.weight"]
    if head:
        where = (
            f"a LoRA adapter on {base!r} ({', '.join(architectures)}) that saves no score head (train it with "
            f"modules_to_save=['score'], as peft's task_type='SEQ_CLS' does)"
            if adapter is not None
            else f"a causal LM or a bare trunk ({', '.join(architectures) or 'no architectures'})"
        )
        raise ValueError(
            f"{name!r} has no trained score head (weights {head} are missing from the checkpoint, so they would be "
            f"random): it looks like {where}, not a reward model; expected a sequence-classification checkpoint "
            f"with num_labels=1 (written by `textenv train-rm` or TRL's RewardTrainer); train one from this model "
            f"with `textenv train-rm`"
        )
    return model


def _adapter_weight_names(path: str) -> list[str] | None:
    """Parameter names saved in a PEFT adapter folder, or None when ``path`` is not one."""
    folder = Path(path)
    if not (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file():
        return None
    try:
        import peft  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"{path!r} is a PEFT (LoRA) adapter, which needs the `peft` package to load; `pip install peft`"
        ) from error
    if (folder / "adapter_model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as f:
            return list(f.keys())
    return list(torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True))


class HFRewardModel:
    """A Hugging Face ``AutoModelForSequenceClassification`` reward model with ``num_labels=1``.

    ## Scoring

    Each text ``prompt + completion`` is tokenised (with the tokenizer's own special tokens), EOS is appended when
    ``append_eos`` is on, and the score is read at the **last token of the attention mask**: the last real token
    of the right-padded row. A text therefore scores the same alone or in any batch, whatever the checkpoint's
    ``config.pad_token_id`` is and whether the text itself contains the pad or EOS id (Hugging Face's own pooling,
    "rightmost id that is not ``config.pad_token_id``", is used only by models without a ``score`` head, such as
    encoders that pool their first token).

    A text longer than ``max_length`` keeps its **end** (left truncation; EOS, when appended, is kept too), so the
    completion is what gets scored; a warning says so the first time it happens for a model.

    ## EOS (``append_eos``)

    TRL's ``RewardTrainer`` appends the tokenizer's EOS to every text it trains on, and so do OpenRLHF's reward
    dataset and DeepSpeed-Chat's step-2 data: their models learned to read the score at EOS. textenv's own trainer
    (:mod:`textenv.rm`) scores ``prompt + completion`` without EOS. ``append_eos=None`` (default) follows the
    checkpoint: as its ``config.json`` says when it has an ``append_eos`` entry (textenv's trainer writes
    ``false``, mid-training checkpoints included), off for a textenv-trained checkpoint (its ``config.json``
    carries ``reward_normalization``), off
    when EOS is the model's pad id (Hugging Face's pooling, which TRL trains with, skips pad ids, so such a model
    was trained reading the token before EOS), on otherwise. Pass ``True``/``False`` to force it (e.g. ``True``
    for an OpenRLHF model whose pad is its EOS: OpenRLHF reads the score at EOS even then).

    ## Loading

    The checkpoint is loaded with ``num_labels=1``; one without a trained score head (a causal LM, a bare trunk)
    is refused rather than given a random one, as is a classifier with another number of labels. A tokenizer
    without a pad token gets its EOS as pad, and a model whose ``config.pad_token_id`` is None gets the
    tokenizer's.

    Args:
        name_or_path: directory written by ``save_pretrained`` (or a hub id, where a hub is reachable).
        device: where the model runs.
        batch_size: texts per forward pass.
        max_length: keep at most the last this many tokens of a text (default: the model's context length).
        normalize: ``None`` (default) applies the checkpoint's stored ``reward_normalization`` statistics
            ``(score - mean) / std`` when it has them; ``True`` requires them; ``False`` returns raw scores.
        append_eos: append the tokenizer's EOS to every text before scoring; ``None`` (default) decides from
            the checkpoint as described above. The choice made is in :attr:`append_eos`.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        max_length: int | None = None,
        normalize: bool | None = None,
        append_eos: bool | None = None,
    ):
        from textenv.lm import load_tokenizer

        tokenizer = load_tokenizer(name_or_path)
        model = _load_scoring_model(name_or_path)
        self._setup(model, tokenizer, str(name_or_path), device, batch_size, max_length, normalize, append_eos)

    @classmethod
    def from_loaded(cls, model, tokenizer, name: str = "in-memory reward model", device="cpu", batch_size: int = 64,
                    max_length: int | None = None, normalize: bool | None = None,
                    append_eos: bool | None = False) -> HFRewardModel:
        """Wrap a model and tokenizer already in memory (e.g. one being trained by :mod:`textenv.rm`).

        ``append_eos`` defaults to False here, textenv's own convention: a model in training carries no
        ``reward_normalization`` yet, so the checkpoint rule would take it for a foreign one. Pass None to apply
        the constructor's rule, or True for a model trained with EOS appended.
        """
        self = cls.__new__(cls)
        self._setup(model, tokenizer, name, device, batch_size, max_length, normalize, append_eos)
        return self

    def _setup(self, model, tokenizer, name, device, batch_size, max_length, normalize, append_eos) -> None:
        from textenv.lm import context_length

        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"HFRewardModel batch_size={batch_size!r} must be an integer >= 1")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
            raise ValueError(f"HFRewardModel max_length={max_length!r} must be an integer >= 2 or None")
        if append_eos not in (None, True, False):
            raise TypeError(
                f"HFRewardModel append_eos={append_eos!r} must be True, False or None (from the checkpoint)"
            )
        if model.config.num_labels != 1:
            raise ValueError(
                f"reward model {name!r} has num_labels={model.config.num_labels}; a reward model "
                f"must output one score (num_labels=1)"
            )
        check_tokenizer_fits(tokenizer, model.config, name)
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ValueError(f"tokenizer of reward model {name!r} has neither a pad nor an EOS token")
            tokenizer.pad_token = tokenizer.eos_token
        self.name, self.tokenizer, self.model = name, tokenizer, model
        self.tokenizer.padding_side = "right"
        self.model.to(device).eval()
        text_config = self.model.config.get_text_config()
        if text_config.pad_token_id is None:
            text_config.pad_token_id = self.tokenizer.pad_token_id
        stats = getattr(self.model.config, NORMALIZATION_KEY, None)
        if append_eos is None and isinstance(getattr(self.model.config, "append_eos", None), bool):
            append_eos = self.model.config.append_eos  # written by the trainer (textenv's own: False)
        if append_eos is None:
            append_eos = not stats and self.tokenizer.eos_token_id not in (None, text_config.pad_token_id)
        if append_eos and self.tokenizer.eos_token_id is None:
            raise ValueError(f"append_eos=True but the tokenizer of reward model {name!r} has no EOS token")
        self.append_eos = bool(append_eos)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = max_length or context_length(self.model)
        if normalize and not stats:
            raise ValueError(
                f"normalize=True but reward model {self.name!r} stores no {NORMALIZATION_KEY!r} statistics in its "
                f"config.json; train it with `textenv train-rm` (which measures them) or pass normalize=False"
            )
        self.normalized = bool(stats) and normalize is not False
        self.mean, self.std = (float(stats["mean"]), float(stats["std"])) if self.normalized else (0.0, 1.0)
        self._warned_truncation = False
        self.__name__ = f"HFRewardModel({self.name})"

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids as scored: special tokens, EOS when :attr:`append_eos`, the last ``max_length`` kept."""
        eos = self.tokenizer.eos_token_id
        limit = None if self.max_length is None else self.max_length - int(self.append_eos)
        rows = self.tokenizer(list(texts))["input_ids"]
        long = [i for i, row in enumerate(rows) if limit is not None and len(row) > limit]
        if long:
            if not self._warned_truncation:
                warnings.warn(
                    f"reward model {self.name!r}: {len(long)} text(s) longer than max_length={self.max_length} tokens "
                    f"(the longest {max(len(rows[i]) for i in long)}); their start is cut off so that the "
                    f"completion is scored (warned once per model)",
                    stacklevel=3,
                )
                self._warned_truncation = True
            side = self.tokenizer.truncation_side
            self.tokenizer.truncation_side = "left"  # keeps the special tokens, cuts the text's start
            try:
                cut = self.tokenizer([texts[i] for i in long], truncation=True, max_length=limit)["input_ids"]
            finally:
                self.tokenizer.truncation_side = side
            for i, row in zip(long, cut):
                rows[i] = row
        if self.append_eos:
            rows = [row if row and row[-1] == eos else row + [eos] for row in rows]
        return rows

    def _scores(self, rows: list[list[int]]) -> torch.Tensor:
        """Scores ``(B,)`` of token-id rows, each read at its last token."""
        B, T = len(rows), max(len(r) for r in rows)
        ids = torch.full((B, T), self.tokenizer.pad_token_id, dtype=torch.long)  # (B, T), right-padded
        mask = torch.zeros((B, T), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        head = getattr(self.model, "score", None)
        if not isinstance(head, torch.nn.Module):  # e.g. an encoder that pools its first token: its own pooling
            return self.model(input_ids=ids, attention_mask=mask).logits[:, 0]
        trunk = self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
        hidden = trunk.last_hidden_state  # (B, T, d)
        last = mask.sum(dim=1) - 1  # (B,) index of each row's last real token
        return head(hidden[torch.arange(B, device=self.device), last])[:, 0]  # (B,)

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Raw (unnormalised) scores of whole texts."""
        if isinstance(texts, str):
            raise TypeError("score_texts takes a sequence of texts, not one string")
        rows = self.encode(texts)
        if any(len(row) == 0 for row in rows):
            empty = next(i for i, row in enumerate(rows) if not row)
            raise ValueError(f"text {empty} ({texts[empty]!r}) tokenises to no tokens; there is nothing to score")
        scores: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                scores += self._scores(rows[start : start + self.batch_size]).float().tolist()
        return scores

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        raw = self.score_texts([p + c for p, c in zip(prompts, completions)])
        return [(s - self.mean) / self.std for s in raw]
