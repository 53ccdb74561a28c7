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

from textenv.jsonl import read_jsonl
from textenv.lm import context_length, load_config, load_tokenizer
from textenv.rewards import Reward, as_reward


def load_prompts(prompts: Sequence[str] | str | os.PathLike, split: str | None = None) -> list[str]:
    """Prompts from a list, or from a ``.jsonl`` file of ``{"prompt": ...}`` lines (optional ``"split"`` field).

    Every prompt must be a non-empty string that encodes as UTF-8 (a lone surrogate such as ``"\\ud800"`` does
    not); a refused prompt is named by its index, or by ``path:line`` in a file.
    """
    if isinstance(prompts, (str, os.PathLike)):
        path = Path(prompts)
        if path.suffix != ".jsonl" or not path.is_file():
            raise FileNotFoundError(f"prompts={str(prompts)!r}: expected a list of strings or an existing .jsonl file")
        loaded = []
        for where, record in read_jsonl(path, "prompts file"):
            if not isinstance(record, dict) or "prompt" not in record:
                raise ValueError(f"{where}: expected a JSON object with a \"prompt\" string, got {json.dumps(record)[:80]!r}")
            if split is None or record.get("split", split) == split:
                _check_prompt(record["prompt"], where)
                loaded.append(record["prompt"])
        prompts = loaded
    elif not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of strings or a .jsonl path, got {type(prompts).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty; a text env needs at least one prompt")
    for i, prompt in enumerate(prompts):
        _check_prompt(prompt, f"prompt {i}")
    return prompts


def _check_prompt(prompt, where: str) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where} is {prompt!r}; prompts must be non-empty strings (not empty, not blank)")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{where} is not valid Unicode text ({error.reason} at character {error.start}): {prompt[:60]!r}; "
            f"prompts must encode as UTF-8"
        ) from None


CAP_FLAGS = ("terminated", "truncated")
_ENCODED_MAX = 100_000  # prompts whose token ids a task remembers


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_token(action, vocab_size: int, model_name: str) -> int:
    """``action`` as a token id in ``Discrete(vocab_size)`` (an integer or a 0-d integer array), else a ValueError
    naming it and the model whose vocabulary it must fit."""
    if isinstance(action, np.ndarray) and action.shape == ():
        action = action.item()
    if not isinstance(action, (int, np.integer)) or isinstance(action, bool) or not 0 <= action < vocab_size:
        raise ValueError(
            f"action {action!r} is outside Discrete({vocab_size}); the policy's vocabulary must match "
            f"the env's tokenizer ({model_name})"
        )
    return int(action)


