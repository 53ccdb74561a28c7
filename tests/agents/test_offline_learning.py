"""Offline agents learn: on mixed-quality Pendulum data IQL and TD3+BC beat BC clearly; online fine-tuning improves IQL.

The data: 20,000 steps of Pendulum-v1 from an energy-pumping swing-up controller (about -150 per episode, the
"expert" reference) that takes a uniformly random action 80% of the time (about -790: D4RL score ≈ 39). BC
copies the average action and scores about 38; the value-based methods pick out the controller's actions.
Seeds are fixed; thresholds sit well below the measured scores (in the comments) and well above BC's.
"""

import gymnasium as gym
import numpy as np
import pytest

from agents.offline import (
    BCConfig,
    DTConfig,
    IQLConfig,
    TD3BCConfig,
    finetune_online,
    train_offline,
)
from agents.offline.train import FinetuneSettings
from robotics.datasets import load_dataset, rollout_episodes, write_dataset

pytestmark = pytest.mark.slow
RANDOM, EXPERT = -1200.0, -150.0


def controller(obs: np.ndarray) -> np.ndarray:
    """Swing up by pumping energy towards the upright level, then balance with a PD law."""
    c, s, w = obs
    u = -(12 * np.arctan2(s, c) + 2.5 * w) if c > 0.9 else 0.6 * w * (15 - (0.5 * w * w + 15 * c))
    return np.array([np.clip(u, -2, 2)], dtype=np.float32)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("minari")
    mp = pytest.MonkeyPatch()
    mp.setenv("MINARI_DATASETS_PATH", str(root))
    rng = np.random.default_rng(0)
    episodes = rollout_episodes(gym.make("Pendulum-v1"), lambda o: controller(o) if rng.random() > 0.8 else
                                rng.uniform(-2, 2, 1).astype(np.float32), 20_000, seed=0)
    write_dataset("robotics/pendulum/mixed-v0", episodes, "Pendulum-v1", RANDOM, EXPERT, "controller, 80% random",
                  "swing-up controller with random actions")
    yield load_dataset("robotics/pendulum/mixed-v0", env="Pendulum-v1")
    mp.undo()


def train(config, data, path):
    return train_offline(config, path, data=data, resume=False, progress=False).final["eval_score"]


def test_the_controller_and_the_data_are_what_the_docstring_says(mixed):
    from robotics.evaluation import evaluate

    assert evaluate(controller, "Pendulum-v1", episodes=10).mean > -250
    assert 20 < mixed.normalized_score(mixed.episode_returns().mean()) < 60


def test_iql_and_td3bc_beat_bc_on_mixed_quality_data(mixed, tmp_path):
    common = {"dataset": mixed.dataset_id, "hidden": (128, 128), "eval_every": 0, "eval_episodes": 10, "log_every": 500}
    bc = train(BCConfig(steps=3000, **common), mixed, tmp_path / "bc")  # measured 37.7
    iql = train(IQLConfig(steps=4000, **common), mixed, tmp_path / "iql")  # 99.8
    td3bc = train(TD3BCConfig(steps=10_000, **common), mixed, tmp_path / "td3bc")  # 82.9
    assert bc < 55
    assert iql > bc + 30 and iql > 75
    assert td3bc > bc + 20 and td3bc > 65


def test_online_finetuning_improves_the_offline_iql_policy(mixed, tmp_path):
    config = IQLConfig(dataset=mixed.dataset_id, steps=1000, hidden=(128, 128), eval_every=0, eval_episodes=10,
                       log_every=500)
    settings = FinetuneSettings(online_steps=4000, online_eval_every=1000, online_eval_episodes=10,
                                online_checkpoint_every=4000)
    offline, online = finetune_online(config, settings, tmp_path, data=mixed, progress=False)
    before, after = online.rows[0]["eval_score"], online.rows[-1]["eval_score"]  # measured -21.7 -> 101.5
    assert online.rows[0]["eval_return"] == pytest.approx(offline.final["eval_return"])
    assert after > before + 40 and after > 70


def test_decision_transformer_learns_from_good_data(tmp_path, monkeypatch):
    """DT on the controller with 30% random actions (D4RL score about 94): a small model learns to act well.

    (Before the timestep embedding got GPT-2's small initialisation, N(0, 1) embeddings drowned the tokens and
    this scored 39; BC scores about 98 on the same data.)"""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    rng = np.random.default_rng(1)
    episodes = rollout_episodes(gym.make("Pendulum-v1"), lambda o: controller(o) if rng.random() > 0.3 else
                                rng.uniform(-2, 2, 1).astype(np.float32), 10_000, seed=1)
    write_dataset("robotics/pendulum/good-v0", episodes, "Pendulum-v1", RANDOM, EXPERT, "controller, 30% random", "-")
    data = load_dataset("robotics/pendulum/good-v0")
    config = DTConfig(dataset=data.dataset_id, steps=1500, batch_size=32, context=5, n_layer=1, embed_dim=32,
                      dropout=0.0, lr=1e-3, warmup_steps=100, max_ep_len=200, target_return=EXPERT, eval_every=0,
                      eval_episodes=5, log_every=500)
    score = train(config, data, tmp_path / "dt")
    assert score > 85, score  # measured 92.6 (the data: about 94); random actions score about 0
