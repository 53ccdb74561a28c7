"""The token-level text-generation environment: one ``step`` = one token, one episode = one completion."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from textenv.task import TextTask, as_task


class TextGenerationEnv(gym.Env):
    """Continue a prompt one token at a time; the reward model scores the completion when it ends.

    ## Description
    An episode is one completion of one prompt. The agent picks the next token; the env appends it and ends
    the episode on EOS, on a stop string or at ``max_new_tokens`` (the cap). The reward model scores the
    completion on its last step whichever ended it, so the return is complete there. The completion's length
    is part of the observation, so the cap is part of the MDP, not a time limit (Pardo et al. 2018, "Time
    Limits in Reinforcement Learning"): in ``-v1`` the cap's step is ``terminated``, and no agent, ours or a
    black-box one (Stable-Baselines3), adds ``γ·V(final obs)`` after it, which would count the score twice.
    Every step is transactional: a step that raises (a reward model that fails, a bad action) leaves the env
    exactly as it was.
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
    | cause | ``-v1`` (``cap_flag="terminated"``) | ``-v0`` (``cap_flag="truncated"``) | ``info["capped"]`` |
    |---|---|---|---|
    | EOS, the chat template's end of turn, or a stop string | ``terminated`` | ``terminated`` | False |
    | ``max_new_tokens`` tokens generated (and no EOS/stop string on that step) | ``terminated`` | ``truncated`` | True |

    Never both flags; ``capped`` is reported on every episode's last step.

    ## Arguments
    See :class:`textenv.task.TextTask` (``model``, ``reward_model``, ``prompts``, ``max_new_tokens``,
    ``max_prompt_tokens``, ``stop_strings``, ``dense``, ``gold_reward``, ``cap_flag``, ``chat_template``) and ``render_mode``
    (``"ansi"`` or ``"human"``). Each is checked at construction.

    ## Info
    ``reward_<term>`` on every step that is rewarded (the last one unless ``dense``). At the episode end also ``prompt``, ``completion`` (decoded text),
    ``score`` (the completion's final score), ``num_tokens``, ``capped`` (the cap ended it) and, when the task has
    a gold reward, ``reward_gold``.

    ## Version History
    * v1: the step that reaches ``max_new_tokens`` is ``terminated`` (was ``truncated``), so Gymnasium agents
      no longer bootstrap past a completion already scored; ``info["capped"]`` marks it. The default.
    * v0: initial version: the cap's step is ``truncated``. Still registered, for reproducing old runs; an
      agent must not bootstrap where ``info["capped"]`` (reported on v0 too; the agents of :mod:`agents` do not).
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}  # fps as Gymnasium's toy-text envs; one frame a token

    def __init__(self, task: TextTask | None = None, render_mode: str | None = None, **task_kwargs):
        self.task = as_task(task, task_kwargs)
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
        completion = self._completion + [token]  # nothing is written before the step has succeeded

        terminated = self.task.is_stop(token)
        capped = len(completion) >= self.task.max_new_tokens
        text = None
        if self.task.stop_strings or self.task.dense or terminated or capped:
            text = self.task.decode(completion)
            terminated = terminated or self.task.hits_stop(text)
        capped = capped and not terminated  # EOS or a stop string on the cap's step ends it as usual
        if capped and self.task.cap_flag == "terminated":
            terminated, truncated = True, False
        else:
            truncated = capped
        done = terminated or truncated

        reward, info, last_score = 0.0, {}, self._last_score
        if done or self.task.dense:
            scored = self.task.reward([self._prompt], [text])
            terms = {name: float(values[0]) for name, values in scored.terms.items()}
            if self.task.dense:  # reward the change of each term since the previous prefix
                step_terms = {k: v - self._last_score.get(k, 0.0) for k, v in terms.items()}
                last_score = terms
            else:
                step_terms = terms
            reward = float(sum(step_terms.values()))
            info.update({f"reward_{k}": v for k, v in step_terms.items()})
            if done:
                info.update(prompt=self._prompt, completion=text, score=float(scored.total[0]),
                            num_tokens=len(completion), capped=capped)
                if self.task.gold is not None:
                    info["reward_gold"] = float(self.task.gold([self._prompt], [text]).total[0])
        # commit: every call that could raise (reward, gold) is behind us
        position = self._prompt_len + len(self._completion)
        self._completion, self._last_score, self._done = completion, last_score, done
        self._ids[position], self._mask[position] = token, 1
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

