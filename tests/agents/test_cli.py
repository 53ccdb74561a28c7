import json
import subprocess
import sys

import pytest

from agents.cli import main


@pytest.mark.slow
def test_demo_writes_samples_and_a_plot(tmp_path, lm_dir, capsys):
    main(["demo", "--num-envs", "4", "--episodes", "8", "--max-new-tokens", "16", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "gold sentiment" in out and "gold fluency" in out
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(-1 <= r["gold_sentiment"] <= 1 for r in rows)
    assert "proxy reward" in out and all(isinstance(r["proxy_reward"], float) for r in rows)
    assert (tmp_path / "rewards.png").stat().st_size > 10_000


def test_console_script_lists_its_subcommands():
    out = subprocess.run([sys.executable, "-m", "agents.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("build-world", "demo", "preferences", "train-rm", "eval-rm", "throughput", "train", "rlhf", "bench", "best-of-n"):
        assert command in out


@pytest.mark.slow
def test_throughput_benchmark_runs_and_reports_ratios(lm_dir):
    from agents.throughput import format_rows, run_throughput

    rows = run_throughput(batch_sizes=(2,), max_new_tokens=4, repeats=1, naive=True, progress=False)
    assert rows[0]["env_tok_s"] > 0 and rows[0]["generate_vs_generate"] == 1.0
    assert "env_vs_generate" in format_rows(rows)


@pytest.mark.slow
def test_preferences_train_rm_and_eval_rm_from_the_command_line(tmp_path, lm_dir, capsys):
    prefs, out = tmp_path / "prefs.jsonl", tmp_path / "rm"
    main(["preferences", "--out", str(prefs), "--num-prompts", "40", "--k", "3", "--max-new-tokens", "12"])
    assert "label agreement with gold" in capsys.readouterr().out
    records = [json.loads(line) for line in prefs.read_text().splitlines()]
    assert len(records) >= 35 and all(len(r["ranking"]) == len(r["completions"]) for r in records)

    main(["train-rm", "--train", str(prefs), "--eval", str(prefs), "--out", str(out), "--epochs", "1", "--batch-size", "8"])
    printed = capsys.readouterr().out
    assert "held-out accuracy" in printed and "length-matched acc" in printed
    assert (out / "config.json").exists() and (out / "report.png").stat().st_size > 10_000

    main(["eval-rm", "--model", str(out), "--data", str(prefs), "--out", str(tmp_path / "eval")])
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trained = json.loads((out / "metrics.json").read_text())
    assert evaluated["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-3)
