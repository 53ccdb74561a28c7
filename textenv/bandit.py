"""The two-action A/B bandit of the RLHF primer: the smallest env on which a policy gradient must work."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class BanditEnv(gym.Env):
    """Pick A or B once; A is preferred.

    ## Description
    One step per episode. The policy-gradient "hello world": a learner should put probability → 1 on A.

    ## Action Space
    ``Discrete(2)``: 0 = A, 1 = B.

    ## Observation Space
    ``Box(0, 1, (1,), float32)``, always ``[0.]`` (there is nothing to observe).

    ## Rewards
    | action | reward |
    |---|---|
    | A (0) | +1 |
    | B (1) | −1 |

    ``info["reward_score"]`` repeats it.

    ## Starting State
    Always the same.

    ## Episode End
    ``terminated`` after the one step; never ``truncated``.

    ## Arguments
    ``reward_a`` (default 1.0), ``reward_b`` (default -1.0).

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(self, reward_a: float = 1.0, reward_b: float = -1.0):
        for name, value in (("reward_a", reward_a), ("reward_b", reward_b)):
            if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool) or not np.isfinite(value):
                raise ValueError(f"{name}={value!r} must be a finite number")
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.rewards = (float(reward_a), float(reward_b))
        self._obs = np.zeros(1, dtype=np.float32)
        self._done = True

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._done = False
        return self._obs.copy(), {}

    def step(self, action):
        if self._done:
            raise RuntimeError("step() called after the episode ended (or before the first reset); call reset() first")
        if isinstance(action, np.ndarray) and action.shape in ((), (1,)):
            action = action.reshape(()).item()
        if not isinstance(action, (int, np.integer)) or isinstance(action, bool) or action not in (0, 1):
            raise ValueError(f"action {action!r} is outside Discrete(2); expected 0 (A) or 1 (B)")
        self._done = True
        reward = self.rewards[int(action)]
        return self._obs.copy(), reward, True, False, {"reward_score": reward}
