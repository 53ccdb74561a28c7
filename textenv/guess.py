"""``textenv/GuessNumber-v0``: guess a secret number; after each guess the env answers higher, lower or correct.

The whole task is the game below (a multi-turn task is a small class with ``start`` and ``respond``; see
:mod:`textenv.multiturn`). Text protocol, one character per token with the built-in LM::

    guess 1-16\\n          <- prompt
    8\\n                   <- the agent's turn (ends at the newline, or after max_turn_tokens tokens)
    higher\\n              <- the env's reply, inserted as tokens
    12\\n
    lower\\n
    10\\n                  <- correct: the episode ends (terminated)

Reward on the turn that solves it: ``1 − turn_cost·(turns − 1)`` (1.0 in one turn, 0.3 in eight with the
default 0.1), else 0. A turn that is not a number in the range gets ``"invalid\\n"`` and counts as a turn.
"""

from __future__ import annotations

import re

from textenv.multiturn import Turn

_NUMBER = re.compile(r"^\s*(-?\d+)\s*$")


class GuessNumber:
    """The game: a secret integer in ``[low, high]``, one guess per turn."""

    def __init__(self, low: int = 1, high: int = 16, turn_cost: float = 0.1):
        if not (isinstance(low, int) and isinstance(high, int)) or low > high:
            raise ValueError(f"low={low!r}, high={high!r}: expected integers with low <= high")
        if not 0 <= turn_cost < 1:
            raise ValueError(f"turn_cost={turn_cost!r} must be in [0, 1)")
        self.low, self.high, self.turn_cost = low, high, turn_cost
        self.instances = [str(n) for n in range(low, high + 1)]  # an instance is its secret

    def start(self, rng, instance=None):
        secret = int(rng.integers(self.low, self.high + 1)) if instance is None else int(instance)
        return f"guess {self.low}-{self.high}\n", {"secret": secret, "turns": 0}

    def respond(self, state, turn: str) -> Turn:
        state["turns"] += 1
        found = _NUMBER.match(turn)
        guess = int(found.group(1)) if found else None
        info = {"solved": False, "secret": state["secret"]}
        if guess is None or not self.low <= guess <= self.high:
            return Turn("invalid\n", info={**info, "invalid": True})
        if guess == state["secret"]:
            reward = 1.0 - self.turn_cost * (state["turns"] - 1)
            return Turn(reward=reward, done=True, info={**info, "solved": True, "turns_to_solve": state["turns"]})
        return Turn("higher\n" if guess < state["secret"] else "lower\n", info=info)


_KL_KEYS = ("kl_estimator", "kl_mode", "kl_target", "kl_horizon", "kl_temperature", "kl_timing", "ref_model", "device")


def _env_args(model, low, high, turn_cost, kl_coef, kwargs) -> tuple:
    if kl_coef:
        raise ValueError(f"kl_coef={kl_coef!r}: textenv/GuessNumber-v0 is a multi-turn env, whose KL goes in the loss "
                         f"(the agents' kl_in_loss=True); KL shaping in the reward would score the env's own tokens")
    unknown = sorted(k for k in kwargs if k in _KL_KEYS)
    if unknown:
        raise ValueError(f"{unknown}: KL settings of the reward's KL shaping; a multi-turn env has none (kl_in_loss=True)")
    if model is None:
        from textenv.world.guess import guess_lm_path

        model = guess_lm_path()
    return GuessNumber(low, high, turn_cost), model


def make_guess_number(render_mode: str | None = None, model=None, low: int = 1, high: int = 16,
                      turn_cost: float = 0.1, kl_coef: float = 0.0, **limits):
    """``gymnasium.make("textenv/GuessNumber-v0", ...)``: ``model`` (default: the built-in guessing LM), the game's
    ``low``/``high``/``turn_cost``, and the limits of :class:`textenv.multiturn.MultiTurnSpec` (``max_turns=8``,
    ``max_turn_tokens=4``, ``max_new_tokens=96`` agent and env tokens after the prompt)."""
    from textenv.multiturn import MultiTurnEnv

    game, model = _env_args(model, low, high, turn_cost, kl_coef, limits)
    return MultiTurnEnv(game, model, render_mode=render_mode, **{**_LIMITS, **limits})


def make_guess_number_vector(num_envs: int = 1, autoreset_mode: str = "same_step", model=None, low: int = 1,
                             high: int = 16, turn_cost: float = 0.1, kl_coef: float = 0.0, **limits):
    """``gymnasium.make_vec("textenv/GuessNumber-v0", num_envs=N, ...)``: the batched env (same arguments)."""
    from textenv.multiturn import MultiTurnVectorEnv

    game, model = _env_args(model, low, high, turn_cost, kl_coef, limits)
    return MultiTurnVectorEnv(num_envs, game, model, autoreset_mode=autoreset_mode, **{**_LIMITS, **limits})


_LIMITS = {"max_turns": 8, "max_turn_tokens": 4, "max_new_tokens": 96, "max_prompt_tokens": 16}
