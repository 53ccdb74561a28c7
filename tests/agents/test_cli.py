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
    assert (tmp_path / "rewards.png").stat().st_size > 10_000


def test_console_script_lists_its_subcommands():
    out = subprocess.run([sys.executable, "-m", "agents.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("build-world", "demo", "throughput"):
        assert command in out


@pytest.mark.slow
def test_throughput_benchmark_runs_and_reports_ratios(lm_dir):
    from agents.throughput import format_rows, run_throughput

    rows = run_throughput(batch_sizes=(2,), max_new_tokens=4, repeats=1, naive=True, progress=False)
    assert rows[0]["env_tok_s"] > 0 and rows[0]["generate_vs_generate"] == 1.0
    assert "env_vs_generate" in format_rows(rows)
