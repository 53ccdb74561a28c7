"""Resume: a run interrupted after its k-th checkpoint and started again equals the uninterrupted run.

"Interrupted" means what a crash does: a callback (or a patched ``Run.log``) raises after the last checkpoint,
so the rows logged since that checkpoint must be dropped and redone. Each test compares the resumed run with one
that ran straight through: the weights bit for bit and the metrics rows without their wall-clock columns. These
guard against a resume that restarts from step 0, or that reloads the weights but not the optimizer (Adam's
moments), the LR schedule, the sampler or the RNG states. They check behaviour, not the checkpoint's file layout.
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents import PGConfig, train_pg

CLOCK = ("time_s", "steps_per_s")


class Interrupt(Exception):
    pass


def crash_at(iteration: int):
    def callback(row, _):
        if row["iteration"] == iteration:
            raise Interrupt

    return callback


class _CrashAfterLogging:
    """Patches ``Run.log`` to raise once the row of step ``step`` is logged (SFT, DPO and online fine-tuning take
    no callback)."""

    def __init__(self, monkeypatch, step, only=lambda run: True):
        from agents.core.run import Run

        real = Run.log

        def log(run, row):
            real(run, row)
            if row["iteration"] == step and only(run):
                raise Interrupt

        monkeypatch.setattr(Run, "log", log)


def without(rows, drop=CLOCK):
    """The rows without the ``drop`` columns, NaN spelled "nan" (NaN != NaN would fail any comparison)."""
    nan = lambda v: "nan" if isinstance(v, float) and np.isnan(v) else v  # noqa: E731
    return [{k: nan(v) for k, v in row.items() if k not in drop} for row in rows]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module):
    a, b = a.state_dict(), b.state_dict()
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ: {different}"


def assert_some_weights_differ(a: torch.nn.Module, b: torch.nn.Module):
    assert any(not torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


# ------------------------------------------------------------------ REINFORCE / RLOO / GRPO (the on-policy loop)
def _pg(estimator, **changes):
    return PGConfig(**{**dict(env_id="textenv/Bandit-v0", estimator=estimator, iterations=4, prompts_per_iter=2,
                              group_size=4, lr=3e-2, kl_coef=0.0, epochs=2, minibatch_rows=4, checkpoint_every=2,
                              seed=5), **changes})


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "reinforce"])
def test_group_estimators_are_seeded_and_resume_exactly(estimator, tmp_path):
    straight = train_pg(_pg(estimator), tmp_path / "a", progress=False)
    again = train_pg(_pg(estimator), tmp_path / "b", progress=False)
    assert without(straight.rows) == without(again.rows)
    assert_same_weights(straight.policy, again.policy)
    other = train_pg(_pg(estimator, seed=6), tmp_path / "c", progress=False)
    assert without(other.rows) != without(straight.rows)  # the seed matters: the comparison above can fail

    with pytest.raises(Interrupt):  # checkpoint at iteration 2, crash after logging iteration 3
        train_pg(_pg(estimator), tmp_path / "cut", progress=False, callback=crash_at(3))
    resumed = train_pg(_pg(estimator), tmp_path / "cut", progress=False)
    assert [r["iteration"] for r in resumed.rows] == [1, 2, 3, 4]
    assert without(resumed.rows) == without(straight.rows)
    assert_same_weights(resumed.policy, straight.policy)


def test_a_group_run_extended_to_more_iterations_equals_the_longer_run(tmp_path):
    """``iterations`` is a field a resume may change (``Run(ignore=...)``): 2 then 4 equals 4 in one go."""
    straight = train_pg(_pg("grpo"), tmp_path / "a", progress=False)
    train_pg(_pg("grpo", iterations=2), tmp_path / "cut", progress=False)
    resumed = train_pg(_pg("grpo", iterations=4, threads=1, checkpoint_every=3), tmp_path / "cut", progress=False)
    assert without(resumed.rows) == without(straight.rows)
    assert_same_weights(resumed.policy, straight.policy)
    with pytest.raises(ValueError, match=r"different config \(lr: 0.03 -> 0.01\)"):  # a field that is not ignored
        train_pg(_pg("grpo", lr=1e-2), tmp_path / "cut", progress=False)


# ------------------------------------------------------------------ PPO on control tasks
class Drift(gym.Env):
    """A point pushed along a line: obs (x, v), reward −x², always reset to x = 0.5, v = 0 (no randomness), so an
    episode of exactly ``n_steps`` steps ends at every iteration boundary and a resumed run's fresh reset is the
    state the uninterrupted run was in anyway."""

    observation_space = spaces.Box(-10.0, 10.0, (2,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.v = 0.5, 0.0
        return self._obs(), {}

    def step(self, action):
        self.v = 0.9 * self.v + 0.1 * float(np.clip(action[0], -1, 1))
        self.x += self.v
        return self._obs(), -self.x**2, False, False, {}

    def _obs(self):
        return np.array([self.x, self.v], dtype=np.float32)


DRIFT = "test/Drift-v0"
if DRIFT not in gym.registry:
    gym.register(DRIFT, entry_point=Drift, max_episode_steps=16)


def _control(**changes):
    from agents.control import ControlPPOConfig

    return ControlPPOConfig(**{**dict(env_id=DRIFT, total_steps=128, num_envs=2, n_steps=16, batch_size=8, epochs=2,
                                      normalize_obs=True, normalize_reward=True, checkpoint_every=2, seed=1), **changes})


@pytest.mark.slow
def test_control_ppo_resume_equals_the_uninterrupted_run(tmp_path):
    """Resuming restores the policy (with its observation statistics), Adam's state, the reward scaler and the
    iteration. On this deterministic env, whose episodes end at every iteration boundary, that makes a resumed run
    bit-identical to an uninterrupted one (``episode_return`` averages the last 20 episodes the process saw, which a
    new process does not remember, so it is left out of the comparison)."""
    from agents.control import train_control_ppo

    straight = train_control_ppo(_control(), tmp_path / "a", progress=False)
    assert [r["iteration"] for r in straight.rows] == [1, 2, 3, 4]
    assert all(r["episodes"] == 2 for r in straight.rows)  # one episode per env per iteration, as the test needs
    with pytest.raises(Interrupt):
        train_control_ppo(_control(), tmp_path / "cut", progress=False, callback=crash_at(3))
    resumed = train_control_ppo(_control(), tmp_path / "cut", progress=False)
    drop = (*CLOCK, "episode_return")
    assert [r["iteration"] for r in resumed.rows] == [1, 2, 3, 4]
    assert without(resumed.rows, drop) == without(straight.rows, drop)
    assert_same_weights(resumed.policy, straight.policy)
    # the same run to 2 iterations, extended to 4 (total_steps may change on resume)
    train_control_ppo(_control(total_steps=64), tmp_path / "ext", progress=False)
    extended = train_control_ppo(_control(), tmp_path / "ext", progress=False)
    assert_same_weights(extended.policy, straight.policy)
    other = train_control_ppo(_control(seed=2), tmp_path / "seed2", progress=False)
    assert_some_weights_differ(other.policy, straight.policy)


# ------------------------------------------------------------------ Decision Transformer and IQL online
@pytest.fixture(scope="module")
def pendulum(tmp_path_factory):
    """600 random-action Pendulum-v1 transitions (episodes of 200), written and loaded through Minari."""
    pytest.importorskip("minari")
    from robotics.datasets import load_dataset, rollout_episodes, write_dataset

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("datasets")))
        env = gym.make("Pendulum-v1")
        env.action_space.seed(0)
        episodes = rollout_episodes(env, lambda obs: env.action_space.sample(), 600, seed=0)
        write_dataset("test/pendulum/resume-v0", episodes, "Pendulum-v1", -1500.0, -150.0, "random", "test")
        return load_dataset("test/pendulum/resume-v0", env="Pendulum-v1")


def _dt(pendulum, **changes):
    from agents.offline import DTConfig

    return DTConfig(**{**dict(dataset=pendulum.dataset_id, steps=40, batch_size=8, context=4, n_layer=1, embed_dim=16,
                              lr=1e-3, warmup_steps=5, max_ep_len=200, eval_every=0, eval_episodes=1, log_every=10,
                              checkpoint_every=10, seed=0), **changes})


@pytest.mark.slow
def test_decision_transformer_is_seeded_and_resumes_bit_identically(pendulum, tmp_path):
    from agents.offline import train_offline

    def run(path, callback=None, **changes):
        return train_offline(_dt(pendulum, **changes), tmp_path / path, data=pendulum, progress=False, callback=callback)

    a, b, c = run("a"), run("b"), run("c", seed=1)
    assert [r["iteration"] for r in a.rows] == [10, 20, 30, 40]
    assert without(a.rows) == without(b.rows)
    assert_same_weights(a.algorithm, b.algorithm)
    assert without(a.rows) != without(c.rows)
    with pytest.raises(Interrupt):  # checkpoint at 20 (the one at 30 is written after the callback)
        run("cut", callback=crash_at(30))
    resumed = run("cut")
    assert [r["iteration"] for r in resumed.rows] == [10, 20, 30, 40]
    assert without(resumed.rows) == without(a.rows)
    assert_same_weights(resumed.algorithm, a.algorithm)


def _iql_online(pendulum, path, online_steps=400, crash_at_row=None):
    from agents.offline import IQLConfig, finetune_online
    from agents.offline.train import FinetuneSettings

    config = IQLConfig(dataset=pendulum.dataset_id, steps=30, hidden=(16, 16), batch_size=16, eval_every=0,
                       eval_episodes=1, log_every=10, checkpoint_every=30, seed=0)
    settings = FinetuneSettings(online_steps=online_steps, online_eval_every=100, online_eval_episodes=1,
                                online_checkpoint_every=200)
    with pytest.MonkeyPatch.context() as m:
        if crash_at_row is not None:
            _CrashAfterLogging(m, crash_at_row, only=lambda run: run.path.name == "online")
        return finetune_online(config, settings, path, data=pendulum, progress=False)


ONLINE_DROP = (*CLOCK, "train_return")  # the last 10 training episodes this process saw: a new process has none


@pytest.mark.slow
def test_iql_online_resumes_at_an_episode_boundary_bit_identically(pendulum, tmp_path):
    """Online fine-tuning that crashed after step 300 (last checkpoint: step 200, Pendulum's episode length, so the
    resumed env's fresh reset is the reset the uninterrupted run does there) and resumed equals the uninterrupted
    run: the agent, its optimizers, the replay buffer's online rows and its sampler all come back, and the offline
    phase is not redone."""
    offline, straight = _iql_online(pendulum, tmp_path / "a")
    with pytest.raises(Interrupt):
        _iql_online(pendulum, tmp_path / "cut", crash_at_row=300)
    offline_csv = (tmp_path / "cut" / "offline" / "metrics.csv").read_text()
    offline_again, resumed = _iql_online(pendulum, tmp_path / "cut")
    assert (tmp_path / "cut" / "offline" / "metrics.csv").read_text() == offline_csv  # not retrained
    assert without(offline_again.rows) == without(offline.rows)
    assert [r["iteration"] for r in resumed.rows] == [0, 100, 200, 300, 400]
    assert without(resumed.rows, ONLINE_DROP) == without(straight.rows, ONLINE_DROP)
    assert_same_weights(resumed.algorithm, straight.algorithm)


@pytest.mark.slow
def test_iql_online_extended_to_more_steps_equals_the_longer_run(pendulum, tmp_path):
    """Guards against a bug this test found: the replay buffer's capacity is len(data) + online_steps, and
    load_online_state restored the write position of the old, smaller buffer (wrapped to the first online row once
    it was full), so a resume with more online_steps overwrote the first online transitions instead of appending.
    200 online steps, then the same command with ``online_steps=400`` (FinetuneSettings are not part of the
    checked config, so the resume is accepted), equals 400 steps in one go."""
    _, straight = _iql_online(pendulum, tmp_path / "a")
    _iql_online(pendulum, tmp_path / "cut", online_steps=200)
    _, resumed = _iql_online(pendulum, tmp_path / "cut")
    assert [r["iteration"] for r in resumed.rows] == [0, 100, 200, 300, 400]
    assert without(resumed.rows, ONLINE_DROP) == without(straight.rows, ONLINE_DROP)
    assert_same_weights(resumed.algorithm, straight.algorithm)


# ------------------------------------------------------------------ SFT and DPO (the supervised loop)
REVIEWS = [("the food was", " great and the staff were friendly .", " bad and the staff were rude ."),
           ("the room was", " clean and quiet .", " dirty and loud ."),
           ("our waiter was", " kind and quick .", " slow and rude ."),
           ("the pasta was", " fresh .", " cold .")]


def _lm_weights(path):
    from agents.policies.lm import LMPolicy

    return LMPolicy.from_pretrained(path).model


def _crash_and_resume(train_fn, config, tmp_path, monkeypatch):
    """Train ``config`` straight into ``a``; into ``cut`` crash after step 3 (checkpoint: step 2) and resume."""
    straight = train_fn(config, tmp_path / "a", progress=False)
    with monkeypatch.context() as m:
        _CrashAfterLogging(m, 3)
        with pytest.raises(Interrupt):
            train_fn(config, tmp_path / "cut", progress=False)
    resumed = train_fn(config, tmp_path / "cut", progress=False)
    a, cut = without(_csv(tmp_path / "a" / "metrics.csv")), without(_csv(tmp_path / "cut" / "metrics.csv"))
    assert [r["iteration"] for r in cut] == [str(i) for i in range(1, 7)]
    assert cut == a
    assert_same_weights(_lm_weights(resumed), _lm_weights(straight))
    return straight


def _length_reward(prompts, completions):
    return [len(c) / 10 for c in completions]


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_a_group_estimator_on_a_text_env_resumes_exactly(estimator, tmp_path, tiny_lm):
    """The LM path of the same loop (KV-cached sampling, the env's KL shaping against the reference, adaptive β):
    crash after iteration 3, resume from the checkpoint at 2, and get the uninterrupted run's rows and weights."""
    from agents.policies.lm import LMPolicy  # noqa: F401  (the policy class the text env gets)

    def config(**changes):
        return PGConfig(**{**dict(model=str(tiny_lm), estimator=estimator, iterations=4,  # the default text env id
                                  prompts_per_iter=2, group_size=2, max_new_tokens=4, lr=1e-2, kl_coef=0.1,
                                  kl_target=0.5, kl_horizon=16, checkpoint_every=2, seed=2,
                                  env_kwargs={"reward_model": _length_reward, "gold_reward": None,
                                              "prompts": [p for p, _, _ in REVIEWS]}), **changes})

    straight = train_pg(config(), tmp_path / "a", progress=False)
    assert len({r["beta"] for r in straight.rows}) > 1  # β moved, so its controller state must come back too
    with pytest.raises(Interrupt):
        train_pg(config(), tmp_path / "cut", progress=False, callback=crash_at(3))
    resumed = train_pg(config(), tmp_path / "cut", progress=False)
    assert without(resumed.rows) == without(straight.rows)
    assert_same_weights(resumed.policy, straight.policy)


def test_sft_resumes_exactly(tmp_path, tiny_lm, monkeypatch):
    """6 steps (8 demonstrations, batches of 4, 3 epochs), checkpoints every 2; a crash after step 3 resumes from
    step 2 with the saved AdamW state and LR schedule. Guards against a resume that starts again at step 0 or with
    a fresh optimizer (both give different weights and rows)."""
    from agents.text.sft import SFTConfig, train_sft

    data = tmp_path / "demos.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, w, l in REVIEWS for c in (w, l)))
    config = SFTConfig(model=str(tiny_lm), data=str(data), epochs=3, batch_size=4, lr=1e-2, max_length=40,
                       checkpoint_every=2, seed=3)
    straight = _crash_and_resume(train_sft, config, tmp_path, monkeypatch)
    assert_some_weights_differ(_lm_weights(straight), _lm_weights(tiny_lm))  # it trained at all


def test_dpo_resumes_exactly(tmp_path, tiny_lm, monkeypatch):
    """As for SFT: 12 preference pairs in batches of 4 for 2 epochs (6 steps), against the initial model."""
    from agents.text.dpo import DPOConfig, train_dpo

    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "chosen": w, "rejected": l}) + "\n" for p, w, l in REVIEWS * 3))
    config = DPOConfig(model=str(tiny_lm), data=str(data), max_pairs=None, batch_size=4, epochs=2, lr=1e-2,
                       max_length=40, checkpoint_every=2, seed=3)
    _crash_and_resume(train_dpo, config, tmp_path, monkeypatch)


def _csv(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))
