"""README.md's code runs as pasted: every ```python block is executed in a fresh interpreter.

Each block runs as its own script (``sys.executable``, a temporary working directory, ``HF_HUB_OFFLINE=1``,
``OMP_NUM_THREADS=1``, a timeout) on the cached built-in world, so a snippet that stops working after a change
of the library fails CI. Blocks that are not meant to run use another fence (```bash, ```json, ```text); a fence
without a language is refused, so no Python hides in one.

A block whose whole point is a long run (training for minutes) runs at the small sizes listed in ``SMALL_SIZES``
below: visible text replacements, each of which must match the block exactly once, so an edit of the README that
breaks a replacement fails here instead of silently running the full size.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TIMEOUT_S = 300  # per block; each takes seconds to ~20 s on the built world (built_world builds it first)
FENCE = re.compile(r"^```(\S*)[ \t]*$")

# block (named by a line it contains) -> [(text in the README, text the test runs instead)]
SMALL_SIZES = {
    "result = train_ppo(PPOConfig(": [
        ("iterations=30, prompts_per_iter=64", "iterations=2, prompts_per_iter=4"),
        ("'iteration': 30", "'iteration': 2"),  # comment only; kept in step with the sizes
    ],
}


def readme_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(line of the opening fence, language, code)`` of every fenced block of ``text``, in order."""
    blocks, open_at, language, body = [], None, "", []
    for number, line in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(line)
        if open_at is None and fence:
            open_at, language, body = number, fence.group(1), []
        elif open_at is not None and line.rstrip() == "```":
            blocks.append((open_at, language, "\n".join(body) + "\n"))
            open_at = None
        elif open_at is not None:
            body.append(line)
    if open_at is not None:
        raise AssertionError(f"README.md:{open_at}: a ``` fence is never closed")
    return blocks


def shrink(code: str) -> str:
    """``code`` with the replacements of ``SMALL_SIZES`` that name it applied (each must match exactly once)."""
    for marker, replacements in SMALL_SIZES.items():
        if marker not in code:
            continue
        for old, new in replacements:
            count = code.count(old)
            assert count == 1, f"SMALL_SIZES[{marker!r}]: {old!r} occurs {count} times in the block; update the test"
            code = code.replace(old, new)
    return code


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
PYTHON = [(line, code) for line, language, code in BLOCKS if language == "python"]


def test_readme_fences_name_their_language():
    unnamed = [line for line, language, _ in BLOCKS if not language]
    assert not unnamed, f"README.md lines {unnamed}: a code fence without a language (```python, ```bash, ```text)"
    assert len(PYTHON) >= 6, f"only {len(PYTHON)} ```python blocks found in README.md; the extraction is broken"


def test_every_small_size_replacement_names_a_block():
    for marker in SMALL_SIZES:
        named = [line for line, code in PYTHON if marker in code]
        assert len(named) == 1, f"SMALL_SIZES key {marker!r} names README blocks at lines {named}; expected one"


def test_a_failing_block_fails(tmp_path):
    """The runner itself reports a broken snippet (a test that cannot fail is a defect)."""
    with pytest.raises(AssertionError, match="NameError"):
        run_block("gym.make('textenv/Sentiment-v1')\n", tmp_path)


def run_block(code: str, cwd: Path, label: str = "snippet") -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    script = cwd / "snippet.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert done.returncode == 0, (
        f"{label} failed (exit {done.returncode}):\n{code}\n--- stderr (end) ---\n{done.stderr[-4000:]}"
    )


@pytest.fixture(scope="module")
def built_world():
    """The built-in world and its proxy reward model, built here (once) if missing, outside the blocks' timeout."""
    from textenv import world

    return world.proxy_rm_path(progress=False)


NEEDS_FETCH = 'model_path("smollm2-135m-instruct")'
"""A block that uses the real model of ``textenv models fetch``: skipped, saying so, where it is not fetched (CI
fetches it first)."""


@pytest.mark.slow
@pytest.mark.parametrize("line, code", PYTHON, ids=[f"README.md:{line}" for line, _ in PYTHON])
def test_readme_python_block_runs(line, code, tmp_path, built_world, request):
    if NEEDS_FETCH in code:
        request.getfixturevalue("smollm2_path")  # skips with the fetch command when the model is not there
    run_block(shrink(code), tmp_path, label=f"README.md:{line}")