class TextTask:
    """Tokenizer, vocabulary, prompts, reward and length limits of a text-generation env.

    Every argument and every prompt is checked here, so a bad one fails at ``make`` with its value and the
    allowed range instead of at some later ``reset`` or ``step``.

    Args:
        model: name or path of the causal LM whose tokenizer and vocabulary define the env (a PEFT adapter folder
            too: its tokenizer, or its base's, and its base's config).
        reward_model: path of a HF sequence-classification model, a callable or a reward object.
        prompts: list of prompts or a ``.jsonl`` path; each must fit in ``max_prompt_tokens`` tokens.
        max_new_tokens: token cap of a completion (an integer >= 1, less than the model's context).
        max_prompt_tokens: longest prompt accepted, an integer >= 1; default: the model's context minus
            ``max_new_tokens``, at most 64.
        stop_strings: non-empty strings that terminate the episode once the completion contains one (EOS always
            does); a single ``str`` is one stop string.
        dense: reward each token with ``score(prefix_t) - score(prefix_{t-1})`` (telescopes to the final score).
        gold_reward: a reward that is reported at the episode end as ``info["reward_gold"]`` and **not** added to
            the reward: the true objective beside a learned proxy, so over-optimization shows in every run.
        cap_flag: the flag set by the step that reaches ``max_new_tokens``: ``"terminated"`` (default,
            ``textenv/Sentiment-v1``: the completion's length is in the observation, so the cap ends the MDP and
            nothing may be bootstrapped past it) or ``"truncated"`` (``textenv/Sentiment-v0``'s behaviour).
        chat_template: render each prompt as a user turn of the tokenizer's chat template, ending with the
            assistant's header (``add_generation_prompt=True``), and end episodes on the template's end-of-turn
            token as well as EOS. ``None`` (default): when the tokenizer has a chat template; ``True``: required;
            ``False``: the prompt's plain tokens. Rewards and ``info`` see the text the user would see: the prompt
            as given (not the rendered template) and the completion decoded without special tokens.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        reward_model,
        prompts: Sequence[str] | str | os.PathLike,
        max_new_tokens: int = 24,
        max_prompt_tokens: int | None = None,
        stop_strings: Sequence[str] | str = (),
        dense: bool = False,
        gold_reward=None,
        cap_flag: str = "terminated",
        chat_template: bool | None = None,
    ):
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(f"model must be a name or path of a saved causal LM, got {type(model).__name__}")
        if not _is_int(max_new_tokens) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 1")
        if max_prompt_tokens is not None and (not _is_int(max_prompt_tokens) or max_prompt_tokens < 1):
            raise ValueError(f"max_prompt_tokens={max_prompt_tokens!r} must be an integer >= 1 (or None for the default)")
        if not isinstance(dense, (bool, np.bool_)):
            raise TypeError(f"dense={dense!r} must be a bool")
        if chat_template is not None and not isinstance(chat_template, (bool, np.bool_)):
            raise TypeError(f"chat_template={chat_template!r} must be True, False or None (use the tokenizer's if it has one)")
        if cap_flag not in CAP_FLAGS:
            raise ValueError(f"cap_flag={cap_flag!r}; expected one of {CAP_FLAGS}")
        if isinstance(stop_strings, str):
            stop_strings = (stop_strings,)
        if not isinstance(stop_strings, Sequence) or not all(isinstance(s, str) and s for s in stop_strings):
            raise ValueError(f"stop_strings={stop_strings!r} must be a string or a list of non-empty strings")
        if gold_reward is not None and not isinstance(gold_reward, (str, os.PathLike, Reward)) and not callable(gold_reward):
            raise TypeError(
                f"gold_reward must be None, a path to a reward model, a callable (prompts, completions) -> list[float] "
                f"or a reward object; got {type(gold_reward).__name__}"
            )
        self._encoded: dict[str, tuple[int, ...]] = {}
        self.prompts = load_prompts(prompts)
        self.model_name = str(model)
        self.tokenizer = load_tokenizer(model)
        config = load_config(model)  # an adapter folder: its base's config
        self.vocab_size = int(config.vocab_size)
        self.context = context_length(config)
        if self.context is not None and max_new_tokens >= self.context:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context of {self.context} tokens")
        room = (self.context - max_new_tokens) if self.context else None
        self.max_prompt_tokens = int(max_prompt_tokens if max_prompt_tokens is not None else min(64, room or 64))
        if room is not None and self.max_prompt_tokens > room:
            raise ValueError(
                f"max_prompt_tokens={self.max_prompt_tokens} + max_new_tokens={max_new_tokens} exceeds the model's "
                f"context of {self.context} tokens"
            )
        self.max_new_tokens = int(max_new_tokens)
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if chat_template and not has_template:
            raise ValueError(f"chat_template=True, but the tokenizer of {self.model_name!r} has no chat template; pass "
                             f"chat_template=False (or None) to use the plain prompt tokens")
        self.chat = uses_chat_template(self.tokenizer, chat_template)
        self._check_prompt_lengths()
        self.reward: Reward = as_reward(reward_model)
        self.gold: Reward | None = None if gold_reward is None else as_reward(gold_reward)
        self.stop_strings = tuple(stop_strings)
        self.dense = bool(dense)
        self.cap_flag = cap_flag
        self.eos_token_id = self.tokenizer.eos_token_id
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id >= self.vocab_size:  # a pad token added past the model's embeddings
            self.pad_token_id = self.eos_token_id
        turn_end = end_of_turn_ids(self.tokenizer) if self.chat else ()
        # tokens that end an episode (terminated): EOS and, with a chat template, its end-of-turn token
        self.stop_token_ids = tuple(dict.fromkeys((self.eos_token_id, *turn_end)))
        self.length = self.max_prompt_tokens + self.max_new_tokens
        self.observation_space = spaces.Dict(
            {
                "input_ids": spaces.Box(0, self.vocab_size - 1, shape=(self.length,), dtype=np.int64),
                "attention_mask": spaces.Box(0, 1, shape=(self.length,), dtype=np.int64),
            }
        )
        self.action_space = spaces.Discrete(self.vocab_size)

    def _check_prompt_lengths(self) -> None:
        """Refuse, at construction, any prompt of ``prompts`` that ``reset`` would refuse (one batched encode)."""
        if self.chat:
            lengths = [len(self._tokens(p)) for p in self.prompts]
        else:
            lengths = [len(ids) for ids in self.tokenizer(self.prompts, add_special_tokens=False)["input_ids"]]
        for i, n in enumerate(lengths):
            if n > self.max_prompt_tokens or n == 0:
                self.encode_prompt(self.prompts[i], f"prompts[{i}]")

    def encode_prompt(self, prompt: str, where: str = "prompt") -> list[int]:
        """Token ids of a prompt, refusing empty ones and ones too long for the observation or the context.

        Accepted prompts are remembered (up to ``_ENCODED_MAX``): a batched env resets hundreds of rows per rollout
        from a few prompts, and the tokenizer call was a third of a short-completion rollout's time."""
        cached = self._encoded.get(prompt) if isinstance(prompt, str) else None
        if cached is not None:
            return list(cached)
        _check_prompt(prompt, where)
        ids = self._tokens(prompt)
        if not ids:
            raise ValueError(f"{where} {prompt!r} encodes to no tokens; a prompt needs at least one")
        if len(ids) > self.max_prompt_tokens:
            room = (f"; the model's context of {self.context} tokens minus max_new_tokens={self.max_new_tokens} allows "
                    f"max_prompt_tokens up to {self.context - self.max_new_tokens}") if self.context else ""
            template = " (rendered as a user turn of the chat template, whose own tokens count too)" if self.chat else ""
            raise ValueError(
                f"{where} of {len(ids)} tokens{template} exceeds max_prompt_tokens={self.max_prompt_tokens}{room}: "
                f"{prompt[:60]!r}"
            )
        if len(self._encoded) < _ENCODED_MAX:
            self._encoded[prompt] = tuple(ids)
        return ids

    def _tokens(self, prompt: str) -> list[int]:
        """The prompt's token ids as the model sees them: plain, or rendered as a user turn of the chat template."""
        ids = prompt_token_ids(self.tokenizer, prompt, self.chat, self.model_name)
        bad = [t for t in ids if t >= self.vocab_size]
        if bad:
            raise ValueError(
                f"prompt {prompt[:40]!r} encodes to token id {bad[0]}, outside the model's vocabulary of "
                f"{self.vocab_size} ({self.model_name}): the tokenizer has tokens the model has no embeddings for"
                f"{' (the chat template uses them: pass chat_template=False)' if self.chat else ''}"
            )
        return ids

    def is_stop(self, token: int) -> bool:
        """Whether ``token`` ends the episode (EOS, or the chat template's end of turn)."""
        return token in self.stop_token_ids

    def sample_prompt(self, rng: np.random.Generator) -> str:
        return self.prompts[int(rng.integers(len(self.prompts)))]

    def check_action(self, action) -> int:
        return check_token(action, self.vocab_size, self.model_name)

    def decode(self, completion_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(completion_ids, skip_special_tokens=True)

    def hits_stop(self, completion: str) -> bool:
        return any(stop in completion for stop in self.stop_strings)


def prompt_token_ids(tokenizer, prompt: str, chat: bool, model_name: str = "the model") -> list[int]:
    """A prompt's token ids as a policy sees them: its plain tokens, or (``chat``) the prompt rendered as one user
    turn of the tokenizer's chat template followed by the assistant's header (``add_generation_prompt=True``).
    What the env feeds, and what SFT and DPO train on."""
    if not chat:
        return tokenizer(prompt, add_special_tokens=False)["input_ids"]
    try:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True)
    except Exception as error:  # jinja's TemplateError, or what the template raises itself
        raise ValueError(
            f"the chat template of {model_name!r} cannot render a prompt as a single user turn ({error}); pass "
            f"chat_template=False to use the prompt's plain tokens"
        ) from error
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def uses_chat_template(tokenizer, chat_template: bool | None = None) -> bool:
    """Whether prompts are rendered with the tokenizer's chat template: ``chat_template``, or, when None, whether
    the tokenizer has one (the env's default)."""
    return bool(getattr(tokenizer, "chat_template", None)) if chat_template is None else bool(chat_template)


