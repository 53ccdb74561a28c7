"""Run directories, checkpoints and resume (issue 12 §5): no diverged state is ever checkpointed, a diverged policy
is reported as divergence, ``resume=False`` removes the old checkpoint only once the new run has loaded, a save
killed between its two renames is recovered bit-identically, and a truncated checkpoint names its file."""

import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from agents.core import run as run_module
from agents.text.ppo import PPOConfig, train_ppo
from agents.core.run import Run
from agents.core.update import TrainingDiverged
from textenv.checkpoint import load_state, recover


@dataclass
class _Config:
    lr: float = 1e-3
    seed: int = 0


def _saved_run(path, iteration=1):
    """A run directory with one checkpoint of a tiny linear policy and its AdamW state."""
    torch.manual_seed(0)
    policy = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    policy(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    run = Run(path, _Config())
    run.start(resume=True)
    run.log({"iteration": iteration, "loss": 0.5})
    run.save(policy, {"optimizer": optimizer.state_dict(), "iteration": iteration})
    return run, policy, optimizer


def _bandit(**changes):
    return PPOConfig(**{**dict(env_id="textenv/Bandit-v0", iterations=6, prompts_per_iter=8, kl_coef=0.0,
                               checkpoint_every=2, seed=2), **changes})


# ---------------------------------------------------------------- 1. a NaN policy is never checkpointed
@pytest.mark.parametrize("where", ["weights", "optimizer"])
def test_a_nan_policy_or_optimizer_state_is_not_checkpointed_over_the_last_good_one(tmp_path, where):
    """Guards against ``Run.save`` writing NaN weights (or NaN Adam moments) over the last good checkpoint, after
    which every resume failed: it must raise ``TrainingDiverged`` naming the untouched last checkpoint."""
    run, policy, optimizer = _saved_run(tmp_path, iteration=1)
    good = {k: v.clone() for k, v in policy.state_dict().items()}
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoint").iterdir()}
    with torch.no_grad():
        if where == "weights":
            policy.weight[0, 0] = float("nan")
        else:
            optimizer.state[policy.weight]["exp_avg_sq"][0, 0] = float("inf")
    bad = "policy.weight" if where == "weights" else "trainer state.optimizer.state.0.exp_avg_sq"
    with pytest.raises(TrainingDiverged, match=rf"{bad} holds NaN/inf at iteration 2: training diverged \(lr=0.001: "
                                               rf"lower it\).*last good checkpoint, .*checkpoint \(iteration 1\), "
                                               rf"is untouched"):
        run.save(policy, {"optimizer": optimizer.state_dict(), "iteration": 2})
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoint").iterdir()} == before
    assert not (tmp_path / "checkpoint.tmp").exists()
    state = Run(tmp_path, _Config()).start(resume=True)
    assert state["iteration"] == 1
    saved = torch.load(tmp_path / "checkpoint" / "policy.pt", weights_only=True)
    assert all(torch.equal(saved[k], good[k]) for k in good)


# ---------------------------------------------------------------- 2. too high a learning rate is divergence
def test_a_huge_learning_rate_is_reported_as_divergence_and_not_checkpointed(tmp_path, lm_dir):
    """Guards against ``train ppo --lr 1e20`` ending in the KL wrapper's "check the supplied policy log-probs"
    error (NaN sampling distribution) after checkpointing weights of ~1e20: it is divergence, said so, with the
    learning rate named, and no checkpoint of the blown-up policy is written."""
    from textenv import world

    config = PPOConfig(iterations=3, prompts_per_iter=4, max_new_tokens=6, minibatch_rows=4, epochs=1, lr=1e20,
                       checkpoint_every=1, seed=0, env_kwargs={"reward_model": world.gold_sentiment})
    with pytest.raises(TrainingDiverged, match=r"training diverged at iteration 1: .*lr=1e\+20\): lower it\. No "
                                               r"checkpoint has been written"):
        train_ppo(config, tmp_path, progress=False)
    assert not (tmp_path / "checkpoint").exists()


def test_nan_weights_after_an_update_stop_the_run_as_divergence(tmp_path, monkeypatch):
    """The check after each update: weights made NaN by an update stop the run as divergence (naming the weight
    and the learning rate) before they are sampled from or checkpointed."""
    from agents.core import onpolicy

    real = onpolicy.ppo_update

    def poison(policy, *args, **kwargs):
        out = real(policy, *args, **kwargs)
        with torch.no_grad():
            next(policy.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(onpolicy, "ppo_update", poison)
    with pytest.raises(TrainingDiverged, match=r"iteration 1: weight\.\S+ is NaN/inf after the update\. The learning "
                                               r"rate is too high for this run \(lr=0\.0001\)"):
        train_ppo(_bandit(), tmp_path, progress=False)
    assert not (tmp_path / "checkpoint").exists()


# ---------------------------------------------------------------- 3. --no-resume deletes last
def _sentinel_checkpoint(path):
    (path / "checkpoint").mkdir(parents=True)
    (path / "checkpoint" / "sentinel").write_text("the previous run's checkpoint")


def _fails_to_start_ppo(path):
    from textenv import world

    config = PPOConfig(model=str(path / "no-such-model"), iterations=1, env_kwargs={"reward_model": world.gold_sentiment})
    with pytest.raises(Exception, match="no-such-model"):
        train_ppo(config, path, resume=False, progress=False)


def _fails_to_start_control(path):
    pytest.importorskip("mujoco")
    from agents.control import ControlPPOConfig, train_control_ppo

    with pytest.raises(TypeError, match="no_such_kwarg"):
        train_control_ppo(ControlPPOConfig(env_kwargs={"no_such_kwarg": 1}, total_steps=64, n_steps=64),
                          path, resume=False, progress=False)


def _fails_to_start_sft(path):
    from agents.text.sft import SFTConfig, train_sft

    data = path.parent / "demos.jsonl"
    data.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    with pytest.raises(Exception, match="no-such-model"):
        train_sft(SFTConfig(model=str(path / "no-such-model"), data=str(data)), path, resume=False, progress=False)


def _fails_to_start_dpo(path):
    from agents.text.dpo import DPOConfig, train_dpo

    data = path.parent / "prefs.jsonl"
    data.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    with pytest.raises(Exception, match="no-such-model"):
        train_dpo(DPOConfig(model=str(path / "no-such-model"), data=str(data)), path, resume=False, progress=False)


def _fails_to_start_offline(path):
    pytest.importorskip("minari")
    from agents.offline import BCConfig, train_offline

    with pytest.raises(Exception, match="no-such-dataset"):
        train_offline(BCConfig(dataset="test/no-such-dataset-v0", steps=10), path, resume=False, progress=False)


def _fails_to_start_reward_model(path):
    from textenv.rm import RewardModelConfig, train_reward_model

    data = path.parent / "prefs.jsonl"
    data.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    config = RewardModelConfig(train_file=str(data), output_dir=str(path), base_model=str(path / "no-such-model"))
    with pytest.raises(Exception, match="no-such-model"):
        train_reward_model(config, resume=False, progress=False)


@pytest.mark.parametrize("fails_to_start", [_fails_to_start_ppo, _fails_to_start_control, _fails_to_start_sft,
                                            _fails_to_start_dpo, _fails_to_start_offline, _fails_to_start_reward_model])
def test_no_resume_keeps_the_old_checkpoint_until_the_new_run_has_loaded(tmp_path, fails_to_start, monkeypatch):
    """Guards against ``--no-resume`` with a bad ``--model`` (or env, or dataset) deleting the existing checkpoint
    before the new run fails: every trainer loads first and removes the old checkpoint last."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    path = tmp_path / "run"
    _sentinel_checkpoint(path)
    fails_to_start(path)
    assert (path / "checkpoint" / "sentinel").read_text() == "the previous run's checkpoint"


def test_no_resume_removes_the_old_checkpoint_once_training_starts(tmp_path):
    """The other half: a started ``resume=False`` run does replace the old checkpoint (and its metrics)."""
    _saved_run(tmp_path, iteration=7)
    result = train_ppo(_bandit(iterations=2), tmp_path, resume=False, progress=False)
    assert [r["iteration"] for r in result.rows] == [1, 2]
    assert json.loads((tmp_path / "checkpoint" / "complete.json").read_text())["progress"] == "iteration 2"


# ---------------------------------------------------------------- 4. a kill between the renames
def _kill_at_rename(monkeypatch, source: str, occurrence: int):
    """Make ``os.replace`` in agents.core.run raise (a kill at that moment) at its ``occurrence``-th rename of a folder
    named ``source``."""
    seen = {"n": 0}
    real = os.replace

    def replace(src, dst):
        if os.path.basename(src) == source:
            seen["n"] += 1
            if seen["n"] == occurrence:
                raise KeyboardInterrupt(f"killed before renaming {src} -> {dst}")
        return real(src, dst)

    monkeypatch.setattr(run_module.os, "replace", replace)


@pytest.mark.parametrize("source, occurrence", [("checkpoint", 1), ("checkpoint.tmp", 2)],
                         ids=["before-the-first-rename", "between-the-renames"])
def test_a_save_killed_between_its_renames_resumes_bit_identically(tmp_path, monkeypatch, source, occurrence):
    """Guards against a kill between ``Run.save``'s two renames restarting the run from 0 although whole
    checkpoints sit in ``checkpoint.old`` / ``checkpoint.tmp``: the newest whole one is recovered and the resumed
    run ends with the same weights and metrics as an uninterrupted one.

    A run of 6 iterations saving every 2 renames checkpoint.tmp -> checkpoint at iteration 2, then at iteration 4
    checkpoint -> checkpoint.old and checkpoint.tmp -> checkpoint: the kill cuts the save at iteration 4."""
    straight = train_ppo(_bandit(), tmp_path / "straight", progress=False)
    cut = tmp_path / "cut"
    _kill_at_rename(monkeypatch, source, occurrence)
    with pytest.raises(KeyboardInterrupt):
        train_ppo(_bandit(), cut, progress=False)
    monkeypatch.undo()
    assert (cut / "checkpoint.tmp" / "complete.json").exists()  # the whole iteration-4 checkpoint
    if source == "checkpoint.tmp":
        assert not (cut / "checkpoint").exists() and (cut / "checkpoint.old" / "complete.json").exists()
    resumed = train_ppo(_bandit(), cut, progress=False)
    drop = lambda rows: [{k: repr(v) for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731  (nan == nan)
    assert [r["iteration"] for r in resumed.rows] == [1, 2, 3, 4, 5, 6]
    assert drop(resumed.rows) == drop(straight.rows)
    for p, q in zip(resumed.policy.parameters(), straight.policy.parameters()):
        assert torch.equal(p, q)
    assert not (cut / "checkpoint.tmp").exists() and not (cut / "checkpoint.old").exists()


@pytest.mark.parametrize("newest", ["whole", "partial"])
def test_shared_checkpoints_resume_from_the_newest_whole_folder_left_between_the_renames(tmp_path, monkeypatch, newest):
    """:class:`textenv.checkpoint.Checkpoints` (what ``Run`` and the RM trainer share): a save killed between its
    renames leaves the new checkpoint in ``checkpoint.tmp`` and the old one in ``checkpoint.old``; ``load`` takes
    the new one, or the old one where the new one is not whole."""
    from textenv.checkpoint import Checkpoints, MARKER

    checkpoints = Checkpoints(tmp_path, {"lr": 0.1}, format=2)
    write = lambda folder: (folder / "weights.bin").write_bytes(b"w" * 8)  # noqa: E731
    checkpoints.save(write, {"step": 1}, "step 1", {"weight": {"w": torch.ones(2)}})
    _kill_at_rename(monkeypatch, "checkpoint.tmp", 1)  # the second save's, after checkpoint -> checkpoint.old
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(write, {"step": 2}, "step 2", {"weight": {"w": torch.ones(2)}})
    monkeypatch.undo()
    assert not (tmp_path / "checkpoint").exists() and (tmp_path / "checkpoint.old" / MARKER).exists()
    if newest == "partial":
        (tmp_path / "checkpoint.tmp" / MARKER).unlink()
    assert checkpoints.load()["step"] == (2 if newest == "whole" else 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    with pytest.raises(ValueError, match=r"different config \(lr: 0.1 -> 0.2\)"):
        Checkpoints(tmp_path, {"lr": 0.2}, format=2).load()


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    from textenv.checkpoint import atomic_write

    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_write(path) as f:
        f.write("half of the new")
        raise KeyboardInterrupt
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_partial_checkpoint_tmp_is_ignored(tmp_path):
    """A ``checkpoint.tmp`` without its completeness marker (killed while writing) is not taken."""
    _saved_run(tmp_path, iteration=3)
    (tmp_path / "checkpoint.tmp").mkdir()
    (tmp_path / "checkpoint.tmp" / "trainer_state.pt").write_bytes(b"half a file")
    assert Run(tmp_path, _Config()).start(resume=True)["iteration"] == 3
    assert not (tmp_path / "checkpoint.tmp").exists()


# ---------------------------------------------------------------- 5. a truncated file is named
def _tiny_lm_policy():
    from transformers import GPT2Config, GPT2LMHeadModel

    from agents.policies.lm import LMPolicy

    torch.manual_seed(0)
    return LMPolicy(GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=2)))


@pytest.mark.parametrize("name", ["policy/model.safetensors", "trainer_state.pt"])
def test_a_truncated_checkpoint_file_is_named_with_the_way_out(tmp_path, name):
    """Guards against a truncated ``model.safetensors`` / ``trainer_state.pt`` giving a raw ``SafetensorError``
    with no path on resume: the error names the file and says to pass --no-resume or delete the folder."""
    run = Run(tmp_path, _Config())
    run.start(resume=False)
    run.save(_tiny_lm_policy(), {"iteration": 1})
    path = tmp_path / "checkpoint" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{path}.*truncated.*--no-resume\), or delete the folder"):
        Run(tmp_path, _Config()).start(resume=True)


def test_trainer_state_round_trips_numpy_and_rng_exactly(tmp_path):
    """What ``to_safe`` stores (numpy RNG state as a tensor) restores the very same numpy stream."""
    from agents.core.run import from_safe, to_safe

    np.random.seed(5)
    np.random.rand(3)
    state = from_safe(to_safe({"rng": np.random.get_state(), "ret": np.arange(3.0), "n": np.float32(0.5)}))
    expected = np.random.rand(4)
    np.random.set_state(tuple(state["rng"]))
    assert np.array_equal(np.random.rand(4), expected)
    assert state["ret"].dtype == np.float64 and state["n"] == 0.5 and type(state["n"]) is float
    with pytest.raises(TypeError, match=r"state\['f'\]: a function cannot be stored"):
        to_safe({"f": lambda: 0})


# ---------------------------------------------------------------- the reward-model trainer's own checkpoints
@pytest.fixture(scope="module")
def rm_data(tmp_path_factory):
    """48 hand-made preference pairs (the built-in preference data is not needed to test checkpoints)."""
    words = ["good", "great", "fine", "warm", "bad", "dull", "poor", "cold"]
    path = tmp_path_factory.mktemp("prefs") / "train.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"the film {i} was", "chosen": f" {words[i % 4]} and {words[(i + 1) % 4]}",
                                        "rejected": f" {words[4 + i % 4]}"}) + "\n" for i in range(48)))
    return path


@pytest.mark.slow
def test_a_reward_model_save_killed_between_its_renames_resumes_to_the_same_weights(rm_data, tmp_path, monkeypatch):
    """Guards against the RM trainer's copy of the atomic save losing a whole checkpoint to a kill between its
    renames: the newest whole one (``checkpoint.tmp``) is resumed and the final weights equal an uninterrupted run's."""
    from safetensors.torch import load_file

    from textenv import world
    from textenv.rm import RewardModelConfig, train_reward_model
    from textenv.rm import train as rm_train

    def config(out):
        return RewardModelConfig(train_file=str(rm_data), output_dir=str(out), epochs=1, batch_size=8,
                                 checkpoint_every=2, lr=1e-3, threads=1, base_model=str(world.lm_path(progress=False)))

    straight = train_reward_model(config(tmp_path / "straight"), progress=False)
    seen = {"n": 0}
    real = os.replace

    def replace(src, dst):  # the second save's checkpoint.tmp -> checkpoint rename (step 4) is cut
        if os.path.basename(src) == "checkpoint.tmp":
            seen["n"] += 1
            if seen["n"] == 2:
                raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(rm_train.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        train_reward_model(config(tmp_path / "cut"), progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "cut" / "checkpoint").exists() and (tmp_path / "cut" / "checkpoint.tmp").exists()
    state = load_state(recover(tmp_path / "cut"), rm_train.FORMAT, rm_train._WAY_OUT)
    assert state["step"] == 4
    resumed = train_reward_model(config(tmp_path / "cut"), progress=False)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_truncated_reward_model_checkpoint_is_named(tmp_path):
    """The RM trainer's checkpoint: a file shorter than recorded names itself and the way out."""
    from textenv.rm import train as rm_train

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    torch.save({"format": 2, "step": 1}, checkpoint / "trainer_state.pt")
    size = (checkpoint / "trainer_state.pt").stat().st_size
    (checkpoint / "complete.json").write_text(json.dumps({"format": 2, "step": 1, "files": {"trainer_state.pt": size}}))
    assert load_state(checkpoint, rm_train.FORMAT, rm_train._WAY_OUT)["step"] == 1
    (checkpoint / "trainer_state.pt").write_bytes((checkpoint / "trainer_state.pt").read_bytes()[: size // 2])
    with pytest.raises(ValueError, match=rf"{checkpoint / 'trainer_state.pt'} is truncated.*--no-resume"):
        load_state(checkpoint, rm_train.FORMAT, rm_train._WAY_OUT)


def test_a_nan_reward_model_is_not_checkpointed(tmp_path):
    """Guards against the RM trainer's save writing NaN weights over its last good checkpoint."""
    from textenv.rm import RewardModelConfig
    from textenv.rm import train as rm_train

    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.bias.fill_(float("nan"))
    optimizer = torch.optim.AdamW(model.parameters())
    config = RewardModelConfig(train_file="unused.jsonl", lr=0.5)
    with pytest.raises(FloatingPointError, match=r"weight.bias holds NaN/inf at step 3: training diverged \(lr=0.5: "
                                                 r"lower it\); this state was not checkpointed. No checkpoint"):
        rm_train._save_checkpoint(tmp_path, model, None, optimizer, None, 3, [], config)
    assert list(tmp_path.iterdir()) == []


def test_a_config_field_added_with_a_default_keeps_older_checkpoints_resumable(tmp_path):
    """A checkpoint written before a config field existed (it does not hold the field) resumes when the field is at
    its default, and is refused, naming the field, when it is not."""
    from textenv.checkpoint import Checkpoints

    write = lambda folder: (folder / "weights.bin").write_bytes(b"w")  # noqa: E731
    Checkpoints(tmp_path, {"lr": 0.1}, format=2).save(write, {"step": 1}, "step 1", {})
    defaults = {"lr": 0.3, "critic_warmup": 0}
    assert Checkpoints(tmp_path, {"lr": 0.1, "critic_warmup": 0}, format=2, defaults=defaults).load()["step"] == 1
    with pytest.raises(ValueError, match=r"critic_warmup: 0 -> 4"):
        Checkpoints(tmp_path, {"lr": 0.1, "critic_warmup": 4}, format=2, defaults=defaults).load()
    with pytest.raises(ValueError, match=r"critic_warmup: None -> 0"):  # without defaults: refused as before
        Checkpoints(tmp_path, {"lr": 0.1, "critic_warmup": 0}, format=2).load()


def test_a_control_run_written_before_the_policy_fields_existed_resumes(tmp_path):
    """ControlPPOConfig gained policy, policy_kwargs, init_policy and critic_warmup: a checkpoint whose config lacks
    them (what an earlier textenv wrote) resumes unchanged."""
    from agents.control import ControlPPOConfig, train_control_ppo

    config = ControlPPOConfig(env_id="CartPole-v1", total_steps=128, n_steps=64, batch_size=32, epochs=1,
                              checkpoint_every=1)
    train_control_ppo(config, tmp_path, progress=False)
    state_file = tmp_path / "checkpoint" / "trainer_state.pt"
    state = torch.load(state_file, weights_only=True)
    for key in ("policy", "policy_kwargs", "init_policy", "critic_warmup"):
        del state["config"][key]
    torch.save(state, state_file)
    import json

    from textenv.checkpoint import MARKER, STATE

    marker = tmp_path / "checkpoint" / MARKER  # it records each file's size: keep it in step with the new state
    meta = json.loads(marker.read_text())
    meta["files"][STATE] = state_file.stat().st_size
    marker.write_text(json.dumps(meta))
    resumed = train_control_ppo(ControlPPOConfig(**{**vars(config), "total_steps": 192}), tmp_path, progress=False)
    assert [row["iteration"] for row in resumed.rows] == [1, 2, 3]


def test_an_annealed_control_run_refuses_another_budget_and_a_constant_one_extends(tmp_path):
    """With anneal_lr the learning rate decays over total_steps, so resuming with another budget would bend the
    schedule mid-run: refused, naming the field. Without it, a larger total_steps extends the run."""
    from agents.control import ControlPPOConfig, train_control_ppo

    small = dict(env_id="CartPole-v1", n_steps=64, batch_size=32, epochs=1)
    train_control_ppo(ControlPPOConfig(total_steps=64, anneal_lr=True, **small), tmp_path / "annealed", progress=False)
    with pytest.raises(ValueError, match="total_steps: 64 -> 128"):
        train_control_ppo(ControlPPOConfig(total_steps=128, anneal_lr=True, **small), tmp_path / "annealed",
                          progress=False)
    train_control_ppo(ControlPPOConfig(total_steps=64, **small), tmp_path / "constant", progress=False)
    longer = train_control_ppo(ControlPPOConfig(total_steps=128, **small), tmp_path / "constant", progress=False)
    assert [row["iteration"] for row in longer.rows] == [1, 2]
