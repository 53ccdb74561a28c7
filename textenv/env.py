"""The token-level text-generation environment: one ``step`` = one token, one episode = one completion."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from textenv.task import TextTask


class TextGenerationEnv(gym.Env):
    """Continue a prompt one token at a time; the reward model scores the completion when it ends.

    ## Description
    An episode is one completion of one prompt. The agent picks the next token; the env appends it and ends
    the episode on EOS or a stop string (``terminated``) or at ``max_new_tokens`` (``truncated``). The reward
    model scores the completion on its last step either way, so at the cap the return is complete: the
    agents of :mod:`agents` do not bootstrap there (a value added past the cap would count the score twice),
    while Gymnasium's convention lets black-box agents (Stable-Baselines3) add ``γ·V(final obs)``.
    The env itself runs no language model: the reference model of KL shaping lives in
    :class:`textenv.kl.KLShaping`, which ``gymnasium.make`` adds when ``kl_coef > 0``.

    ## Action Space
    ``Discrete(V)``, ``V`` = the model's vocabulary size (``config.vocab_size``).

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))`` with
    ``L = max_prompt_tokens + max_new_tokens``: prompt then completion tokens, right-padded with the pad id.

    ## Rewards
    | term | when | value |
    |---|---|---|
    | ``reward_score`` (or ``reward_<term>`` of a reward returning named terms) | last step | ``reward_model(prompt, completion)`` |
    | same, ``dense=True`` | every step (sparse: last step only) | ``score(prefix_t) - score(prefix_{t-1})``, ``score(prefix_0) = 0`` |
    | ``reward_kl`` (KL wrapper) | every step | ``-β·KL_t`` |
    | ``reward_gold`` (reported, **not** added) | last step | ``gold_reward(prompt, completion)``, when the task has one |

    ## Starting State
    A prompt drawn uniformly from ``prompts`` with the env's seeded RNG, or ``options={"prompt": ...}``.

    ## Episode End
    ``terminated``: EOS or a stop string. ``truncated``: ``max_new_tokens`` tokens generated. Never both.

    ## Arguments
    See :class:`textenv.task.TextTask` (``model``, ``reward_model``, ``prompts``, ``max_new_tokens``,
    ``max_prompt_tokens``, ``stop_strings``, ``dense``, ``gold_reward``) and ``render_mode`` (``"ansi"`` or ``"human"``).

    ## Info
    ``reward_<term>`` on every step that is rewarded (the last one unless ``dense``). At the episode end also ``prompt``, ``completion`` (decoded text),
    ``score`` (the completion's final score), ``num_tokens`` and, when the task has a gold reward, ``reward_gold``.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi", "human"]}

    def __init__(self, task: TextTask | None = None, render_mode: str | None = None, **task_kwargs):
        self.task = task if task is not None else TextTask(**task_kwargs)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r}; expected one of {self.metadata['render_modes']} or None")
        self.render_mode = render_mode
        self.observation_space = self.task.observation_space
        self.action_space = self.task.action_space
        self._ids = np.full(self.task.length, self.task.pad_token_id, dtype=np.int64)
        self._mask = np.zeros(self.task.length, dtype=np.int64)
        self._prompt, self._prompt_len, self._completion = "", 0, []
        self._done = True
        self._last_score: dict[str, float] = {}

    @property
    def prompt(self) -> str:
        return self._prompt

    def prompt_token_ids(self) -> list[int]:
        """Token ids of the current prompt (what a KL wrapper prefills)."""
        return self._ids[: self._prompt_len].tolist()

    @property
    def completion_ids(self) -> list[int]:
        return list(self._completion)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        prompt = (options or {}).get("prompt")
        prompt = self.task.sample_prompt(self.np_random) if prompt is None else prompt
        ids = self.task.encode_prompt(prompt)
        self._prompt, self._prompt_len, self._completion = prompt, len(ids), []
        self._ids[:] = self.task.pad_token_id
        self._ids[: len(ids)] = ids
        self._mask[:] = 0
        self._mask[: len(ids)] = 1
        self._done = False
        self._last_score = {}
        return self._obs(), {"prompt": prompt, "prompt_tokens": len(ids)}

    def step(self, action):
        if self._done:
            raise RuntimeError("step() called after the episode ended (or before the first reset); call reset() first")
        token = self.task.check_action(action)
        position = self._prompt_len + len(self._completion)
        self._completion.append(token)
        self._ids[position], self._mask[position] = token, 1

        terminated = token == self.task.eos_token_id
        text = None
        if self.task.stop_strings or self.task.dense or terminated or len(self._completion) >= self.task.max_new_tokens:
            text = self.task.decode(self._completion)
            terminated = terminated or self.task.hits_stop(text)
        truncated = not terminated and len(self._completion) >= self.task.max_new_tokens
        done = terminated or truncated

        reward, info = 0.0, {}
        if done or self.task.dense:
            scored = self.task.reward([self._prompt], [text])
            terms = {name: float(values[0]) for name, values in scored.terms.items()}
            if self.task.dense:  # reward the change of each term since the previous prefix
                step_terms = {k: v - self._last_score.get(k, 0.0) for k, v in terms.items()}
                self._last_score = terms
            else:
                step_terms = terms
            reward = float(sum(step_terms.values()))
            info.update({f"reward_{k}": v for k, v in step_terms.items()})
            if done:
                info.update(prompt=self._prompt, completion=text, score=float(scored.total[0]), num_tokens=len(self._completion))
                if self.task.gold is not None:
                    info["reward_gold"] = float(self.task.gold([self._prompt], [text]).total[0])
        self._done = done
        if self.render_mode == "human":
            print(self.render())
        return self._obs(), reward, terminated, truncated, info

    def _obs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._ids.copy(), "attention_mask": self._mask.copy()}

    def render(self):
        """The prompt, a ``|``, and the completion so far (``ansi``; ``human`` prints it every step)."""
        if self.render_mode is None:
            return None
        return self._prompt + "|" + self.task.decode(self._completion)
