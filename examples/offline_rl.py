"""Offline RL end to end in about a minute: collect D4RL-style datasets, train BC and IQL, fine-tune IQL online.

1. ``collect_datasets`` trains PPO on InvertedPendulum-v5 and writes random / medium / expert / medium-replay /
   medium-expert datasets in Minari format (under ``$MINARI_DATASETS_PATH``, here a temporary folder).
2. BC and IQL train on ``medium-replay`` (everything PPO saw on its way to the medium policy) and are scored with
   the shared protocol (D4RL-normalised).
3. IQL continues online with the dataset as the start of its replay buffer.

The same on Hopper: ``textenv datasets collect --env-id Hopper-v5`` then ``textenv train iql --dataset
robotics/hopper/medium-v0``.
"""

import os
import tempfile

os.environ.setdefault("MINARI_DATASETS_PATH", tempfile.mkdtemp(prefix="minari-"))

from agents.offline import (
    BCConfig,
    FinetuneSettings,
    IQLConfig,
    finetune_online,
    train_offline,
)
from agents.offline.collect import CollectConfig, collect_datasets

runs = tempfile.mkdtemp(prefix="offline-")
for did, summary in collect_datasets(CollectConfig(env_id="InvertedPendulum-v5", steps=5000, train_steps=32768),
                                     f"{runs}/collect").items():
    print(f"{did}: {summary['steps']} steps, {summary['episodes']} episodes, behaviour return "
          f"{summary['behaviour_return_mean']:.1f}")

dataset = "robotics/invertedpendulum/medium-replay-v0"
common = {"dataset": dataset, "steps": 3000, "hidden": (128, 128), "eval_every": 0}
bc = train_offline(BCConfig(**common), f"{runs}/bc")
iql = train_offline(IQLConfig(**common), f"{runs}/iql")
print(f"on {dataset}: BC scores {bc.final['eval_score']:.1f}, IQL {iql.final['eval_score']:.1f} (D4RL-normalised)")

offline, online = finetune_online(IQLConfig(**common), FinetuneSettings(online_steps=5000, online_eval_every=2500),
                                  f"{runs}/iql-online")
print(f"IQL online: {online.rows[0]['eval_score']:.1f} -> {online.rows[-1]['eval_score']:.1f} after 5000 env steps")
