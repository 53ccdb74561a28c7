"""d3rlpy half of the offline-RL side-by-side benchmark: one d3rlpy run from a spec, timed, its policy exported.

Runs in its own venv (d3rlpy 2.8.1 pins ``gymnasium==1.0.0``; the dev venv has 1.4) and imports nothing of
ours; :mod:`benchmarks.offline_d3rlpy` calls it once per run, in a fresh process::

    python -m venv venv-d3rlpy && venv-d3rlpy/bin/pip install torch==2.13.0 d3rlpy==2.8.1
    OMP_NUM_THREADS=1 venv-d3rlpy/bin/python benchmarks/offline_d3rlpy_side.py SPEC.json

``SPEC.json`` names the transitions (an ``.npz`` written from our loader), the algorithm, its d3rlpy keyword
arguments (already mapped from our config), the scalers, ``steps``, ``seed``, ``threads`` and the output folder.
The run writes ``policy.pt`` (d3rlpy's TorchScript greedy policy, observation scaler inside) and ``result.json``.

How the transitions reach d3rlpy unchanged (checked on d3rlpy 2.8.1): ``MDPDataset`` cuts episodes where
``terminals`` or ``timeouts`` is 1; an episode's transition ``t`` has ``next_observation = observations[t + 1]``,
except the last step of a terminated episode (a zero observation, ``terminal = 1``), and a non-terminated episode
gives ``len − 1`` transitions, since its last row has no next observation. So every episode that ends without a
terminal gets one padding row (its final next observation, a zero action and reward) carrying the timeout flag:
d3rlpy then yields exactly our ``N`` transitions, which :func:`check_transitions` verifies before training.
What stays different: on terminal transitions d3rlpy's next observation is zeros (ours is the real one); the TD
target masks it, but CQL's penalty samples policy actions at ``s'``.

Timing: ``build_with_dataset`` (network construction) happens first, as our ``config.create`` does before our
timer; ``steps_per_s`` is ``steps`` over the wall time of the whole ``fit`` (sampling, updates, d3rlpy's logger
bookkeeping and first-step setup; no evaluators, no saving).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def make_dataset(arrays):
    """The padded arrays as a d3rlpy ``MDPDataset``."""
    from d3rlpy.dataset import MDPDataset

    return MDPDataset(observations=arrays["d3_observations"], actions=arrays["d3_actions"],
                      rewards=arrays["d3_rewards"], terminals=arrays["d3_terminals"], timeouts=arrays["d3_timeouts"])


def check_transitions(dataset, arrays) -> int:
    """Raise unless d3rlpy's transitions are ours, in order: observation, action, reward, terminal, and the next
    observation (zeros after a terminal in d3rlpy). Returns the count."""
    picker = dataset.transition_picker
    n = len(arrays["observations"])
    if dataset.transition_count != n:
        raise RuntimeError(f"d3rlpy holds {dataset.transition_count} transitions, ours {n}")
    fields = {k: [] for k in ("observation", "action", "reward", "next_observation", "terminal")}
    for episode in dataset.episodes:
        for t in range(episode.transition_count):
            tr = picker(episode, t)
            for k, values in fields.items():
                values.append(getattr(tr, k))
    terminals = arrays["terminals"].astype(np.float32)
    expected_next = np.where(terminals[:, None] > 0, 0.0, arrays["next_observations"]).astype(np.float32)
    for name, got, want in (("observations", fields["observation"], arrays["observations"]),
                            ("actions", fields["action"], arrays["actions"]),
                            ("rewards", np.reshape(fields["reward"], -1), arrays["rewards"]),
                            ("next_observations", fields["next_observation"], expected_next),
                            ("terminals", fields["terminal"], terminals)):
        if not np.array_equal(np.asarray(got, dtype=np.float32), np.asarray(want, dtype=np.float32)):
            raise RuntimeError(f"d3rlpy's {name} differ from ours; the padding in export_for_d3rlpy is wrong")
    return n


def make_algo(spec: dict, arrays):
    """The d3rlpy algorithm of ``spec`` (keyword arguments as mapped by the main script, plus the scalers,
    encoders and optimizers that JSON cannot carry)."""
    import d3rlpy
    from d3rlpy.models import VectorEncoderFactory
    from d3rlpy.optimizers import AdamFactory
    from d3rlpy.optimizers.lr_schedulers import CosineAnnealingLRFactory
    from d3rlpy.preprocessing import (
        MinMaxActionScaler,
        MultiplyRewardScaler,
        StandardObservationScaler,
    )

    kwargs = dict(spec["kwargs"])
    encoder = VectorEncoderFactory(hidden_units=list(spec["hidden"]))
    if spec["normalize_obs"]:  # our mean and std; d3rlpy divides by std + eps, ours by std + 1e-3
        kwargs["observation_scaler"] = StandardObservationScaler(mean=arrays["obs_mean"], std=arrays["obs_std"],
                                                                 eps=1e-3)
    if spec["reward_multiplier"] != 1.0:
        kwargs["reward_scaler"] = MultiplyRewardScaler(multiplier=spec["reward_multiplier"])
    low, high = arrays["act_low"], arrays["act_high"]
    if not (np.all(low == -1.0) and np.all(high == 1.0)):  # ours maps the bounds onto [-1, 1]; a no-op for ±1
        kwargs["action_scaler"] = MinMaxActionScaler(minimum=low, maximum=high)
    algo = spec["algo"]
    if algo == "bc":
        config = d3rlpy.algos.BCConfig(encoder_factory=encoder, optim_factory=AdamFactory(), **kwargs)
    elif algo == "iql":
        cosine = CosineAnnealingLRFactory(T_max=spec["steps"])  # ours: CosineAnnealingLR(actor_opt, steps)
        config = d3rlpy.algos.IQLConfig(actor_encoder_factory=encoder, critic_encoder_factory=encoder,
                                        value_encoder_factory=encoder, critic_optim_factory=AdamFactory(),
                                        actor_optim_factory=AdamFactory(lr_scheduler_factory=cosine), **kwargs)
    elif algo == "cql":
        config = d3rlpy.algos.CQLConfig(actor_encoder_factory=encoder, critic_encoder_factory=encoder, **kwargs)
    else:
        raise ValueError(f"algo {algo!r}: expected bc, iql or cql")
    return config.create(device=False)


def run(spec: dict) -> dict:
    """Train, time and export one run; returns (and writes) ``result.json``'s content."""
    threads = int(spec["threads"])
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    import d3rlpy
    import torch

    torch.set_num_threads(threads)
    out = Path(spec["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # anything d3rlpy writes (d3rlpy_logs/) lands here
    arrays = dict(np.load(spec["npz"]))
    dataset = make_dataset(arrays)
    n = check_transitions(dataset, arrays) if spec.get("check", True) else dataset.transition_count
    d3rlpy.seed(int(spec["seed"]))
    algo = make_algo(spec, arrays)
    algo.build_with_dataset(dataset)
    steps = int(spec["steps"])
    tick = time.perf_counter()
    history = algo.fit(dataset, n_steps=steps, n_steps_per_epoch=steps, evaluators=None, save_interval=10**9,
                       show_progress=False, with_timestamp=False, experiment_name=f"{spec['algo']}-s{spec['seed']}",
                       logger_adapter=d3rlpy.logging.NoopAdapterFactory())
    seconds = time.perf_counter() - tick
    algo.save_policy(str(out / "policy.pt"))
    result = {"impl": "d3rlpy", "algo": spec["algo"], "seed": spec["seed"], "steps": steps, "train_s": seconds,
              "steps_per_s": steps / seconds, "transitions": n, "policy": str(out / "policy.pt"),
              "metrics": {k: float(v) for k, v in history[-1][1].items()}, "d3rlpy": d3rlpy.__version__,
              "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} SPEC.json")
    print(json.dumps(run(json.loads(Path(sys.argv[1]).read_text()))))
