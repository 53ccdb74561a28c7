"""Hugging Face sequence-classification reward models (``num_labels=1``), optionally normalised.

A checkpoint trained by :mod:`textenv.rm` carries its normalisation statistics in ``config.json`` under
``reward_normalization`` (``{"mean", "std", "count", "data"}``, measured on held-out completions), so one
directory is all the env needs; any other ``num_labels=1`` checkpoint (TRL, OpenRLHF, DeepSpeed-Chat) loads too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

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


class HFRewardModel:
    """A Hugging Face ``AutoModelForSequenceClassification`` reward model with ``num_labels=1``.

    The text ``prompt + completion`` is right-padded and scored at its last non-pad token, the convention of
    TRL, OpenRLHF and DeepSpeed-Chat, so their reward checkpoints load unchanged. A tokenizer without a pad
    token gets its EOS as pad, and the model's ``config.pad_token_id`` is set to match.

    Args:
        name_or_path: directory written by ``save_pretrained`` (or a hub id, where a hub is reachable).
        device: where the model runs.
        batch_size: texts per forward pass.
        max_length: truncate longer texts (default: the model's context length).
        normalize: ``None`` (default) applies the checkpoint's stored ``reward_normalization`` statistics
            ``(score - mean) / std`` when it has them; ``True`` requires them; ``False`` returns raw scores.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        max_length: int | None = None,
        normalize: bool | None = None,
    ):
        from transformers import AutoModelForSequenceClassification

        from textenv.lm import load_pretrained, load_tokenizer

        tokenizer = load_tokenizer(name_or_path)
        model = load_pretrained(AutoModelForSequenceClassification, name_or_path, "reward model")
        self._setup(model, tokenizer, str(name_or_path), device, batch_size, max_length, normalize)

    @classmethod
    def from_loaded(cls, model, tokenizer, name: str = "in-memory reward model", device="cpu", batch_size: int = 64,
                    max_length: int | None = None, normalize: bool | None = None) -> HFRewardModel:
        """Wrap a model and tokenizer already in memory (e.g. one being trained)."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, name, device, batch_size, max_length, normalize)
        return self

    def _setup(self, model, tokenizer, name, device, batch_size, max_length, normalize) -> None:
        from textenv.lm import context_length

        self.name, self.tokenizer, self.model = name, tokenizer, model
        self.tokenizer.padding_side = "right"
        self.model.to(device).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(
                f"reward model {self.name!r} has num_labels={self.model.config.num_labels}; a reward model "
                f"must output one score (num_labels=1)"
            )
        check_tokenizer_fits(self.tokenizer, self.model.config, self.name)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = max_length or context_length(self.model)
        stats = getattr(self.model.config, NORMALIZATION_KEY, None)
        if normalize and not stats:
            raise ValueError(
                f"normalize=True but reward model {self.name!r} stores no {NORMALIZATION_KEY!r} statistics in its "
                f"config.json; train it with `textenv train-rm` (which measures them) or pass normalize=False"
            )
        self.normalized = bool(stats) and normalize is not False
        self.mean, self.std = (float(stats["mean"]), float(stats["std"])) if self.normalized else (0.0, 1.0)
        self.__name__ = f"HFRewardModel({self.name})"

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Raw (unnormalised) scores of whole texts."""
        scores: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    return_tensors="pt",
                    padding=True,
                    truncation=self.max_length is not None,
                    max_length=self.max_length,
                ).to(self.device)
                scores += self.model(**batch).logits[:, 0].float().tolist()
        return scores

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        raw = self.score_texts([p + c for p, c in zip(prompts, completions)])
        return [(s - self.mean) / self.std for s in raw]
