"""Does PPO on train missions teach the cloned RT-1 policy to avoid the held-out colour × object objects?

For each seed's cloned policy (``bc-s*``) and its PPO fine-tuned one (``ppo-s*``) from ``language_control.py``,
150 train-split GoToLocal episodes (evaluation seeds from 2³⁰, sampled actions, torch seed 0): the share of the
episodes holding a held-out-pair object in which the agent ever faces one, and the share of all episodes in which
it faces some other object the mission does not name. Prints one line per seed and stage.

    OMP_NUM_THREADS=1 python benchmarks/language_control_avoidance.py    # about 2 minutes, after language_control.py
"""

import gymnasium as gym
import torch

from agents.policies.language import make_language_policy
from robotics.language import HELDOUT_PAIRS, mission_pairs

OUT = "runs/benchmarks/language_control/GoToLocal/rt1"
ENV = "robotics/BabyAI-GoToLocal-v0"
OBJECTS = ("ball", "box", "key")


def facing_rates(path: str, episodes: int = 150) -> tuple[float, float]:
    """(share of episodes with a held-out-pair object in which the agent faces one, share of all episodes in which
    it faces another object the mission does not name)."""
    env = gym.make(ENV, observation="tokens", split="train")
    policy = make_language_policy("rt1", env.observation_space, env.action_space)
    policy.load_state_dict(torch.load(path, weights_only=True))
    torch.manual_seed(0)
    faced_heldout = faced_other = holding = 0
    for k in range(episodes):
        obs, info = env.reset(seed=2**30 + k)
        inner = env.unwrapped.inner
        named = mission_pairs(info["mission"])
        objects = [(o.color, o.type) for o in inner.grid.grid if o is not None and o.type in OBJECTS]
        holding += any(pair in HELDOUT_PAIRS for pair in objects)
        seen_heldout = seen_other = done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(int(policy.act(obs[None]).action[0]))
            done = terminated or truncated
            front = inner.grid.get(*inner.front_pos)
            if front is not None and front.type in OBJECTS:
                pair = (front.color, front.type)
                seen_heldout |= pair in HELDOUT_PAIRS
                seen_other |= pair not in HELDOUT_PAIRS and pair not in named
        faced_heldout += seen_heldout
        faced_other += seen_other
    return faced_heldout / max(holding, 1), faced_other / episodes


if __name__ == "__main__":
    torch.set_num_threads(1)
    for seed in (0, 1, 2):
        for stage in ("bc", "ppo"):
            heldout, other = facing_rates(f"{OUT}/{stage}-s{seed}/policy.pt")
            print(f"seed {seed} {stage:3s}: faces a held-out-pair object in {heldout:.2f} of the train episodes that "
                  f"hold one; faces another non-target object in {other:.2f} of all", flush=True)
