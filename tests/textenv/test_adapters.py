"""PEFT (LoRA) adapter folders wherever a model is named: an env's ``model=`` and ``reward_model=``, and the loaders.

An adapter folder holds ``adapter_config.json`` (naming its base) and ``adapter_model.safetensors``, no
``config.json``: what ``PeftModel.save_pretrained`` and TRL's trainers with a ``peft_config`` write. Every model here is a
tiny random GPT-2 saved under ``tmp_path`` (no world, no hub).
"""

from __future__ import annotations

import json
import sys

import gymnasium as gym
import pytest
import torch

import textenv  # noqa: F401  (registers the ids)
from textenv.lm import adapter_base, load_causal_lm, load_config, load_tokenizer

peft = pytest.importorskip("peft")

PROMPTS = ["the food was", "the room was", "our waiter was"]


@pytest.fixture(scope="module")
def base_dir(tiny_lm):
    """A 1-layer, 16-wide GPT-2 with a byte-level BPE, saved with its tokenizer (``tests/conftest.py``)."""
    return tiny_lm


def _nonzero_lora(model, seed: int):
    """LoRA's B starts at 0 (the adapter a no-op); give every adapter weight random values so that it matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)


@pytest.fixture(scope="module")
def adapter_dir(base_dir, tmp_path_factory):
    """A causal-LM LoRA adapter on ``base_dir`` with non-zero weights, saved without a tokenizer."""
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("adapter")
    model = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                                peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True))
    _nonzero_lora(model, 1)
    model.save_pretrained(path)
    assert not (path / "config.json").exists() and not (path / "tokenizer.json").exists()
    return path


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def test_loaders_take_an_adapter_folder_tokenizer_and_config_from_its_base(base_dir, adapter_dir):
    assert adapter_base(adapter_dir) == str(base_dir) and adapter_base(base_dir) is None
    assert load_tokenizer(adapter_dir).get_vocab() == load_tokenizer(base_dir).get_vocab()
    assert load_config(adapter_dir).to_dict() == load_config(base_dir).to_dict()


def test_an_adapter_folder_with_its_own_tokenizer_files_uses_them(base_dir, adapter_dir, tmp_path):
    import shutil

    own = tmp_path / "own"
    shutil.copytree(adapter_dir, own)
    tokenizer = load_tokenizer(base_dir)
    tokenizer.model_max_length = 33  # a mark only the adapter folder's copy carries
    tokenizer.save_pretrained(own)
    assert load_tokenizer(own).model_max_length == 33
    assert load_tokenizer(adapter_dir).model_max_length != 33


def test_load_causal_lm_merges_the_adapter_into_its_base(base_dir, adapter_dir):
    from transformers import AutoModelForCausalLM

    merged = load_causal_lm(adapter_dir)
    assert type(merged).__name__ == "GPT2LMHeadModel" and not merged.training  # a plain model, eval mode
    unmerged = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
    ids = [3, 14, 15, 92, 65]
    assert torch.allclose(_logits(merged, ids), _logits(unmerged, ids), atol=1e-5)  # merging: float rounding only
    assert not torch.allclose(_logits(merged, ids), _logits(load_causal_lm(base_dir), ids), atol=1e-3)  # it matters


def _kl_wrapper(env):
    while not hasattr(env, "ref"):
        env = env.env
    return env


def test_an_adapter_folder_is_an_envs_model(base_dir, adapter_dir):
    """Tokenizer and vocabulary from the base, the KL reference = base + adapter (merged)."""
    env = gym.make_vec("textenv/Sentiment-v1", num_envs=2, model=str(adapter_dir), prompts=PROMPTS,
                       reward_model=lambda p, c: [float(len(x)) for x in c], gold_reward=None, max_new_tokens=3,
                       kl_coef=0.1, kl_mode="reference")
    task = env.unwrapped.task
    assert task.vocab_size == load_config(base_dir).vocab_size and env.single_action_space.n == task.vocab_size
    wrapper = _kl_wrapper(env)
    ref = getattr(wrapper, "ref_model", None) or wrapper.ref.model
    ids = [3, 14, 15]
    assert torch.allclose(_logits(ref, ids), _logits(load_causal_lm(adapter_dir), ids))
    env.reset(seed=0)
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(torch.tensor([5, 6]).numpy())
    assert terminated.all() and (reward != 0).all()
    env.close()


def test_an_adapter_folder_without_peft_says_to_install_it(adapter_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    with pytest.raises(ImportError, match="pip install peft"):
        load_causal_lm(adapter_dir)


def test_an_adapter_folder_that_names_no_base_is_refused(adapter_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(adapter_dir, broken)
    config = json.loads((broken / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None
    (broken / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="base_model_name_or_path"):
        load_tokenizer(broken)


@pytest.fixture(scope="module")
def rm_adapter_dir(base_dir, tmp_path_factory):
    """What TRL's RewardTrainer with a LoRA ``peft_config`` writes: a SEQ_CLS adapter on the causal LM's folder,
    its ``score`` head in ``modules_to_save`` (saved among the adapter's weights), no tokenizer."""
    from transformers import AutoModelForSequenceClassification

    path = tmp_path_factory.mktemp("rm-adapter")
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1)
    model = peft.get_peft_model(model, peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["c_attn"],
                                                       fan_in_fan_out=True, modules_to_save=["score"]))
    _nonzero_lora(model, 2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "modules_to_save" in name and "score" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    model.save_pretrained(path)
    return path


def test_a_lora_reward_model_adapter_folder_is_an_envs_reward_model(base_dir, rm_adapter_dir):
    """The final reward is the adapter's score of ``prompt + completion`` (its trained head, not a random one)."""
    from textenv.rewards.hf import HFRewardModel

    env = gym.make_vec("textenv/Sentiment-v1", num_envs=2, model=str(base_dir), reward_model=str(rm_adapter_dir),
                       prompts=PROMPTS, gold_reward=None, max_new_tokens=2)
    env.reset(seed=0, options={"prompts": PROMPTS[:2]})
    env.step(torch.tensor([5, 6]).numpy())
    _, reward, terminated, _, info = env.step(torch.tensor([7, 8]).numpy())
    assert terminated.all()
    tokenizer = load_tokenizer(base_dir)
    completions = [tokenizer.decode([5, 7]), tokenizer.decode([6, 8])]
    expected = HFRewardModel(rm_adapter_dir, normalize=False)(PROMPTS[:2], completions)
    assert reward.tolist() == pytest.approx(list(expected), abs=1e-5)
    again = HFRewardModel(rm_adapter_dir, normalize=False)(PROMPTS[:2], completions)
    assert list(again) == list(expected)  # the head is the saved one, not a fresh random init
    env.close()


def test_an_adapter_whose_base_moved_names_its_config(adapter_dir, tmp_path):
    import shutil

    moved = tmp_path / "adapter"
    shutil.copytree(adapter_dir, moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match=r"adapter_config.json names base_model_name_or_path=.*gone.*does not exist"):
        load_config(moved)


def test_adapters_that_name_each_other_are_refused(adapter_dir, tmp_path):
    import shutil

    a, b = tmp_path / "a", tmp_path / "b"
    for folder, base in ((a, b), (b, a)):
        shutil.copytree(adapter_dir, folder)
        config = json.loads((folder / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = str(base)
        (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="in a loop"):
        load_tokenizer(a)
