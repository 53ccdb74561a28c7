"""``benchmarks/sim_to_real.py``: the shift sweep's structure, the evaluation's cache, and that resuming never
retrains a finished run nor reports a policy under a budget it does not have."""

import dataclasses
import importlib.util
from pathlib import Path

import gymnasium as gym
import pytest
import torch

pytest.importorskip("mujoco")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sim_to_real.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("sim_to_real_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_crosses_the_training_ranges(script):
    points = script.shift_points()
    ranges = script.training_ranges()
    assert ranges == {"mass": (0.8, 1.2), "friction": (0.7, 1.3), "gain": (0.9, 1.1), "damping": (0.8, 1.2)}
    for shift in points.values():  # all four scales named: fixed={} would sample the training ranges instead
        assert set(shift) == set(script.PARAMS)
    assert points["nominal"] == dict.fromkeys(script.PARAMS, 1.0)
    for name, (low, high) in ranges.items():
        scales = [s[name] for k, s in points.items() if k.startswith(f"{name}=") and "," not in k]
        assert any(low <= s <= high and s != 1 for s in scales), name  # inside the range (its edges included)
        assert min(scales) < low and max(scales) > high, name  # and outside it on both sides
    quick = script.shift_points(quick=True)
    assert len(quick) == 2 * len(script.PARAMS) + 2  # both ends of each sweep, nominal, one combined shift
    assert script.point_key({"mass": 1.3, "gain": 1.0, "friction": 0.7}) == "mass=1.3,friction=0.7"


def test_evaluate_shifts_structure_and_cache(script):
    from agents.policies.mlp import make_mlp_policy

    env = gym.make("Hopper-v5")
    torch.manual_seed(0)
    policy = make_mlp_policy(env.observation_space, env.action_space, normalize_obs=True)
    with torch.no_grad():  # full torque on every joint: the hopper falls within a few dozen steps (a fast test)
        list(policy.actor.parameters())[-1].fill_(1.0)
    points = {k: v for k, v in script.shift_points(quick=True).items() if k in ("nominal", "mass=2")}
    new = []
    out = script.evaluate_shifts(policy, points, episodes=2, on_point=lambda key, entry: new.append(key))
    assert list(out) == list(points) == new
    for key, entry in out.items():
        assert entry["shift"] == points[key] and entry["seed"] == script.EVAL_SEED
        assert len(entry["returns"]) == len(entry["lengths"]) == 2
        assert entry["mean"] == pytest.approx(sum(entry["returns"]) / 2)
    assert out["nominal"]["returns"] != out["mass=2"]["returns"]  # the shift reaches the physics
    again = script.evaluate_shifts(policy, points, episodes=2, seed=script.EVAL_SEED)
    assert again["nominal"]["returns"] == out["nominal"]["returns"]  # fixed seeds, deterministic actions
    new.clear()
    cached = script.evaluate_shifts(policy, points, episodes=2, cached=out, on_point=lambda k, e: new.append(k))
    assert new == [] and cached == out
    script.evaluate_shifts(policy, points, episodes=1, cached=out, on_point=lambda k, e: new.append(k))
    assert new == list(points)  # another episode count is not taken from the cache


def test_finished_run_is_loaded_not_retrained(script, tmp_path, monkeypatch):
    config = dataclasses.replace(script.make_config("nominal", 64, seed=0), n_steps=32, batch_size=32, epochs=1)
    policy, record = script.train_or_load(config, tmp_path, progress=False)
    assert record["steps"] == 64 and "wall_s_this_call" in record

    def boom(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("agents.control.train_control_ppo", boom)
    loaded, again = script.train_or_load(config, tmp_path, progress=False)
    assert "wall_s_this_call" not in again and again["policy_sha256"] == record["policy_sha256"]
    for a, b in zip(policy.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    for steps in (32, 128):  # another budget: neither reported under it nor resumed with a bent lr schedule
        with pytest.raises(ValueError, match=f"a run of --steps 64 \\(2 iterations done\\), not {steps}"):
            script._load_finished(dataclasses.replace(config, total_steps=steps), tmp_path)
    with pytest.raises(ValueError, match="other settings \\(lr\\)"):
        script._load_finished(dataclasses.replace(config, lr=1e-3), tmp_path)
