"""A replay buffer of float32 tensors that starts from an offline dataset and can grow online."""

from __future__ import annotations

import numpy as np
import torch

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals")


class ReplayBuffer:
    """Transitions in preallocated tensors; ``sample(batch_size)`` draws uniformly with its own generator.

    ``ReplayBuffer.from_data(data, capacity)`` holds the dataset's transitions (``terminals`` as 0/1 floats;
    timeouts are not terminals, so they bootstrap); ``add`` appends online ones until ``capacity``, then
    overwrites the oldest *online* transition, so the offline data stays.
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int, seed: int = 0):
        if capacity < 1:
            raise ValueError(f"capacity={capacity} must be >= 1")
        self.capacity, self.size, self.fixed = capacity, 0, 0
        self.tensors = {"observations": torch.zeros(capacity, obs_dim), "actions": torch.zeros(capacity, act_dim),
                        "rewards": torch.zeros(capacity), "next_observations": torch.zeros(capacity, obs_dim),
                        "terminals": torch.zeros(capacity)}
        self.generator = torch.Generator().manual_seed(seed)
        self._next = 0

    @classmethod
    def from_data(cls, data, capacity: int | None = None, seed: int = 0) -> ReplayBuffer:
        n = len(data)
        buffer = cls(int(np.prod(data.observations.shape[1:])), int(np.prod(data.actions.shape[1:])),
                     max(capacity or n, n), seed)
        for name in FIELDS:
            value = np.asarray(getattr(data, name), dtype=np.float32)
            buffer.tensors[name][:n] = torch.from_numpy(value.reshape(n, *buffer.tensors[name].shape[1:]))
        buffer.size = buffer.fixed = buffer._next = n
        return buffer

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward: float, next_obs, terminal: bool) -> None:
        if self.fixed == self.capacity:
            raise ValueError(f"the replay buffer's capacity={self.capacity} is all offline data; give it a larger "
                             f"capacity")
        i = self._next
        for name, value in zip(FIELDS, (obs, action, reward, next_obs, float(terminal))):
            self.tensors[name][i] = torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(self.tensors[name][i].shape)
        self.size = max(self.size, i + 1)
        self._next = i + 1 if i + 1 < self.capacity else self.fixed

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(self.size, (batch_size,), generator=self.generator)
        return {name: t[idx] for name, t in self.tensors.items()}

    def online_state(self) -> dict:
        """What a checkpoint needs: the online transitions and the sampler's state."""
        return {"online": {k: t[self.fixed:self.size].clone() for k, t in self.tensors.items()}, "next": self._next,
                "size": self.size, "generator": self.generator.get_state()}

    def load_online_state(self, state: dict) -> None:
        n = state["size"] - self.fixed
        if state["size"] > self.capacity:
            raise ValueError(f"the checkpoint's replay buffer holds {n} online transitions, more than this buffer's "
                             f"room of {self.capacity - self.fixed}; resume with at least as many online steps")
        for k, t in self.tensors.items():
            t[self.fixed:self.fixed + n] = state["online"][k]
        # a buffer that was full had wrapped its write position; in a larger one (more online steps) it appends
        self.size, self._next = state["size"], state["next"] if state["size"] == self.capacity else state["size"]
        self.generator.set_state(state["generator"])
