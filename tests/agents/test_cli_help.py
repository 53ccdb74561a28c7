"""``textenv --help`` and each command's help: what the tool is, the commands and algorithms one line each, every
config flag with its field's doc and default; ``rlhf``'s run directory and ``--no-resume``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from agents.cli.app import build_parser, main
from agents.cli.flags import field_docs, plain


def help_of(*command: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_says_what_the_tool_is_and_lists_every_command(capsys):
    out = help_of(capsys=capsys)
    assert "token-level Gymnasium environment for RLHF" in out and "``" not in out
    assert "--debug" in out
    commands = out.split("commands:", 1)[1]
    for name in ("build-world", "demo", "preferences", "train-rm", "eval-rm", "throughput", "train", "datasets", "rlhf",
                 "bench", "best-of-n"):
        line = next(line for line in commands.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split(name, 1)[1].strip()) > 10, line  # a description on the command's own line


def test_train_help_names_the_algorithms_not_their_configs(capsys):
    from agents.cli.train import _algorithms

    out = help_of("train", capsys=capsys)
    assert "Config" not in out and "{'estimator'" not in out
    lines = out.split("algorithms:", 1)[1].splitlines()[2:]
    listed = {line.split()[0] for line in lines if line.startswith("    ") and not line.startswith("     ")}
    assert listed == {*_algorithms(), "iql-online"}
    for name in ("grpo", "rloo", "reinforce"):
        assert name.upper() in out.split(f"\n    {name} ", 1)[1].splitlines()[0].upper()


def test_train_ppo_help_shows_each_fields_doc_and_default(capsys):
    from agents.text.ppo import PPOConfig

    out = help_of("train", "ppo", capsys=capsys)
    flat = " ".join(out.split())
    assert "--lr FLOAT AdamW learning rate (constant) (default: 0.0001)" in flat
    assert PPOConfig().lr == 0.0001 and field_docs(PPOConfig)["lr"] == "AdamW learning rate (constant)."
    assert ":class:" not in out and "``" not in out and ":func:" not in out
    assert "--whiten-advantages {true,false}" in out
    docs = field_docs(PPOConfig)  # base-class fields (OnPolicyConfig) are documented too
    assert {f.name for f in dataclasses.fields(PPOConfig)} == set(docs)


def _configs():
    from agents.cli.bench import BenchConfig
    from agents.cli.train import _algorithms
    from agents.offline.collect import CollectConfig
    from agents.offline.train import FinetuneSettings
    from agents.text.pipeline import RLHFConfig
    from textenv.rm import RewardModelConfig

    undocumented: set[str] = set()  # a config whose fields lack their attribute docstring (none today)
    items = [(name, config_cls, preset) for name, (config_cls, _, preset) in _algorithms().items()]
    items += [(c.__name__, c, {}) for c in (FinetuneSettings, CollectConfig, BenchConfig, RLHFConfig, RewardModelConfig)]
    return [pytest.param(c, p, id=n, marks=[pytest.mark.xfail(strict=True, reason="undocumented fields")] * (n in undocumented))
            for n, c, p in items]


@pytest.mark.parametrize("config_cls, preset", _configs())
def test_every_config_flag_has_a_doc(config_cls, preset):
    docs = field_docs(config_cls)
    missing = [f.name for f in dataclasses.fields(config_cls) if f.name not in preset and f.name not in docs]
    assert not missing, f"{config_cls.__name__}: fields without an attribute docstring: {missing}"


def test_plain_removes_sphinx_markup():
    assert plain(":class:`~agents.core.onpolicy.OnPolicyConfig`, :func:`textenv.world.build` and ``None``") == \
        "OnPolicyConfig, textenv.world.build and None"


def test_train_rm_flags_are_the_reward_model_configs_fields(capsys):
    from textenv.rm import RewardModelConfig

    out = help_of("train-rm", capsys=capsys)
    for f in dataclasses.fields(RewardModelConfig):
        assert f"--{f.name.replace('_', '-')} " in out, f.name
    assert "--train " in out and "--eval " in out and "--out " in out  # the short names still work
    args = build_parser().parse_args(["train-rm", "--train", "a.jsonl", "--warmup-ratio", "0.1", "--max-length", "64"])
    from agents.cli.flags import make_config

    config = make_config(args, RewardModelConfig)
    assert (config.train_file, config.warmup_ratio, config.max_length, config.threads) == ("a.jsonl", 0.1, 64, 1)
    assert config.output_dir == RewardModelConfig.__dataclass_fields__["output_dir"].default


def test_build_world_and_demo_flags_have_help():
    commands = build_parser()._subparsers._group_actions[0].choices
    for command in ("build-world", "demo", "rlhf", "train-rm"):
        for action in commands[command]._actions:
            assert action.help, f"textenv {command} {action.option_strings} has no help"


def test_rlhf_quick_has_its_own_run_directory():
    from agents.cli.train import rlhf_out

    parser = build_parser()
    assert rlhf_out(parser.parse_args(["rlhf"])) == Path("runs/rlhf")
    assert rlhf_out(parser.parse_args(["rlhf", "--quick"])) == Path("runs/rlhf-quick")
    assert rlhf_out(parser.parse_args(["rlhf", "--quick", "--out", "x"])) == Path("x")
    assert parser.parse_args(["rlhf", "--no-resume"]).no_resume


def test_rlhf_passes_no_resume_and_quick_to_the_pipeline(tmp_path, monkeypatch):
    from agents.text import pipeline

    calls = []
    monkeypatch.setattr(pipeline, "run_rlhf", lambda config, out, **kw: calls.append((config, out, kw)))
    main(["rlhf", "--quick", "--no-resume", "--eval-prompts", "8"])
    config, out, kw = calls[0]
    assert out == Path("runs/rlhf-quick") and kw == {"resume": False, "smoke_test": True}
    assert config == pipeline.RLHFConfig.quick(eval_prompts=8)


def test_pipeline_clear_removes_only_what_the_pipeline_wrote(tmp_path):
    from agents.core.run import config_dict
    from agents.text.pipeline import OUTPUTS, RLHFConfig, check_resumable, clear

    for name in OUTPUTS:
        (tmp_path / name).mkdir() if "." not in name else (tmp_path / name).write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    clear(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    (tmp_path / "pipeline.json").write_text(json.dumps(config_dict(RLHFConfig())))
    check_resumable(RLHFConfig(threads=2, eval_prompts=10, ppo_iterations=80), tmp_path)  # resumable changes
    with pytest.raises(ValueError, match=r"kl_coef: 0.05 -> 0.1.*resume=False"):
        check_resumable(RLHFConfig(kl_coef=0.1), tmp_path)


def test_frontier_puts_kl_zero_at_zero(tmp_path, monkeypatch):
    """Best-of-1 (KL 0) is drawn at 0 on a symlog axis, not clamped to 1e-3 on a log axis."""
    from matplotlib.figure import Figure

    from agents.text.pipeline import plot_frontier

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: saved.append(self))
    rows = [{"kl": 0.0, "gold": 0.1, "proxy": 0.2}, {"kl": 0.5, "gold": 0.2, "proxy": 0.6}]
    bon = [{"n": 1, "kl": 0.0, "gold": 0.1, "proxy": 0.1}, {"n": 2, "kl": 0.193, "gold": 0.15, "proxy": 0.4}]
    plot_frontier({"PPO": rows}, bon, tmp_path / "frontier.png")
    for ax in saved[0].axes:
        assert ax.get_xscale() == "symlog"
        assert all(line.get_xdata()[0] == 0.0 for line in ax.get_lines())
