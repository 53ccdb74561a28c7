"""The agents' commands of ``textenv`` run end to end in-process (``agents.cli.app.main``), at tiny sizes.

``datasets collect`` writes a small random Hopper dataset into a temporary ``MINARI_DATASETS_PATH``; ``datasets
list`` finds it; every offline ``train`` command trains on it; ``train ppo-control`` trains on InvertedPendulum;
``best-of-n`` samples from the built-in LM. Running the same ``train`` command a second time resumes the finished
run and must not redo any of its work.
"""

from __future__ import annotations

import contextlib
import io

import pytest

from agents.cli.app import main

pytest.importorskip("mujoco")
pytest.importorskip("minari")

HOPPER = "robotics/hopper/random-v0"
TINY_OFFLINE = ["--dataset", HOPPER, "--steps", "20", "--batch-size", "16", "--hidden", "16,16", "--eval-every", "0",
                "--eval-episodes", "1", "--log-every", "10", "--checkpoint-every", "10"]
TINY_DT = ["--context", "4", "--n-layer", "1", "--embed-dim", "16", "--warmup-steps", "5", "--max-ep-len", "100"]


def run(*argv: str) -> str:
    """``textenv argv...`` in-process; what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(list(argv))
    return out.getvalue()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """``textenv datasets collect`` of 300 random Hopper steps into a temporary Minari root; (root, printed)."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        printed = run("datasets", "collect", "--env-id", "Hopper-v5", "--kinds", "random", "--steps", "300",
                      "--out", str(root.parent / "collect-run"))
        yield root, printed


@pytest.fixture
def minari_root(datasets, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(datasets[0]))
    return datasets[0]


def test_datasets_collect_writes_and_list_finds_the_dataset(datasets, minari_root):
    _, printed = datasets
    row = next(line for line in printed.splitlines() if line.startswith(f"| {HOPPER} |"))
    assert row.split("|")[2].strip() == "300"  # steps
    listed = run("datasets", "list")
    assert str(minari_root) in listed
    row = next(line for line in listed.splitlines() if line.startswith(f"| {HOPPER} |"))
    assert "Hopper-v5" in row and " 300 " in row
    assert "none; make some with" in run("datasets", "list", "--prefix", "robotics/nothing")
    again = run("datasets", "collect", "--env-id", "Hopper-v5", "--kinds", "random", "--steps", "300", "--out",
                str(minari_root.parent / "collect-run"))
    assert f"| {HOPPER} | (exists, kept" in again  # an existing dataset is kept


@pytest.mark.parametrize("algorithm", ["bc", "td3bc", "cql", "iql", "dt"])
def test_train_offline_commands(algorithm, minari_root, tmp_path):
    extra = TINY_DT if algorithm == "dt" else ["--n-actions", "2"] if algorithm == "cql" else []
    printed = run("train", algorithm, *TINY_OFFLINE, *extra, "--out", str(tmp_path))
    assert "last iteration: {'iteration': 20" in printed and "eval_return" in printed
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "metrics.csv").is_file()


def test_train_iql_online_command(minari_root, tmp_path):
    printed = run("train", "iql-online", *TINY_OFFLINE, "--online-steps", "30", "--online-eval-every", "30",
                  "--online-eval-episodes", "1", "--online-checkpoint-every", "30", "--out", str(tmp_path))
    assert "offline policy: return" in printed and "after 30 online steps" in printed
    assert (tmp_path / "offline" / "model.pt").is_file() and (tmp_path / "online" / "model.pt").is_file()


def test_rerunning_a_finished_offline_command_does_no_work(minari_root, tmp_path, monkeypatch):
    """A second identical ``textenv train bc`` resumes the finished run: no batch is sampled, nothing is evaluated,
    and ``metrics.csv`` (with its wall-clock column) is unchanged."""
    from agents.offline import data, train

    argv = ["train", "bc", *TINY_OFFLINE, "--out", str(tmp_path)]
    run(*argv)
    metrics = (tmp_path / "metrics.csv").read_text()

    def no_work(*args, **kwargs):
        raise AssertionError("the finished run did work again")

    monkeypatch.setattr(data.ReplayBuffer, "sample", no_work)
    monkeypatch.setattr(train, "evaluate_agent", no_work)
    assert "last iteration: {'iteration': 20" in run(*argv)
    assert (tmp_path / "metrics.csv").read_text() == metrics


def test_rerunning_a_finished_policy_gradient_command_does_no_work(tmp_path, monkeypatch):
    """The same for an on-policy command: the second run rolls out no episode and logs no row; a third with more
    ``--iterations`` continues from the checkpoint, rolling out only the new ones."""
    from agents.core import onpolicy

    argv = ["train", "rloo", "--env-id", "textenv/Bandit-v0", "--iterations", "3", "--prompts-per-iter", "2",
            "--group-size", "4", "--kl-coef", "0", "--out", str(tmp_path)]
    assert "last iteration: {'iteration': 3" in run(*argv)
    metrics = (tmp_path / "metrics.csv").read_text()
    real, calls = onpolicy.run_episodes, []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(onpolicy, "run_episodes", counted)
    assert "last iteration: {'iteration': 3" in run(*argv)
    assert not calls and (tmp_path / "metrics.csv").read_text() == metrics
    more = [a if a != "3" else "5" for a in argv]
    assert "last iteration: {'iteration': 5" in run(*more)
    assert len(calls) == 2  # iterations 4 and 5 only
    assert (tmp_path / "metrics.csv").read_text().splitlines()[:4] == metrics.splitlines()  # header + rows 1-3 kept


def test_train_ppo_control_command_and_its_rerun(tmp_path, monkeypatch):
    argv = ["train", "ppo-control", "--env-id", "InvertedPendulum-v5", "--total-steps", "256", "--n-steps", "128",
            "--batch-size", "64", "--epochs", "1", "--out", str(tmp_path)]
    printed = run(*argv)
    assert "last iteration: {'iteration': 2, 'steps': 256" in printed
    assert (tmp_path / "policy.pt").is_file() and (tmp_path / "learning_curve.png").is_file()
    metrics = (tmp_path / "metrics.csv").read_text()
    from agents.control import ppo as control

    def no_rollout(*args, **kwargs):
        raise AssertionError("the finished run rolled out again")

    monkeypatch.setattr(control, "collect_steps", no_rollout)
    assert "last iteration: {'iteration': 2" in run(*argv)
    assert (tmp_path / "metrics.csv").read_text() == metrics


@pytest.mark.slow
def test_best_of_n_command(lm_dir):
    printed = run("best-of-n", "--n", "1", "2", "4", "--prompts", "4", "--max-new-tokens", "6")
    rows = [line.split("|") for line in printed.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(r[1]) for r in rows] == [1, 2, 4]
    proxies = [float(r[2]) for r in rows]
    assert proxies == sorted(proxies)  # nested maxima of the same samples
    assert float(rows[0][4]) == 0.0 and float(rows[1][4]) == pytest.approx(0.193, abs=1e-3)  # log 2 − 1/2