def end_of_turn_ids(tokenizer) -> tuple[int, ...]:
    """The special token(s) the tokenizer's chat template closes an assistant turn with (``<|im_end|>`` in ChatML,
    ``<|eot_id|>`` in Llama 3, ``<end_of_turn>`` in Gemma): the first token after a rendered assistant message, when
    it is a special token; ``()`` without a template or when the template closes turns with plain text.
    """
    if not getattr(tokenizer, "chat_template", None):
        return ()
    marker = "textenv-end-of-turn-probe"
    try:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}], tokenize=False)
    except Exception:  # a template that renders no assistant turn (or needs more): no end-of-turn token to find
        return ()
    after = rendered.split(marker, 1)[1] if marker in rendered else ""
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return (ids[0],) if ids and ids[0] in special else ()


def as_task(task: TextTask | None, task_kwargs: dict) -> TextTask:
    """``task``, or a :class:`TextTask` built from ``task_kwargs`` (what the envs take; not both)."""
    if task is None:
        return TextTask(**task_kwargs)
    if not isinstance(task, TextTask):
        raise TypeError(f"task must be a TextTask, got {type(task).__name__}")
    if task_kwargs:
        raise TypeError(f"pass either task or task keyword arguments, not both (got task and {sorted(task_kwargs)})")
    return task
