import os
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub lookup fails in milliseconds instead of ~47 s of retries
os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo: no checker or renderer may try to open a window

import pytest
import torch

torch.set_num_threads(1)  # tests may run side by side (pytest -n 2); 1 thread is the safe speed here


def _mujoco_warning(message: str) -> None:
    """MuJoCo's warnings as Python warnings, where pytest shows them (or pyproject's filterwarnings hides the expected).

    MuJoCo's default handler appends every warning to ``MUJOCO_LOG.TXT`` in the working directory, which under
    pytest is the repository root (Gymnasium's own ``half_cheetah.xml`` triggers one on every compile).
    """
    try:
        warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)
    # under -W error: an exception must not cross MuJoCo's C code (the process would abort), so print it instead
    except Exception:  # noqa: BLE001
        print(f"MuJoCo warning: {message}", file=sys.stderr)


try:
    import mujoco
except ImportError:  # the dev extra brings it; without it no test compiles a MuJoCo model
    pass
else:
    mujoco.set_mju_user_warning(_mujoco_warning)


@pytest.fixture(scope="session")
def lm_dir():
    """The built-in world's LM directory (built once per cache, about a minute)."""
    from textenv import world

    return world.lm_path(progress=False)


@pytest.fixture(scope="session")
def base_lm(lm_dir):
    from textenv.lm import load_causal_lm

    return load_causal_lm(lm_dir)


@pytest.fixture(scope="session")
def rm_dir(tmp_path_factory, lm_dir):
    """A ``num_labels=1`` reward model on the built-in LM, its score head drawn at random (seeded)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = tmp_path_factory.mktemp("rm")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(lm_dir, num_labels=1)
    torch.nn.init.normal_(model.score.weight, std=1.0)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(lm_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def smollm2_path():
    """The fetched SmolLM2-135M-Instruct folder (a real pretrained LM, :mod:`textenv.models`); the test is
    skipped where it has not been fetched (CI fetches it before the tests)."""
    from textenv import models

    try:
        return models.model_path("smollm2-135m-instruct")
    except FileNotFoundError:
        pytest.skip("SmolLM2-135M-Instruct not fetched; run `textenv models fetch smollm2-135m-instruct`")


TINY_REVIEWS = [("the food was", " great and the staff were friendly .", " bad and the staff were rude ."),
                ("the room was", " clean and quiet .", " dirty and loud ."),
                ("our waiter was", " kind and quick .", " slow and rude ."),
                ("the pasta was", " fresh .", " cold .")]


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """A 1-layer, 16-wide random GPT-2 with a byte-level BPE trained on a few reviews (``TINY_REVIEWS``), saved with
    its tokenizer under a temporary folder: enough to test loops and loaders in seconds, no world, no hub."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from textenv.world.build import train_tokenizer

    path = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = train_tokenizer([p + c for p, w, l in TINY_REVIEWS for c in (w, l)] * 4, vocab_size=300)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                       eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
"""A ChatML chat template (SmolLM2's and Qwen's format), for the built-in LM in ``chat_lm``."""


@pytest.fixture(scope="session")
def chat_lm(lm_dir, tmp_path_factory):
    """The built-in LM with ChatML's two special tokens added (embeddings resized, seeded) and ``CHATML`` as its
    chat template, saved with its tokenizer: a small model with a real chat model's quirks."""
    import torch

    from textenv.lm import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(lm_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    model = load_causal_lm(lm_dir)
    torch.manual_seed(0)
    model.resize_token_embeddings(len(tokenizer))
    out = tmp_path_factory.mktemp("chat-lm")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
