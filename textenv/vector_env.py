"""The batched text env: N completions stepped together, state kept as torch tensors.

``gymnasium.make_vec("textenv/Sentiment-v1", num_envs=N)`` returns it (through the id's
``vector_entry_point``; ``-v0`` too, with its episode ends). Sub-env ``i`` seeded with ``seed + i`` draws the
same prompts as a single env seeded with ``seed + i``, and the same actions give the same rewards, flags and
infos (tested, dense rewards and stop strings included). The reward model is called once per step for all envs
that finish in it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from gymnasium.utils import seeding

from textenv.task import TextTask, as_task

_MODES = {"same_step": AutoresetMode.SAME_STEP, "disabled": AutoresetMode.DISABLED}


class TextGenerationVectorEnv(VectorEnv):
    """``num_envs`` copies of :class:`textenv.env.TextGenerationEnv` in one set of tensors.

    Episode ends, rewards and infos are the single env's (``terminated`` at the cap in ``-v1``, ``truncated`` in
    ``-v0``; ``info["capped"]`` on every episode's last step), and so is the transactional step: a step that
    raises leaves every env as it was.

    Args:
        num_envs: batch size N.
        autoreset_mode: ``"same_step"`` (default; a finished env restarts with a new prompt in the step that
            ended it, its last observation and info in ``info["final_obs"]``/``info["final_info"]``, as in
            Gymnasium's ``AutoresetMode.SAME_STEP``) or ``"disabled"`` (finished envs stay frozen: their
            actions are ignored and they report reward 0 until ``reset``, e.g. with
            ``options={"reset_mask": mask}``; what group-sampling agents such as GRPO want).
        task_kwargs: as for the single env (see :class:`textenv.task.TextTask`).

    ``reset(options=...)`` accepts ``{"prompt": str}`` (every env), ``{"prompts": [N strings]}`` and
    ``{"reset_mask": bool array (N,)}``. ``step`` takes actions as a numpy array or a torch tensor of shape (N,).
    """

    def __init__(self, num_envs: int, task: TextTask | None = None, autoreset_mode: str = "same_step", **task_kwargs):
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} must be an integer >= 1")
        if autoreset_mode not in _MODES:
            raise ValueError(f"autoreset_mode={autoreset_mode!r}; expected one of {sorted(_MODES)}")
        self.task = as_task(task, task_kwargs)
        self.num_envs = int(num_envs)
        self.metadata = {"autoreset_mode": _MODES[autoreset_mode], "render_modes": ["ansi"]}
        self.render_mode = None
        self.single_observation_space = self.task.observation_space
        self.single_action_space = self.task.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        N, L = self.num_envs, self.task.length
        self.input_ids = torch.full((N, L), self.task.pad_token_id, dtype=torch.long)  # (N, L)
        self.attention_mask = torch.zeros((N, L), dtype=torch.long)  # (N, L)
        self.prompt_len = torch.zeros(N, dtype=torch.long)  # (N,)
        self.gen_len = torch.zeros(N, dtype=torch.long)  # (N,)
        self.done = torch.ones(N, dtype=torch.bool)  # (N,) frozen rows in "disabled" mode
        self.prompts: list[str] = [""] * N
        self._rngs = [seeding.np_random(None)[0] for _ in range(N)]
        self._last_terms: list[dict[str, float]] = [{} for _ in range(N)]

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        options = options or {}
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, (int, np.integer)) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} envs")
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        mask = np.asarray(options.get("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)
        if mask.shape != (self.num_envs,):
            raise ValueError(f"reset_mask has shape {mask.shape}; expected ({self.num_envs},)")
        rows = np.flatnonzero(mask).tolist()
        if "prompts" in options:
            prompts = list(options["prompts"])
            if len(prompts) != self.num_envs:
                raise ValueError(f"options['prompts'] has {len(prompts)} prompts for {self.num_envs} envs")
            prompts = [prompts[i] for i in rows]
        elif "prompt" in options:
            prompts = [options["prompt"]] * len(rows)
        else:
            prompts = None
        self._reset_rows(rows, prompts)
        return self._obs(), {"prompt": np.array(self.prompts, dtype=object), "_prompt": mask.copy()}

    def _reset_rows(self, rows: list[int], prompts: list[str] | None = None) -> None:
        if prompts is None:
            prompts = [self.task.sample_prompt(self._rngs[i]) for i in rows]
        encoded = [self.task.encode_prompt(p) for p in prompts]  # validate all before touching state
        for i, prompt, ids in zip(rows, prompts, encoded):
            self.input_ids[i] = self.task.pad_token_id
            self.input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            self.attention_mask[i] = 0
            self.attention_mask[i, : len(ids)] = 1
            self.prompt_len[i], self.gen_len[i] = len(ids), 0
            self.prompts[i] = prompt
            self._last_terms[i] = {}
        self.done[rows] = False

    def prompt_token_ids(self, rows) -> list[list[int]]:
        """Prompt token ids of ``rows`` (what a KL wrapper prefills after a reset)."""
        return [self.input_ids[i, : self.prompt_len[i]].tolist() for i in rows]

    # ------------------------------------------------------------------ step
    def step(self, actions):
        if bool(self.done.all()):
            raise RuntimeError("step() called with every episode ended (or before the first reset); call reset() first")
        tokens = self._check_actions(actions)  # (N,)
        live = ~self.done  # (N,)
        rows = live.nonzero().squeeze(1)
        at = self.prompt_len[rows] + self.gen_len[rows]  # (R,) where each live row's token goes
        saved_ids, saved_mask = self.input_ids[rows, at].clone(), self.attention_mask[rows, at].clone()  # (R,)
        self.input_ids[rows, at] = tokens[rows]
        self.attention_mask[rows, at] = 1
        self.gen_len[rows] += 1
        try:  # scoring may raise (a failing reward model): then the step leaves no trace
            rewards, terminated, truncated, infos, last_terms = self._score(tokens, live, rows)
        except BaseException:
            self.input_ids[rows, at], self.attention_mask[rows, at] = saved_ids, saved_mask
            self.gen_len[rows] -= 1
            raise
        for i, terms in last_terms.items():
            self._last_terms[i] = terms
        finished = terminated | truncated

        finished_rows = finished.nonzero().squeeze(1).tolist()
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP and finished_rows:
            final_obs = self._obs()
            final = {}
            for i in finished_rows:
                row = {k: v[i] for k, v in infos.items() if not k.startswith("_") and infos[f"_{k}"][i]}
                # numpy scalars back to Python ones, so that a bool info (``capped``) stays a bool array
                row = {k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}
                final = self._add_info(final, row, i)
            infos["final_obs"] = np.full(self.num_envs, None, dtype=object)
            for i in finished_rows:
                infos["final_obs"][i] = {k: v[i] for k, v in final_obs.items()}
            infos["_final_obs"] = finished.numpy().copy()
            infos["final_info"], infos["_final_info"] = final, finished.numpy().copy()
            self._reset_rows(finished_rows)
        else:
            self.done |= finished
        return self._obs(), rewards, terminated.numpy(), truncated.numpy(), infos

    def _score(self, tokens: torch.Tensor, live: torch.Tensor, rows: torch.Tensor):
        """Flags, rewards and infos of the step whose tokens are already written; changes no state (it may raise).

        Returns ``(rewards (N,), terminated (N,), truncated (N,), infos, {row: the dense reward's new terms})``.
        """
        terminated = live & torch.isin(tokens, torch.tensor(self.task.stop_token_ids))  # (N,) EOS or end of turn
        texts: dict[int, str] = {}
        if self.task.stop_strings:
            for i in rows.tolist():
                texts[i] = self._completion_text(i)
                terminated[i] |= self.task.hits_stop(texts[i])
        capped = live & ~terminated & (self.gen_len >= self.task.max_new_tokens)  # (N,)
        if self.task.cap_flag == "terminated":
            terminated, truncated = terminated | capped, torch.zeros_like(capped)
        else:
            truncated = capped
        finished = terminated | truncated
        scored_rows = (live if self.task.dense else finished).nonzero().squeeze(1).tolist()

        rewards = np.zeros(self.num_envs, dtype=np.float64)
        infos: dict[str, Any] = {}
        last_terms: dict[int, dict[str, float]] = {}
        if scored_rows:
            for i in scored_rows:
                if i not in texts:
                    texts[i] = self._completion_text(i)
            scored = self.task.reward([self.prompts[i] for i in scored_rows], [texts[i] for i in scored_rows])
            ended = [i for i in scored_rows if finished[i]]
            gold = {}
            if self.task.gold is not None and ended:
                gold = dict(zip(ended, self.task.gold([self.prompts[i] for i in ended], [texts[i] for i in ended]).total.tolist()))
            for j, i in enumerate(scored_rows):
                terms = {name: float(values[j]) for name, values in scored.terms.items()}
                step_terms = {k: v - self._last_terms[i].get(k, 0.0) for k, v in terms.items()} if self.task.dense else terms
                last_terms[i] = terms
                rewards[i] = sum(step_terms.values())
                row_info = {f"reward_{k}": v for k, v in step_terms.items()}
                if finished[i]:
                    row_info.update(prompt=self.prompts[i], completion=texts[i], score=float(scored.total[j]),
                                    num_tokens=int(self.gen_len[i]), capped=bool(capped[i]))
                    if i in gold:
                        row_info["reward_gold"] = gold[i]
                infos = self._add_info(infos, row_info, i)
        return rewards, terminated, truncated, infos, last_terms

    def _check_actions(self, actions) -> torch.Tensor:
        tokens = torch.as_tensor(np.asarray(actions) if not isinstance(actions, torch.Tensor) else actions)
        if tokens.shape != (self.num_envs,) or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ValueError(f"actions must be {self.num_envs} integer token ids, got {tuple(tokens.shape)} of {tokens.dtype}")
        tokens = tokens.to(device="cpu", dtype=torch.long)
        bad = (~self.done & ((tokens < 0) | (tokens >= self.task.vocab_size))).nonzero().squeeze(1)
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"action {int(tokens[i])} of env {i} is outside Discrete({self.task.vocab_size}); the policy's "
                f"vocabulary must match the env's tokenizer ({self.task.model_name})"
            )
        return tokens

    def _completion_text(self, i: int) -> str:
        start = int(self.prompt_len[i])
        return self.task.decode(self.input_ids[i, start : start + int(self.gen_len[i])].tolist())

    def _obs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids.numpy().copy(), "attention_mask": self.attention_mask.numpy().copy()}

    def render(self):
        return [p + "|" + self._completion_text(i) for i, p in enumerate(self.prompts)]
