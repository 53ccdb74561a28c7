"""``TurnEnv``: a token-level text env driven one whole turn at a time, for agents that speak in turns.

``TurnEnv(env).step(turn)`` feeds a whole turn to the wrapped env token by token and returns the env's answer as
text (``info["reply"]``), the way turn-level frameworks drive LLM agents (GEM, TextArena, TRL's
``environment_factory``). ``turn`` is either text, tokenized **once** with the env's tokenizer, or the token ids
themselves (what an LLM sampled): those ids, not a decode → encode round trip of them, are what the env records,
scores and what a trainer reads from its observation (token in, token out; ``info["turn_ids"]`` says which ids
were fed). A turn that does not end with the env's end-of-turn token gets it appended (``turn_end`` of a multi-turn
env; EOS or the chat template's end of turn for a single-turn one, whose one turn is the whole completion).
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class TurnEnv(gym.Wrapper):
    """Wrap a single (not batched) token-level text env (:class:`textenv.multiturn.MultiTurnEnv` or
    :class:`textenv.env.TextGenerationEnv`, with or without wrappers) so that ``step`` takes a whole turn.

    ``step(turn)`` returns ``(obs, reward, terminated, truncated, info)``: the reward summed over the turn's tokens,
    the last step's flags and info, plus ``info["reply"]`` (the env's inserted text, ``""`` if none) and
    ``info["turn_ids"]``. A turn longer than the env allows (``max_turn_tokens``, or past the episode's end) is
    refused before any token is fed, naming its length.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        task = env.unwrapped.task
        self.tokenizer = task.tokenizer
        self._end_ids = tuple(getattr(task, "turn_end_ids", None) or task.stop_token_ids)
        self._turn_limit = getattr(task, "max_turn_tokens", None)
        self.action_space = spaces.Text(max_length=10_000, min_length=0, charset=string.printable)

    def turn_ids(self, turn: str | Sequence[int]) -> list[int]:
        """The token ids :meth:`step` feeds for ``turn``: the ids as given, or the text encoded once; the end-of-turn
        token appended when missing."""
        if isinstance(turn, str):
            ids = self.tokenizer.encode(turn, add_special_tokens=False)
        elif isinstance(turn, (Sequence, np.ndarray)) and all(isinstance(t, (int, np.integer)) and not isinstance(t, bool)
                                                              for t in turn):
            ids = [int(t) for t in turn]
        else:
            raise TypeError(f"a turn is a str or a sequence of token ids, got {type(turn).__name__}: {turn!r}")
        if not ids or ids[-1] not in self._end_ids:
            ids.append(self._end_ids[0])
        return ids

    def step(self, turn):
        ids = self.turn_ids(turn)
        if self._turn_limit is not None and len(ids) > self._turn_limit:
            raise ValueError(f"a turn of {len(ids)} tokens (end of turn included) exceeds max_turn_tokens="
                             f"{self._turn_limit}: {turn!r}")
        bad = [t for t in ids if not 0 <= t < self.env.action_space.n]
        if bad:
            raise ValueError(f"token ids {bad} are outside Discrete({self.env.action_space.n})")
        total, reply = 0.0, []
        for k, token in enumerate(ids):
            obs, reward, terminated, truncated, info = self.env.step(token)
            total += float(reward)
            reply = list(info.get("env_tokens", []))
            if terminated or truncated:
                if k < len(ids) - 1:
                    info["unused_ids"] = ids[k + 1 :]  # the episode ended inside the turn (a stop token, the cap)
                break
        info = {**info, "reply": self.tokenizer.decode(reply, skip_special_tokens=True), "turn_ids": ids[: k + 1]}
        return obs, total, terminated, truncated, info
