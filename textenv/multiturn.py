"""Multi-turn token-level episodes: the agent writes a turn token by token, the env answers with tokens of its own.

A multi-turn task is a **game**: any object with two methods (a small class or a few functions, see
:class:`textenv.guess.GuessNumber`, 40 lines)::

    start(rng, instance=None) -> (prompt: str, state)     # a new episode (``instance``: a key of ``instances``)
    respond(state, turn: str) -> Turn                    # the env's answer to the agent's finished turn

and, optionally, ``instances``: a list of string keys that name episodes (the same key starts the same episode,
what GRPO's groups need: ``reset(options={"prompts": [key, ...]})``).

:class:`MultiTurnEnv` wraps a game and a tokenizer into a Gymnasium env, one ``step`` = one agent token:

* The agent's turn ends on ``turn_end`` (a string of exactly one token, default newline), on EOS, or after
  ``max_turn_tokens`` tokens. The turn's text (decoded without special tokens) goes to ``game.respond``.
* The reply is tokenized once with the env's tokenizer and **inserted** into the context as tokens; the
  observation's ``env_mask`` marks them (1) and ``info["env_tokens"]`` lists those of this step. Token in, token
  out: the agent's ids are never decoded and re-encoded (the turn's text is only what the game reads).
* Episode end: ``Turn.done`` (``terminated``), ``max_turns`` turns (``truncated``), or ``max_new_tokens`` tokens
  after the prompt, agent's and env's together (``truncated``); both limits are visible in the observation (the
  tokens so far), so they end the MDP and ``info["capped"]`` is True: nothing is to be bootstrapped past them.
* Reward: each ``Turn.reward`` on the step that ended the turn.

Agents (:mod:`agents`) prefill the env's tokens into their KV cache after each step (one forward for the agent's
token and the reply together, :meth:`textenv.lm.IncrementalLM.extend`), and leave them out of the policy loss,
the value targets and the KL, which see the agent's tokens only. KL shaping in the reward is refused: with a
multi-turn env the KL goes in the loss (``kl_in_loss=True``).

:class:`MultiTurnVectorEnv` steps N of them for the agents' batched rollouts (the same numbers as N single envs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from textenv.lm import context_length, load_config, load_tokenizer
from textenv.task import check_token


@dataclass
class Turn:
    """A game's answer to one agent turn."""

    reply: str = ""
    """Text the env inserts after the agent's turn (tokenized with the env's tokenizer); ignored when ``done``."""
    reward: float = 0.0
    done: bool = False
    """The episode is over (``terminated``)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Reported in ``info`` of the step that ended the turn."""


