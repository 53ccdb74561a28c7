"""The agents' command line end to end: ``train``, ``rlhf --quick``, ``bench`` and ``best-of-n``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from agents.cli.app import main


def test_train_flags_come_from_the_config(tmp_path, capsys):
    main(["train", "reinforce", "--env-id", "textenv/Bandit-v0", "--iterations", "3", "--prompts-per-iter", "2",
          "--group-size", "4", "--lr", "0.01", "--kl-coef", "0", "--out", str(tmp_path)])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["estimator"] == "reinforce" and config["lr"] == 0.01 and config["iterations"] == 3
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    assert "last iteration" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:  # a refused value: one line naming the flag, exit status 2
        main(["train", "reinforce", "--env-id", "textenv/Bandit-v0", "--group-size", "1", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "textenv: error: --group-size=1 is out of range for reinforce; expected >= 2"]


@pytest.mark.slow
def test_rlhf_quick_writes_the_run_directory(tmp_path, capsys):
    main(["rlhf", "--quick", "--out", str(tmp_path), "--eval-prompts", "32"])
    printed = capsys.readouterr().out
    assert f"run directory: {tmp_path}" in printed and "world cache:" in printed
    assert "[1/4] SFT: supervised fine-tuning" in printed and "done already" not in printed
    for name in ("report.md", "curves.png", "frontier.png", "samples.md", "summary.json", "sft/policy/config.json",
                 "preferences-train.jsonl", "rm/metrics.json", "ppo/metrics.csv", "ppo/policy/value_head.safetensors"):
        assert (tmp_path / name).exists(), name
    assert list((tmp_path / "ppo" / "tb").glob("events.out.tfevents.*"))  # TensorBoard
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["stages"]) == {"base", "SFT", "PPO"}
    assert summary["stages"]["SFT"]["kl"] == pytest.approx(0.0, abs=1e-6)  # KL of the SFT model to itself
    report = (tmp_path / "report.md").read_text()
    assert "| PPO |" in report and "best-of" in report.lower()
    assert "--quick: sizes too small for these figures to mean anything" in report and summary["smoke_test"]
    assert "Best-of-1 is the SFT model itself" in report  # why best-of-1 and the SFT row differ
    mtime = (tmp_path / "sft" / "policy" / "model.safetensors").stat().st_mtime
    main(["rlhf", "--quick", "--out", str(tmp_path), "--eval-prompts", "32"])  # finished stages are not redone
    assert (tmp_path / "sft" / "policy" / "model.safetensors").stat().st_mtime == mtime
    printed = capsys.readouterr().out
    for i, (name, folder) in enumerate([("SFT", "sft"), ("preferences", "preferences-{train,eval}.jsonl"),
                                        ("reward model", "rm"), ("PPO", "ppo")], 1):
        assert f"[{i}/4] {name}: done already, skipped ({tmp_path / folder})" in printed


@pytest.mark.slow
def test_bench_writes_a_table_and_a_frontier(tmp_path, capsys):
    main(["bench", "--agents", "grpo,ppo", "--seeds", "0", "--iterations", "2", "--completions-per-iter", "8",
          "--eval-prompts", "16", "--best-of-n", "1,2", "--out", str(tmp_path)])
    table = (tmp_path / "results.md").read_text()
    assert "| grpo |" in table and "| ppo |" in table and "best-of-2" in table and "initial model" in table
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {r["agent"] for r in rows} == {"grpo", "ppo"}
    assert all(np.isfinite([r["proxy"], r["gold"], r["kl"], r["train_s"]]).all() for r in rows)
