"""Our Decision Transformer network (agents/offline/dt.py) against ``transformers.DecisionTransformerModel``.

Both train through the same :func:`agents.offline.train_offline` loop, sampler, loss, optimizer and evaluation, on
the data of ``tests/agents/test_offline_learning.py::test_decision_transformer_learns_from_good_data`` (10,000
steps of Pendulum-v1 from a swing-up controller taking a random action 30% of the time, D4RL score about 94), with
that test's config and seed, at 1 torch thread. Only the network differs: ours is PyTorch's ``TransformerEncoder``
(pre-norm, GELU); transformers' is its GPT-2 with the positional embeddings fixed to position 0 and the state,
return and action heads (we use the action head). Prints the D4RL score and gradient steps/s of each, side by
side, and their ratios.

    OMP_NUM_THREADS=1 python benchmarks/dt_transformers.py [--steps 1500] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch

from agents.offline import DTConfig, train_offline
from agents.offline.algorithms import OfflineAlgorithm
from agents.offline.dt import DecisionTransformer
from robotics.datasets import load_dataset, rollout_episodes, write_dataset

RANDOM, EXPERT = -1200.0, -150.0


def controller(obs: np.ndarray) -> np.ndarray:
    """The test's swing-up controller: pump energy towards upright, then balance with a PD law."""
    c, s, w = obs
    u = -(12 * np.arctan2(s, c) + 2.5 * w) if c > 0.9 else 0.6 * w * (15 - (0.5 * w * w + 15 * c))
    return np.array([np.clip(u, -2, 2)], dtype=np.float32)


class TransformersDT(DecisionTransformer):
    """:class:`DecisionTransformer` with its network replaced by ``transformers.DecisionTransformerModel``."""

    def __init__(self, config: DTConfig, data):
        from transformers import DecisionTransformerConfig, DecisionTransformerModel

        OfflineAlgorithm.__init__(self, config, data)
        h = config.embed_dim
        self.model = DecisionTransformerModel(DecisionTransformerConfig(
            state_dim=self.obs_dim, act_dim=self.act_dim, hidden_size=h, max_ep_len=config.max_ep_len,
            n_layer=config.n_layer, n_head=config.n_head, n_inner=4 * h, activation_function="gelu",
            resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout, action_tanh=True,
            n_positions=3 * config.context, bos_token_id=None, eos_token_id=None))
        self._set_up_training(data)

    def forward(self, obs, actions, returns_to_go, timesteps, mask):
        out = self.model(states=obs, actions=actions, rewards=None, returns_to_go=returns_to_go.unsqueeze(-1),
                         timesteps=timesteps, attention_mask=mask.long(), return_dict=False)
        return out[1]  # (B, K, act_dim) action predictions


@dataclass
class TransformersDTConfig(DTConfig):
    name: ClassVar[str] = "dt-transformers"
    algorithm: ClassVar[type] = TransformersDT


def make_data(root: Path):
    rng = np.random.default_rng(1)
    episodes = rollout_episodes(gym.make("Pendulum-v1"), lambda o: controller(o) if rng.random() > 0.3 else
                                rng.uniform(-2, 2, 1).astype(np.float32), 10_000, seed=1)
    write_dataset("robotics/pendulum/good-v0", episodes, "Pendulum-v1", RANDOM, EXPERT, "controller, 30% random", "-")
    return load_dataset("robotics/pendulum/good-v0")


def alternating_steps_per_s(agents: dict[str, DecisionTransformer], data, batch_size: int, blocks: int = 6,
                            per_block: int = 50) -> dict[str, float]:
    """Gradient steps/s of each agent on the same batches, timed in alternating blocks (median block): on a
    shared machine the load then moves both alike, which the whole-run figures cannot promise."""
    times: dict[str, list[float]] = {name: [] for name in agents}
    sampler = next(iter(agents.values())).sampler(data)
    batches = [sampler.sample(batch_size) for _ in range(per_block)]
    for _ in range(blocks):
        for name, agent in agents.items():
            tick = time.perf_counter()
            for batch in batches:
                agent.update(batch)
            times[name].append(time.perf_counter() - tick)
    return {name: per_block / float(np.median(t)) for name, t in times.items()}


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="gradient steps (the test's 1500)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (each model trains once per seed)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(tmp) / "minari")
        data = make_data(Path(tmp))
        results: dict[str, list[tuple[float, float, int]]] = {"ours": [], "transformers": []}
        trained: dict[str, DecisionTransformer] = {}
        for seed in args.seeds:
            for name, cls in (("ours", DTConfig), ("transformers", TransformersDTConfig)):
                config = cls(dataset=data.dataset_id, steps=args.steps, batch_size=32, context=5, n_layer=1,
                             embed_dim=32, dropout=0.0, lr=1e-3, warmup_steps=100, max_ep_len=200,
                             target_return=EXPERT, eval_every=0, eval_episodes=5, log_every=500, seed=seed,
                             checkpoint_every=10 * args.steps)
                result = train_offline(config, Path(tmp) / f"{name}-{seed}", data=data, resume=False, progress=False)
                params = sum(p.numel() for p in result.algorithm.parameters())
                trained[name] = result.algorithm
                results[name].append((result.final["eval_score"], result.rows[-1]["steps_per_s"], params))
                print(f"seed {seed} {name:>12}: score {results[name][-1][0]:6.1f}  steps/s "
                      f"{results[name][-1][1]:6.1f}  final action loss {result.rows[-1]['action_loss']:.4f}  "
                      f"parameters {params}", flush=True)
        speed = alternating_steps_per_s(trained, data, batch_size=32)
    ours, theirs = (np.array([r[:2] for r in results[k]]) for k in ("ours", "transformers"))
    print(f"\nmean over seeds {args.seeds}")
    print(f"{'':>14} {'score':>8} {'steps/s (run)':>14} {'steps/s (alternating)':>22} {'params':>8}")
    for name, arr in (("ours", ours), ("transformers", theirs)):
        print(f"{name:>14} {arr[:, 0].mean():8.1f} {arr[:, 1].mean():14.1f} {speed[name]:22.1f} "
              f"{results[name][0][2]:8d}")
    print(f"{'ratio t/ours':>14} {theirs[:, 0].mean() / ours[:, 0].mean():8.2f} "
          f"{theirs[:, 1].mean() / ours[:, 1].mean():14.2f} {speed['transformers'] / speed['ours']:22.2f}")


if __name__ == "__main__":
    main()