class MultiTurnSpec:
    """Tokenizer, vocabulary, limits and spaces of a multi-turn env (the ``task`` the agents read)."""

    def __init__(self, game, model, max_turns: int = 8, max_turn_tokens: int = 8, max_new_tokens: int = 96,
                 max_prompt_tokens: int = 32, turn_end: str = "\n"):
        for name, value in (("max_turns", max_turns), ("max_turn_tokens", max_turn_tokens),
                            ("max_new_tokens", max_new_tokens), ("max_prompt_tokens", max_prompt_tokens)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if not callable(getattr(game, "start", None)) or not callable(getattr(game, "respond", None)):
            raise TypeError(f"game must have start(rng, instance=None) and respond(state, turn) methods; got "
                            f"{type(game).__name__}")
        self.game = game
        self.model_name = str(model)
        self.tokenizer = load_tokenizer(model)
        config = load_config(model)
        self.vocab_size = int(config.vocab_size)
        self.context = context_length(config)
        self.max_turns, self.max_turn_tokens = int(max_turns), int(max_turn_tokens)
        self.max_new_tokens, self.max_prompt_tokens = int(max_new_tokens), int(max_prompt_tokens)
        self.length = self.max_prompt_tokens + self.max_new_tokens
        if self.context is not None and self.length > self.context:
            raise ValueError(f"max_prompt_tokens={max_prompt_tokens} + max_new_tokens={max_new_tokens} exceeds the "
                             f"model's context of {self.context} tokens")
        ids = self.tokenizer.encode(turn_end, add_special_tokens=False) if isinstance(turn_end, str) and turn_end else []
        if len(ids) != 1:
            raise ValueError(f"turn_end={turn_end!r} must be a string the tokenizer encodes as exactly one token; "
                             f"{self.model_name} gives {ids}")
        self.turn_end = turn_end
        self.eos_token_id = self.tokenizer.eos_token_id
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_token_id
        if self.pad_token_id is None or self.pad_token_id >= self.vocab_size:
            self.pad_token_id = 0 if self.eos_token_id is None else self.eos_token_id
        self.turn_end_ids = tuple(dict.fromkeys(i for i in (ids[0], self.eos_token_id) if i is not None))
        self.stop_token_ids = self.turn_end_ids
        self.prompts = [str(k) for k in getattr(game, "instances", ())]
        """Keys of the game's episodes (what ``reset(options={"prompts": [...]})`` takes), if it names them."""
        box = lambda high: spaces.Box(0, high, shape=(self.length,), dtype=np.int64)  # noqa: E731
        self.observation_space = spaces.Dict(
            {"input_ids": box(self.vocab_size - 1), "attention_mask": box(1), "env_mask": box(1)})
        self.action_space = spaces.Discrete(self.vocab_size)

    def encode(self, text: str, what: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"the game's {what} must be a str, got {type(text).__name__}: {text!r}")
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def check_action(self, action) -> int:
        return check_token(action, self.vocab_size, self.model_name)


class MultiTurnEnv(gym.Env):
    """One multi-turn episode of ``game`` (module docstring): ``step`` takes one agent token.

    Observation: ``Dict(input_ids, attention_mask, env_mask)``, each ``(L,)`` int64 with ``L = max_prompt_tokens +
    max_new_tokens``: the prompt, then the agent's and the env's tokens in order, right-padded; ``env_mask`` is 1 on
    the env's tokens. Info at the episode end: ``prompt``, ``instance``, ``transcript`` (everything after the prompt,
    decoded), ``turns``, ``num_tokens`` (the agent's), ``capped``, ``limit`` (``"turns"``/``"tokens"`` when a limit
    ended it) and what the game's last :class:`Turn` reported.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, game, model, render_mode: str | None = None, **limits):
        self.task = game if isinstance(game, MultiTurnSpec) else MultiTurnSpec(game, model, **limits)
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode={render_mode!r}; expected 'ansi' or None")
        self.render_mode = render_mode
        self.observation_space, self.action_space = self.task.observation_space, self.task.action_space
        L = self.task.length
        self._ids = np.full(L, self.task.pad_token_id, dtype=np.int64)
        self._mask, self._env = np.zeros(L, dtype=np.int64), np.zeros(L, dtype=np.int64)
        self._done, self._state, self._prompt, self._instance = True, None, "", None
        self._prompt_len, self._length, self._turn, self._turns, self._agent_tokens = 0, 0, [], 0, 0
        self.env_tokens: list[int] = []
        """The tokens the env inserted in the last step (what a sampler feeds to its cache after the agent's)."""

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        instance = (options or {}).get("prompt")
        if instance is not None and self.task.prompts and str(instance) not in self.task.prompts:
            raise ValueError(f"options prompt={instance!r} is not an instance of the game; expected one of "
                             f"{self.task.prompts[:5]}... ({len(self.task.prompts)} in all)")
        prompt, state = self.task.game.start(self.np_random, instance)
        ids = self.task.encode(prompt, "prompt")
        if not ids or len(ids) > self.task.max_prompt_tokens:
            raise ValueError(f"the game's prompt {prompt!r} encodes to {len(ids)} tokens; expected 1 to "
                             f"max_prompt_tokens={self.task.max_prompt_tokens}")
        self._ids[:] = self.task.pad_token_id
        self._mask[:], self._env[:] = 0, 0
        self._ids[: len(ids)], self._mask[: len(ids)] = ids, 1
        self._state, self._prompt, self._instance = state, prompt, instance
        self._prompt_len = self._length = len(ids)
        self._turn, self._turns, self._agent_tokens, self._done = [], 0, 0, False
        self.env_tokens = []
        return self._obs(), {"prompt": prompt}

    def prompt_token_ids(self) -> list[int]:
        return self._ids[: self._prompt_len].tolist()

    # ------------------------------------------------------------------ step
    def step(self, action):
        if self._done:
            raise RuntimeError("step() called after the episode ended (or before the first reset); call reset() first")
        token = self.task.check_action(action)
        task, turn = self.task, self._turn + [token]
        ends_turn = token in task.turn_end_ids or len(turn) >= task.max_turn_tokens
        out_of_room = self._length + 1 >= task.length
        reward, terminated, truncated, info, inserted, limit = 0.0, False, False, {}, [], None
        turns = self._turns
        if ends_turn:
            answer = task.game.respond(self._state, task.decode(turn))
            if not isinstance(answer, Turn):
                raise TypeError(f"game.respond must return a textenv.multiturn.Turn, got {type(answer).__name__}")
            turns += 1
            reward = float(answer.reward)
            info.update(answer.info)
            if answer.done:
                terminated = True
            elif turns >= task.max_turns:
                truncated, limit = True, "turns"
            else:
                inserted = task.encode(answer.reply, "reply")
                if self._length + 1 + len(inserted) >= task.length:  # no room for the reply and one more token
                    truncated, limit, inserted = True, "tokens", []
        if not (terminated or truncated) and out_of_room:
            truncated, limit = True, "tokens"
        # commit (the game has answered without raising)
        at = self._length
        self._ids[at], self._mask[at] = token, 1
        span = slice(at + 1, at + 1 + len(inserted))
        self._ids[span], self._mask[span], self._env[span] = inserted, 1, 1
        self._length = at + 1 + len(inserted)
        self._turn = [] if ends_turn else turn
        self._turns, self._agent_tokens = turns, self._agent_tokens + 1
        self.env_tokens = inserted
        self._done = terminated or truncated
        if self._done:
            info.update(prompt=self._prompt, instance=self._instance, transcript=self.transcript(), turns=turns,
                        num_tokens=self._agent_tokens, capped=truncated)
            if limit is not None:
                info["limit"] = limit
        if inserted:
            info["env_tokens"] = list(inserted)
        return self._obs(), reward, terminated, truncated, info

    def transcript(self) -> str:
        """Everything after the prompt so far, decoded (the agent's turns and the env's replies)."""
        return self.task.decode(self._ids[self._prompt_len : self._length])

    def _obs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._ids.copy(), "attention_mask": self._mask.copy(), "env_mask": self._env.copy()}

    def render(self):
        if self.render_mode == "ansi":
            return self._prompt + "|" + self.transcript()
        return None


_MODES = {"same_step": AutoresetMode.SAME_STEP, "disabled": AutoresetMode.DISABLED}


class MultiTurnVectorEnv(VectorEnv):
    """``num_envs`` :class:`MultiTurnEnv` stepped together (games are Python; the LM, not the env, is the cost).

    Sub-env ``i`` seeded with ``seed + i`` plays as a single env seeded so. ``autoreset_mode`` as
    :class:`textenv.vector_env.TextGenerationVectorEnv` (``"disabled"``: finished envs stay frozen, their actions
    ignored, reward 0). ``reset(options=)`` takes ``{"prompts": [N instance keys]}``, ``{"prompt": key}`` and
    ``{"reset_mask": (N,) bools}``. :attr:`env_tokens` lists, per env, the tokens it inserted in the last step.
    """

    def __init__(self, num_envs: int, game, model, autoreset_mode: str = "same_step", **limits):
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} must be an integer >= 1")
        if autoreset_mode not in _MODES:
            raise ValueError(f"autoreset_mode={autoreset_mode!r}; expected one of {sorted(_MODES)}")
        self.task = game if isinstance(game, MultiTurnSpec) else MultiTurnSpec(game, model, **limits)
        self.envs = [MultiTurnEnv(self.task, None) for _ in range(num_envs)]
        self.num_envs = int(num_envs)
        self.metadata = {"autoreset_mode": _MODES[autoreset_mode], "render_modes": ["ansi"]}
        self.render_mode = None
        self.single_observation_space, self.single_action_space = self.task.observation_space, self.task.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.done = np.ones(self.num_envs, dtype=bool)
        self.env_tokens: list[list[int]] = [[] for _ in range(self.num_envs)]
        self._seeded = [False] * self.num_envs

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        options = options or {}
        seeds = [None] * self.num_envs
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, (int, np.integer)) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} envs")
        mask = np.asarray(options.get("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)
        if mask.shape != (self.num_envs,):
            raise ValueError(f"reset_mask has shape {mask.shape}; expected ({self.num_envs},)")
        if "prompts" in options and len(options["prompts"]) != self.num_envs:
            raise ValueError(f"options['prompts'] has {len(options['prompts'])} prompts for {self.num_envs} envs")
        prompts = options.get("prompts", [options.get("prompt")] * self.num_envs)
        for i in np.flatnonzero(mask):
            self.envs[i].reset(seed=seeds[i], options={"prompt": prompts[i]})
            self.done[i] = False
            self.env_tokens[i] = []
        return self._obs(), {"prompt": np.array([e._prompt for e in self.envs], dtype=object), "_prompt": mask.copy()}

    def prompt_token_ids(self, rows) -> list[list[int]]:
        return [self.envs[i].prompt_token_ids() for i in rows]

    def step(self, actions):
        if self.done.all():
            raise RuntimeError("step() called with every episode ended (or before the first reset); call reset() first")
        tokens = np.asarray(actions.cpu() if isinstance(actions, torch.Tensor) else actions)
        if tokens.shape != (self.num_envs,) or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"actions must be {self.num_envs} integer token ids, got {tokens.shape} of {tokens.dtype}")
        rewards = np.zeros(self.num_envs)
        terminated, truncated = np.zeros(self.num_envs, dtype=bool), np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        live = np.flatnonzero(~self.done)
        for i in live:  # validate every action first: a bad one leaves every env as it was
            self.task.check_action(tokens[i])
        results = {}
        for i in live:
            results[i] = self.envs[i].step(int(tokens[i]))
        final_obs = self._obs()
        self.env_tokens = [[] for _ in range(self.num_envs)]  # frozen rows insert nothing
        for i, (_, reward, term, trunc, info) in results.items():
            rewards[i], terminated[i], truncated[i] = reward, term, trunc
            self.env_tokens[i] = list(self.envs[i].env_tokens)
            infos = self._add_info(infos, info, i)
        finished = np.flatnonzero(terminated | truncated)
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP and len(finished):
            final = {}
            infos["final_obs"] = np.full(self.num_envs, None, dtype=object)
            for i in finished:
                infos["final_obs"][i] = {k: v[i] for k, v in final_obs.items()}
                final = self._add_info(final, results[i][4], i)
                self.envs[i].reset()
                self.env_tokens[i] = []
            infos["_final_obs"] = terminated | truncated
            infos["final_info"], infos["_final_info"] = final, terminated | truncated
        else:
            self.done[finished] = True
        return self._obs(), rewards, terminated, truncated, infos

    def _obs(self) -> dict[str, np.ndarray]:
        envs = self.envs  # np.stack copies
        return {"input_ids": np.stack([e._ids for e in envs]), "attention_mask": np.stack([e._mask for e in envs]),
                "env_mask": np.stack([e._env for e in envs])}

    def render(self):
        return [e._prompt + "|" + e.transcript() for e in self.envs]
