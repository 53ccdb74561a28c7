import json
import subprocess
import sys

import pytest

from agents.cli.app import main


@pytest.mark.slow
def test_demo_writes_samples_and_a_plot(tmp_path, lm_dir, capsys):
    main(["demo", "--num-envs", "4", "--episodes", "8", "--max-new-tokens", "16", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "gold sentiment" in out and "gold fluency" in out
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(-1 <= r["gold_sentiment"] <= 1 for r in rows)
    assert "proxy reward" in out and all(isinstance(r["proxy_reward"], float) for r in rows)
    assert (tmp_path / "rewards.png").stat().st_size > 10_000


COMMANDS = ("build-world", "demo", "preferences", "train-rm", "eval-rm", "throughput", "train", "rlhf", "bench",
            "best-of-n", "datasets", "models")


def test_console_script_lists_its_subcommands():
    out = subprocess.run([sys.executable, "-m", "agents.cli.app", "--help"], capture_output=True, text=True, check=True).stdout
    listed = out.split("{", 1)[1].split("}", 1)[0].split(",")  # argparse's "{build-world,demo,...}"
    assert sorted(listed) == sorted(COMMANDS)


def _every_command():
    from agents.cli.train import _algorithms

    return ([(c,) for c in COMMANDS] + [("train", a) for a in (*_algorithms(), "iql-online")]
            + [("datasets", "collect"), ("datasets", "list"), ("models", "fetch"), ("models", "list")])


@pytest.mark.parametrize("command", _every_command(), ids=" ".join)
def test_every_subcommand_has_a_working_help(command, capsys):
    """Each command's own ``--help`` builds its parser (one flag per config field) and exits 0: a bad default or a
    clash between two flags fails here, not only when a user runs that one command."""
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: textenv {' '.join(command)} ")
    if command[0] == "train" and len(command) == 2:
        assert "--out" in out and "--no-resume" in out and "--seed" in out


@pytest.mark.slow
def test_throughput_benchmark_runs_and_reports_ratios(lm_dir):
    from agents.cli.throughput import format_rows, run_throughput

    rows = run_throughput(batch_sizes=(2,), max_new_tokens=4, repeats=1, naive=True, progress=False)
    row = rows[0]
    assert row["batch"] == 2 and row["new_tokens"] == 4
    assert row["model"] == "builtin" and 0.5 < row["params_m"] < 1.0
    for name in ("env", "env_end", "generate", "naive"):  # each ratio is that pipeline's tokens/s over generate's
        assert 0 < row[f"{name}_tok_s"] < float("inf")
        assert row[f"{name}_vs_generate"] == pytest.approx(row[f"{name}_tok_s"] / row["generate_tok_s"])
    table = format_rows(rows).splitlines()
    assert table[0] == ("| model | params_m | batch | threads | env_tok_s | env_end_tok_s | generate_tok_s | naive_tok_s | "
                        "env_vs_generate | env_end_vs_generate | naive_vs_generate |")
    assert table[2] == (f"| builtin | {row['params_m']:.1f} | 2 | 1 | {row['env_tok_s']:.0f} | {row['env_end_tok_s']:.0f} | "
                        f"{row['generate_tok_s']:.0f} | {row['naive_tok_s']:.0f} | {row['env_vs_generate']:.2f} | "
                        f"{row['env_end_vs_generate']:.2f} | {row['naive_vs_generate']:.2f} |")


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
