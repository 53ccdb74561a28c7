"""The world cache: checksums, damaged folders, read-only caches, temporary folders of killed builds.

Most tests build a fake stage (a few small files, one of them a real ``.safetensors``) through the real
:func:`build_once`, so they take milliseconds; those marked slow go through ``world.build`` on a tiny recipe.
Every test points ``TEXTENV_CACHE`` (or its target) at a tmp dir: the real cache is never touched.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from textenv import world
from textenv.world import cache
from textenv.world.cache import CHECKSUMS, CacheError, build_once, check, record_checksums

TINY = world.WorldRecipe(n_reviews=400, n_prompts=20, vocab_size=400, n_embd=32, n_head=2, n_layer=1, train_steps=5, batch_size=8)

MANIFEST = {"vocab_size": 1, "parameters": 2, "distinct_words": 3, "final_train_loss": 4.0, "sample_fluency": 0.5, "build_seconds": 0.1}


class Fill:
    """A fake stage: ``manifest.json`` (the marker), ``prompts.jsonl`` and an ``lm/`` folder; counts its builds."""

    def __init__(self):
        self.calls = 0

    def __call__(self, out):
        self.calls += 1
        (out / "manifest.json").write_text(json.dumps(MANIFEST))
        (out / "prompts.jsonl").write_text('{"prompt": "the room was", "split": "train"}\n')
        lm = out / "lm"
        lm.mkdir()
        save_file({"w": torch.arange(64, dtype=torch.float32)}, str(lm / "model.safetensors"))
        (lm / "config.json").write_text('{"model_type": "gpt2"}')
        (lm / "tokenizer_config.json").write_text("{}")
        (lm / "tokenizer.json").write_text('{"model": {}}')


@pytest.fixture
def stage(tmp_path):
    fill = Fill()
    target = build_once(tmp_path / "world-abc", "manifest.json", fill)
    assert fill.calls == 1
    return target, fill


class ReadOnlyLock:
    """Stands in for ``FileLock`` in a read-only folder (tests run as root, where chmod does not stop writes)."""

    def __init__(self, path, *args, **kwargs):
        self.path = path

    def acquire(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        return False


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_build_records_size_and_sha256_of_every_file(stage):
    target, _ = stage
    files = json.loads((target / CHECKSUMS).read_text())["files"]
    assert sorted(files) == ["lm/config.json", "lm/model.safetensors", "lm/tokenizer.json", "lm/tokenizer_config.json",
                             "manifest.json", "prompts.jsonl"]
    assert files["lm/config.json"] == {"bytes": 22, "sha256": hashlib.sha256(b'{"model_type": "gpt2"}').hexdigest()}
    assert files["lm/model.safetensors"]["bytes"] == (target / "lm" / "model.safetensors").stat().st_size
    assert check(target, full=True) is None


@pytest.mark.parametrize("damage, problem", [
    (lambda t: (t / "lm" / "model.safetensors").write_bytes((t / "lm" / "model.safetensors").read_bytes()[:-100]),
     r"lm/model.safetensors is \d+ bytes, expected \d+"),
    (lambda t: (t / "lm" / "tokenizer.json").unlink(), "lm/tokenizer.json is missing"),
])
def test_damaged_folder_is_rebuilt_on_load(stage, damage, problem):
    """Bug: a truncated weights file or a missing tokenizer file was returned as cached (the marker was there)."""
    target, fill = stage
    good = _sha(target / "lm" / "model.safetensors")
    damage(target)
    assert check(target) is not None
    with pytest.warns(RuntimeWarning, match=f"damaged \\({problem}\\); rebuilding it"):
        assert build_once(target, "manifest.json", fill) == target
    assert fill.calls == 2 and check(target, full=True) is None
    assert _sha(target / "lm" / "model.safetensors") == good


def test_full_check_catches_what_the_cheap_check_cannot(stage):
    target, fill = stage
    _flip_last_byte(target / "lm" / "model.safetensors")  # same size: only the sha256 tells
    assert check(target) is None
    assert check(target, full=True) == "lm/model.safetensors does not match its sha256 in checksums.json"


def test_damaged_read_only_folder_names_the_way_out(stage, monkeypatch):
    """Bug: the next env failed with a raw error from deep inside the loader."""
    target, fill = stage
    (target / "lm" / "tokenizer.json").unlink()
    monkeypatch.setattr(cache, "FileLock", ReadOnlyLock)
    with pytest.raises(CacheError, match=f"damaged \\(lm/tokenizer.json is missing\\).*textenv build-world --force.*delete {target}"):
        build_once(target, "manifest.json", fill)
    assert fill.calls == 1


def test_complete_folder_is_read_without_the_lock(stage, monkeypatch):
    """Bug: reading a complete world took its lock first, so a read-only cache failed on the lock file."""
    target, fill = stage
    monkeypatch.setattr(cache, "FileLock", ReadOnlyLock)
    assert build_once(target, "manifest.json", fill) == target and fill.calls == 1
    with pytest.raises(CacheError, match="cannot build .*world-new: its folder is not writable.*TEXTENV_CACHE"):
        build_once(target.parent / "world-new", "manifest.json", fill)


def test_temporary_folders_of_killed_builds_are_deleted(tmp_path):
    """Bug: a killed build left ``world-*.tmp-*`` behind forever."""
    fill = Fill()
    target = tmp_path / "world-abc"
    (tmp_path / "world-abc.tmp-killed" / "lm").mkdir(parents=True)  # killed while building
    (tmp_path / "world-abcd.tmp-other").mkdir()  # another target's: not ours to delete
    build_once(target, "manifest.json", fill)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world-abc", "world-abc.lock", "world-abcd.tmp-other"]

    (tmp_path / "world-abc.tmp-killed").mkdir()  # killed during a --force rebuild of a complete folder
    build_once(target, "manifest.json", fill)
    assert not (tmp_path / "world-abc.tmp-killed").exists() and fill.calls == 1


@pytest.mark.parametrize("left", ["new-and-old", "old-only"])
def test_a_build_killed_between_its_renames_puts_a_whole_folder_back(stage, left):
    """Guards against a rebuild killed between the two renames of its swap (the old folder aside as ``.tmp-old``,
    the new one not yet in place) being built again from scratch: the next call puts the new folder back (the old
    one where the new did not survive), whole, without building."""
    target, fill = stage
    new = target.with_name(target.name + ".tmp-k1ll3d")
    shutil.copytree(target, new)
    (new / "prompts.jsonl").write_text('{"prompt": "the new room was", "split": "train"}\n')
    cache.write_checksums(new)
    os.replace(target, target.with_name(target.name + ".tmp-old"))
    if left == "old-only":
        shutil.rmtree(new)
    assert build_once(target, "manifest.json", fill) == target and fill.calls == 1
    assert check(target, full=True) is None
    assert ("new room" in (target / "prompts.jsonl").read_text()) == (left == "new-and-old")
    assert sorted(p.name for p in target.parent.iterdir()) == ["world-abc", "world-abc.lock"]


def test_a_forced_rebuild_interrupted_between_its_renames_keeps_the_old_folder(stage, monkeypatch):
    """The same through the real swap: ``build_once(force=True)`` interrupted just before renaming its new folder
    into place; the old folder, moved aside, is the cache again at the next call."""
    target, fill = stage
    real = os.replace

    def replace(src, dst):
        if Path(dst) == target and Path(src) != target.with_name(target.name + ".tmp-old"):
            raise KeyboardInterrupt(f"killed before renaming {src} -> {dst}")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        build_once(target, "manifest.json", fill, force=True)
    monkeypatch.undo()
    assert not target.exists() and fill.calls == 2
    assert build_once(target, "manifest.json", fill) == target and fill.calls == 2
    assert check(target, full=True) is None


def test_temporary_folder_of_a_running_build_is_kept(stage):
    target, fill = stage
    live = target.parent / f"{target.name}.tmp-live"
    live.mkdir()
    with cache.FileLock(str(target) + ".lock"):  # a concurrent build holds the lock: its folder is live
        assert build_once(target, "manifest.json", fill) == target
        assert live.exists()


def test_folder_written_before_checksums_is_accepted_then_recorded(stage):
    """Backwards compatibility: a cache without ``checksums.json`` is accepted on a structural check."""
    target, fill = stage
    (target / CHECKSUMS).unlink()
    (target / "proxy-1").mkdir()  # a nested stage (beside its lock) is not the world's
    (target / "proxy-1.lock").touch()
    (target / "proxy-1" / "big.bin").write_bytes(b"x")
    assert check(target, full=True) is None
    assert build_once(target, "manifest.json", fill) == target and fill.calls == 1
    assert record_checksums(target) and not record_checksums(target)  # once
    assert sorted(json.loads((target / CHECKSUMS).read_text())["files"])[0] == "lm/config.json"
    assert "proxy-1/big.bin" not in json.loads((target / CHECKSUMS).read_text())["files"]


@pytest.mark.parametrize("damage, problem", [
    (lambda t: (t / "lm" / "model.safetensors").write_bytes((t / "lm" / "model.safetensors").read_bytes()[:-4]),
     r"lm/model.safetensors is \d+ bytes, its header says \d+"),
    (lambda t: (t / "lm" / "model.safetensors").unlink(), "lm/ has config.json but no model weights"),
    (lambda t: (t / "lm" / "tokenizer.json").unlink(), "lm/ has tokenizer_config.json but no tokenizer.json"),
    (lambda t: (t / "manifest.json").write_text('{"vocab'), "manifest.json is not valid JSON"),
    (lambda t: (t / "prompts.jsonl").write_text('{"prompt": "the'), "prompts.jsonl does not end in a newline"),
])
def test_folder_written_before_checksums_is_rebuilt_if_broken(stage, damage, problem):
    target, fill = stage
    (target / CHECKSUMS).unlink()
    damage(target)
    assert check(target) is not None and not record_checksums(target)
    with pytest.warns(RuntimeWarning, match=problem):
        build_once(target, "manifest.json", fill)
    assert fill.calls == 2 and check(target, full=True) is None


def test_build_world_cli_rebuilds_a_damaged_world(tmp_path, monkeypatch, capsys):
    """Bug: ``textenv build-world`` printed the stats of a world whose weights did not match what was built."""
    from agents.cli import app as cli

    fill = Fill()
    target = tmp_path / "world-abc"
    monkeypatch.setattr(world, "build", lambda recipe, force=False: build_once(target, "manifest.json", fill, force))

    class Stop(Exception):
        pass

    def no_proxy(*args, **kwargs):
        raise Stop  # the world stage is what is under test

    monkeypatch.setattr(world, "build_proxy", no_proxy)
    with pytest.raises(Stop):
        cli.main(["build-world"])
    good = _sha(target / "lm" / "model.safetensors")
    _flip_last_byte(target / "lm" / "model.safetensors")
    with pytest.raises(Stop):
        cli.main(["build-world"])
    assert fill.calls == 2 and _sha(target / "lm" / "model.safetensors") == good
    assert "lm/model.safetensors does not match its sha256" in capsys.readouterr().err

    (target / CHECKSUMS).unlink()  # cached by an older textenv: checksums recorded once
    with pytest.raises(Stop):
        cli.main(["build-world"])
    assert "recorded the checksums" in capsys.readouterr().err and check(target, full=True) is None

    monkeypatch.setattr(cache, "FileLock", ReadOnlyLock)
    (target / "lm" / "tokenizer.json").unlink()
    with pytest.raises(SystemExit) as stop:  # a user error of the command: one line, status 2
        cli.main(["build-world"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("textenv: error: ") and err.count("\n") == 1
    assert "damaged" in err and "delete" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-cache")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("TEXTENV_CACHE", str(root))
        return world.build(TINY, progress=False)


@pytest.mark.slow
def test_tiny_world_damaged_on_disk_is_rebuilt_or_reported(tiny_world, tmp_path, monkeypatch):
    """The same through ``world.build`` and ``world.lm_path``, on a copy of a real (tiny) world."""
    monkeypatch.setenv("TEXTENV_CACHE", str(tmp_path))
    copy = shutil.copytree(tiny_world, world.world_dir(TINY))
    assert sorted(json.loads((copy / CHECKSUMS).read_text())["files"]) == [
        "corpus.txt", "lm/config.json", "lm/generation_config.json", "lm/model.safetensors", "lm/tokenizer.json",
        "lm/tokenizer_config.json", "manifest.json", "prompts.jsonl"]
    real = cache.FileLock
    monkeypatch.setattr(cache, "FileLock", ReadOnlyLock)
    assert world.lm_path(TINY, progress=False) == copy / "lm"  # complete: read without the lock
    (copy / "lm" / "tokenizer.json").unlink()
    with pytest.raises(CacheError, match="lm/tokenizer.json is missing.*textenv build-world --force"):
        world.lm_path(TINY, progress=False)
    monkeypatch.setattr(cache, "FileLock", real)
    with pytest.warns(RuntimeWarning, match="lm/tokenizer.json is missing"):
        assert world.lm_path(TINY, progress=False) == copy / "lm"
    assert check(copy, full=True) is None and _sha(copy / "lm" / "tokenizer.json") == _sha(tiny_world / "lm" / "tokenizer.json")


def test_a_build_is_announced_in_one_line_once(tmp_path, capsys):
    """A one-time build says, before its progress bars, what it builds, why, about how long, and where it is
    cached; reading the cache says nothing."""
    fill = Fill()
    target = tmp_path / "world-abc"
    build_once(target, "manifest.json", fill, announce="textenv: building the thing: first use, cached afterwards")
    assert capsys.readouterr().err == f"textenv: building the thing: first use, cached afterwards; cached in {target}\n"
    build_once(target, "manifest.json", fill, announce="textenv: building the thing")
    assert capsys.readouterr().err == "" and fill.calls == 1
