"""A checkpoint is data, never code (issue 19): a crafted ``trainer_state.pt`` is refused on resume without running,
for the agents' runs and for the reward-model trainer, and every ``torch.load`` reads weights only."""

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from agents.core.run import Run

ROOT = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this creates the file ``path`` (what a malicious checkpoint would do with a shell command)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _plant(checkpoint: Path, marker_file: Path) -> None:
    """Replace ``checkpoint/trainer_state.pt`` with a pickle that runs code, and (as an attacker could) fix up
    the completeness marker's recorded size, so only the weights-only load stands between it and the code."""
    payload = {"step": 1, "iteration": 1, "format": 2, "payload": _Payload(marker_file)}
    torch.save(payload, checkpoint / "trainer_state.pt")
    manifest_path = checkpoint / "complete.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        manifest["files"]["trainer_state.pt"] = (checkpoint / "trainer_state.pt").stat().st_size
        manifest_path.write_text(json.dumps(manifest))


@dataclass
class _Config:
    lr: float = 1e-3


@pytest.mark.parametrize("with_marker", [True, False], ids=["marker-fixed-up", "legacy-layout"])
def test_a_crafted_trainer_state_is_refused_and_never_run(tmp_path, with_marker):
    """Guards against ``Run.load`` reading ``trainer_state.pt`` with ``weights_only=False``: a crafted checkpoint
    executed its payload on resume. It must be refused with the way out, and the payload must not have run."""
    run = Run(tmp_path / "run", _Config())
    run.start(resume=False)
    run.save(torch.nn.Linear(2, 1), {"iteration": 1})
    checkpoint = tmp_path / "run" / "checkpoint"
    if not with_marker:
        (checkpoint / "complete.json").unlink()
    marker_file = tmp_path / "pwned"
    _plant(checkpoint, marker_file)
    with pytest.raises(ValueError, match=r"trainer_state.pt.*not loaded.*--no-resume"):
        Run(tmp_path / "run", _Config()).start(resume=True)
    assert not marker_file.exists()


def test_a_crafted_reward_model_trainer_state_is_refused_and_never_run(tmp_path):
    """The same for the reward-model trainer's own checkpoint (``textenv.rm.train``)."""
    from textenv.rm import RewardModelConfig, train_reward_model

    data = tmp_path / "prefs.jsonl"
    data.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    out = tmp_path / "rm"
    checkpoint = out / "checkpoint"
    checkpoint.mkdir(parents=True)
    marker_file = tmp_path / "pwned"
    _plant(checkpoint, marker_file)
    (checkpoint / "complete.json").write_text(json.dumps(
        {"format": 2, "step": 1, "files": {"trainer_state.pt": (checkpoint / "trainer_state.pt").stat().st_size}}))
    config = RewardModelConfig(train_file=str(data), output_dir=str(out), base_model=str(tmp_path / "unused"))
    with pytest.raises(ValueError, match=r"trainer_state.pt.*not loaded.*--no-resume"):
        train_reward_model(config, resume=True, progress=False)
    assert not marker_file.exists()


def _torch_load_calls():
    for package in ("agents", "textenv", "robotics"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                    yield f"{path.relative_to(ROOT)}:{node.lineno}", node


def test_every_torch_load_reads_weights_only():
    """Guards against a ``torch.load`` without ``weights_only=True`` (the default differs across torch versions,
    and ``False`` unpickles arbitrary objects): ``policy.pt`` in agents/core/onpolicy.py, agents/control/ppo.py and
    agents/offline/train.py, and both trainer states, pass it explicitly."""
    calls = list(_torch_load_calls())
    assert len(calls) >= 6  # run.py, rm/train.py, onpolicy.py, control.py, offline/train.py (twice)
    unsafe = [where for where, node in calls
              if not any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                         for k in node.keywords)]
    assert unsafe == []


def test_no_eval_exec_pickle_or_remote_code_in_the_packages():
    """The audit of issue 19 kept true: no ``eval``/``exec``, no ``pickle.load(s)``, no ``allow_pickle=True`` and no
    hard-coded ``trust_remote_code=True`` in the library."""
    found = []
    for package in ("agents", "textenv", "robotics"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
                    found.append(f"{where} {node.func.id}()")
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pickle" \
                        and node.attr in ("load", "loads", "Unpickler"):
                    found.append(f"{where} pickle.{node.attr}")
                if isinstance(node, ast.keyword) and node.arg in ("allow_pickle", "trust_remote_code") \
                        and isinstance(node.value, ast.Constant) and node.value.value is True:
                    found.append(f"{where} {node.arg}=True")
    assert found == []
