"""What a text env is made of, shared by the single env and the batched one: tokenizer, prompts, reward, limits.

A :class:`TextTask` owns no model weights (the env needs only the tokenizer to step; the reference model lives
in the KL wrapper and the reward model in the reward), so making an env is cheap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from gymnasium import spaces
from transformers import AutoConfig

from textenv.lm import load_pretrained, context_length, load_tokenizer
from textenv.rewards import Reward, as_reward


def load_prompts(prompts: Sequence[str] | str | os.PathLike, split: str | None = None) -> list[str]:
    """Prompts from a list, or from a ``.jsonl`` file of ``{"prompt": ...}`` lines (optional ``"split"`` field)."""
    if isinstance(prompts, (str, os.PathLike)):
        path = Path(prompts)
        if path.suffix != ".jsonl" or not path.is_file():
            raise FileNotFoundError(f"prompts={str(prompts)!r}: expected a list of strings or an existing .jsonl file")
        loaded = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                prompt = record["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: expected a JSON object with a \"prompt\" string, got {line[:80]!r}") from error
            if split is None or record.get("split", split) == split:
                loaded.append(prompt)
        prompts = loaded
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty; a text env needs at least one prompt")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt {i} is {prompt!r}; prompts must be non-empty strings")
    return prompts


class TextTask:
    """Tokenizer, vocabulary, prompts, reward and length limits of a text-generation env.

    Args:
        model: name or path of the causal LM whose tokenizer and vocabulary define the env.
        reward_model: path of a HF sequence-classification model, a callable or a reward object.
        prompts: list of prompts or a ``.jsonl`` path.
        max_new_tokens: token cap of a completion (the episode is truncated there).
        max_prompt_tokens: longest prompt accepted; default: the model's context minus ``max_new_tokens``, at most 64.
        stop_strings: strings that terminate the episode once the completion contains one (EOS always does).
        dense: reward each token with ``score(prefix_t) - score(prefix_{t-1})`` (telescopes to the final score).
        gold_reward: a reward that is reported at the episode end as ``info["reward_gold"]`` and **not** added to
            the reward: the true objective beside a learned proxy, so over-optimization shows in every run.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        reward_model,
        prompts: Sequence[str] | str | os.PathLike,
        max_new_tokens: int = 24,
        max_prompt_tokens: int | None = None,
        stop_strings: Sequence[str] = (),
        dense: bool = False,
        gold_reward=None,
    ):
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 1")
        self.model_name = str(model)
        self.tokenizer = load_tokenizer(model)
        config = load_pretrained(AutoConfig, model, "model config")
        self.vocab_size = int(config.vocab_size)
        self.context = context_length(config)
        if self.context is not None and max_new_tokens >= self.context:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context of {self.context} tokens")
        room = (self.context - max_new_tokens) if self.context else 64
        self.max_prompt_tokens = int(max_prompt_tokens or min(64, room))
        if self.max_prompt_tokens > room:
            raise ValueError(
                f"max_prompt_tokens={self.max_prompt_tokens} + max_new_tokens={max_new_tokens} exceeds the model's "
                f"context of {self.context} tokens"
            )
        self.max_new_tokens = int(max_new_tokens)
        self.prompts = load_prompts(prompts)
        self.reward: Reward = as_reward(reward_model)
        self.gold: Reward | None = None if gold_reward is None else as_reward(gold_reward)
        self.stop_strings = tuple(stop_strings)
        self.dense = bool(dense)
        self.eos_token_id = self.tokenizer.eos_token_id
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id >= self.vocab_size:  # a pad token added past the model's embeddings
            self.pad_token_id = self.eos_token_id
        self.length = self.max_prompt_tokens + self.max_new_tokens
        self.observation_space = spaces.Dict(
            {
                "input_ids": spaces.Box(0, self.vocab_size - 1, shape=(self.length,), dtype=np.int64),
                "attention_mask": spaces.Box(0, 1, shape=(self.length,), dtype=np.int64),
            }
        )
        self.action_space = spaces.Discrete(self.vocab_size)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a prompt, refusing empty ones and ones too long for the observation or the context."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt {prompt!r} is empty; expected a non-empty string")
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_prompt_tokens:
            limit = f"the model's context of {self.context} tokens" if self.context else "the env's limit"
            raise ValueError(
                f"prompt of {len(ids)} tokens exceeds max_prompt_tokens={self.max_prompt_tokens} "
                f"({limit} minus max_new_tokens={self.max_new_tokens}): {prompt[:60]!r}"
            )
        return ids

    def sample_prompt(self, rng: np.random.Generator) -> str:
        return self.prompts[int(rng.integers(len(self.prompts)))]

    def check_action(self, action) -> int:
        if isinstance(action, np.ndarray) and action.shape == ():
            action = action.item()
        if not isinstance(action, (int, np.integer)) or isinstance(action, bool) or not 0 <= action < self.vocab_size:
            raise ValueError(
                f"action {action!r} is outside Discrete({self.vocab_size}); the policy's vocabulary must match "
                f"the env's tokenizer ({self.model_name})"
            )
        return int(action)

    def decode(self, completion_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(completion_ids, skip_special_tokens=True)

    def hits_stop(self, completion: str) -> bool:
        return any(stop in completion for stop in self.stop_strings)
