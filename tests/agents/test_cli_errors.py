"""User errors of the ``textenv`` command: one line on stderr, exit status 2, no traceback; ``--debug`` and real
bugs keep the traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from agents.cli import train as train_cli
from agents.cli.app import build_parser, main
from agents.cli.errors import user_message


def fails(argv: list[str], capsys) -> str:
    """Run ``textenv argv...`` in-process, expecting a user error: the one line it printed."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("textenv: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_a_refused_config_value_is_one_line_naming_the_flag(capsys):
    line = fails(["train", "ppo", "--lr", "-1"], capsys)
    assert "--lr" in line and "-1.0" in line and "> 0" in line


def test_a_refused_value_of_a_preset_config_names_the_flag(tmp_path, capsys):
    line = fails(["train", "reinforce", "--env-id", "textenv/Bandit-v0", "--group-size", "1", "--out", str(tmp_path)], capsys)
    assert "--group-size=1" in line and "group_size" not in line
    assert not (tmp_path / "config.json").exists()  # refused before anything was written


def test_the_console_script_prints_one_line_and_debug_shows_the_traceback():
    command = [sys.executable, "-m", "agents.cli", "train", "ppo", "--lr", "-1"]
    plain = subprocess.run(command, capture_output=True, text=True, check=False)
    assert plain.returncode == 2 and plain.stderr.splitlines() == [
        "textenv: error: --lr=-1.0 is out of range; expected a number > 0"]
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, check=False)  # --debug after the command too
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "ValueError: lr=-1.0 is out of range" in debug.stderr  # the library's own error, chained


def test_debug_before_the_command_raises_the_error(tmp_path):
    with pytest.raises(Exception, match="--lr=-1.0 is out of range"):
        main(["--debug", "train", "ppo", "--lr", "-1", "--out", str(tmp_path)])


def test_a_missing_input_file_is_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    line = fails(["train-rm", "--train", str(missing), "--out", str(tmp_path / "rm")], capsys)
    assert str(missing) in line and "--train" in line and "textenv preferences" in line


def test_a_missing_file_deep_in_a_command_is_one_line(monkeypatch, capsys):
    def run(args):
        with open("/nonexistent/textenv/file.json"):
            pass

    monkeypatch.setattr(train_cli, "_train", run)
    assert fails(["train", "sft"], capsys) == "textenv: error: no such file or directory: /nonexistent/textenv/file.json"


@pytest.mark.parametrize("module, extra", [("stable_baselines3", "sb3"), ("minari", "offline"), ("mujoco", "mujoco"),
                                           ("trl", "bench")])
def test_a_missing_optional_dependency_names_its_extra(module, extra, monkeypatch, capsys):
    def run(args):
        raise ModuleNotFoundError(f"No module named '{module}'", name=module)

    monkeypatch.setattr(train_cli, "_train", run)
    line = fails(["train", "sft"], capsys)
    assert module in line and f'pip install -e ".[{extra}]"' in line


def test_bugs_keep_their_traceback(monkeypatch):
    """An unexpected exception type, or a ValueError raised inside a third-party library, is not a user error."""
    def key_error(args):
        raise KeyError("internal")

    def numpy_error(args):
        return np.zeros(2) + np.zeros(3)  # ValueError from numpy: a bug, not something the user typed

    monkeypatch.setattr(train_cli, "_train", key_error)
    with pytest.raises(KeyError):
        main(["train", "sft"])
    monkeypatch.setattr(train_cli, "_train", numpy_error)
    with pytest.raises(ValueError, match="broadcast"):
        main(["train", "sft"])
    assert user_message(ModuleNotFoundError("No module named 'numpyy'", name="numpyy")) is None


@pytest.mark.parametrize("value", ["ture", "2", "maybe", ""])
def test_a_boolean_flag_refuses_a_non_boolean(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["train", "ppo", "--whiten-advantages", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and repr(value) in err[0] and "true/false, 1/0 or yes/no" in err[0]
    assert "--whiten-advantages" in err[0] and "textenv train ppo --help" in err[0]


@pytest.mark.parametrize("value, expected", [("true", True), ("TRUE", True), ("1", True), ("Yes", True),
                                             ("false", False), ("0", False), ("NO", False), ("False", False)])
def test_a_boolean_flag_accepts_the_usual_spellings(value, expected):
    args = build_parser().parse_args(["train", "ppo", "--whiten-advantages", value])
    assert args.cfg_whiten_advantages is expected


def test_a_bad_flag_value_or_unknown_flag_is_one_line(capsys):
    line = fails(["train", "ppo", "--lr", "abc"], capsys)
    assert line == "textenv: error: argument --lr: invalid float value: 'abc'; see textenv train ppo --help"
    line = fails(["train", "sft", "--iterations", "3"], capsys)
    assert "unrecognized arguments: --iterations 3" in line and "textenv train sft --help" in line


def test_rlhf_refuses_to_resume_a_run_with_another_config(tmp_path, capsys):
    """``rlhf --quick`` into a full run's directory: one line offering --no-resume or another --out, and the run
    there is left alone (nothing is trained: the check comes first)."""
    from agents.core.run import config_dict
    from agents.text.pipeline import RLHFConfig

    saved = json.dumps(config_dict(RLHFConfig()))
    (tmp_path / "pipeline.json").write_text(saved)
    line = fails(["rlhf", "--quick", "--out", str(tmp_path)], capsys)
    assert str(tmp_path) in line and "--no-resume" in line and "--out" in line
    assert "--sft-demos: 2000 -> 256" in line
    assert (tmp_path / "pipeline.json").read_text() == saved and sorted(p.name for p in tmp_path.iterdir()) == ["pipeline.json"]


def test_rlhf_no_resume_checks_the_flags_before_removing_anything(tmp_path, capsys):
    (tmp_path / "pipeline.json").write_text("{}")
    (tmp_path / "sft").mkdir()
    line = fails(["rlhf", "--no-resume", "--ppo-lr", "-1", "--out", str(tmp_path)], capsys)
    assert "--ppo-lr" in line
    assert (tmp_path / "sft").is_dir() and (tmp_path / "pipeline.json").exists()



def test_the_console_script_reexecutes_itself_once_with_passive_omp_wait(tmp_path):
    """The ``textenv`` script runs its command in a process where OpenMP threads sleep while waiting
    (``OMP_WAIT_POLICY=PASSIVE``), so a busy core does not stall the 2-thread world build; a policy the user set
    is kept, and the re-executed process does not re-execute again."""
    from agents.cli.app import passive_wait_exec

    script = tmp_path / "textenv"  # a console script like pip's, which reports the policy once re-executed
    script.write_text("import os, sys\n"
                      "if 'OMP_WAIT_POLICY' in os.environ:\n"
                      "    print('policy', os.environ['OMP_WAIT_POLICY'], sys.argv[1:])\n"
                      "    raise SystemExit(0)\n"
                      "from agents.cli import main\n"
                      "sys.exit(main())\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, str(script), "train", "ppo", "--lr", "-1"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "policy PASSIVE ['train', 'ppo', '--lr', '-1']", out.stderr
    assert passive_wait_exec(["rlhf"], {**env, "OMP_WAIT_POLICY": "ACTIVE"}, str(script)) is None  # yours wins
    assert passive_wait_exec(["rlhf", "--help"], env, str(script)) is None
    assert passive_wait_exec(["rlhf"], env, "/x/agents/cli/__main__.py") is None


def test_throughput_refuses_an_unknown_model_in_one_line(capsys):
    line = fails(["throughput", "--model", "no-such-model-dir"], capsys)
    assert "--model 'no-such-model-dir'" in line and "gpt2-small" in line
