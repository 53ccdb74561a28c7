"""GRPO with LoRA on a real pretrained LM (SmolLM2-135M-Instruct, 30 layers, chat template): two tiny iterations
train the adapter only, leave every base weight bit-identical, and the run's checkpoint is an adapter folder that
loads as an env's ``model=`` and back into a policy. Skipped where the model is not fetched (``smollm2_path``).
"""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
import torch
from safetensors.torch import load_file

from agents import PGConfig, train_pg
from agents.core.onpolicy import training_batch
from agents.core.rollout import run_episodes
from agents.policies.lm import LMPolicy, load_policy
from textenv.lm import load_causal_lm, sequence_logprobs

pytest.importorskip("peft")

PROMPTS = ["What is 2 + 3? Reply with the number only.", "What is 7 + 1? Reply with the number only."]


def _length_reward(prompts, completions):
    """Completions of different lengths get different rewards, so every group has a non-zero advantage."""
    return [len(c) / 10 for c in completions]


def _config(path) -> PGConfig:
    return PGConfig(estimator="grpo", model=str(path), iterations=2, prompts_per_iter=2, group_size=2,
                    max_new_tokens=3, lr=1e-2, kl_coef=0.05, kl_timing="end", lora_r=4, lora_alpha=8, seed=0,
                    threads=1, checkpoint_every=2,
                    env_kwargs={"reward_model": _length_reward, "gold_reward": None, "prompts": PROMPTS})


@pytest.fixture(scope="module")
def run(smollm2_path, tmp_path_factory):
    config = _config(smollm2_path)
    start = load_policy(str(smollm2_path), config.lora, seed=config.seed)  # the trainer's initial policy
    initial = {k: v.clone() for k, v in start.state_dict().items() if "lora_" in k}
    del start
    result = train_pg(config, tmp_path_factory.mktemp("grpo-lora-smollm2"), resume=False, progress=False)
    return config, result, initial


def test_only_the_adapter_trains_and_the_base_stays_bit_identical(run, smollm2_path):
    config, result, initial = run
    policy = result.policy
    assert policy.is_lora and [r["iteration"] for r in result.rows] == [1, 2]
    assert abs(result.rows[0]["kl"]) < 1e-3  # before any update the policy is its reference (the base, adapter off)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    adapter = {k: v for k, v in policy.state_dict().items() if "lora_" in k}
    assert adapter.keys() == initial.keys()
    moved = [k for k in adapter if not torch.equal(adapter[k], initial[k])]
    assert any("lora_A" in k for k in moved) and all(k in moved for k in adapter if "lora_B" in k)
    base = load_file(str(smollm2_path / "model.safetensors"))
    trained = {k.replace("model.base_model.model.", "", 1).replace(".base_layer", ""): v
               for k, v in policy.state_dict().items() if "lora_" not in k}
    trained.pop("lm_head.weight")  # tied to model.embed_tokens.weight, which the file holds once
    assert trained.keys() == base.keys()
    assert all(torch.equal(trained[k], base[k]) for k in base), [k for k in base if not torch.equal(trained[k], base[k])]
    assert torch.equal(policy.model.get_output_embeddings().weight, base["model.embed_tokens.weight"])


def test_the_checkpoint_loads_as_an_env_model_and_back_as_a_policy(run, smollm2_path):
    config, result, _ = run
    folder = result.run_dir / "checkpoint" / "policy"
    files = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= files
    assert "model.safetensors" not in files  # the adapter only, no copy of the 135M base
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        smollm2_path.resolve())

    env = gym.make_vec("textenv/Sentiment-v1", num_envs=2, model=str(folder), reward_model=_length_reward,
                       gold_reward=None, prompts=PROMPTS, max_new_tokens=3)
    base_env = gym.make_vec("textenv/Sentiment-v1", num_envs=2, model=str(smollm2_path), reward_model=_length_reward,
                            gold_reward=None, prompts=PROMPTS, max_new_tokens=3)
    task = env.unwrapped.task
    assert task.vocab_size == result.policy.vocab_size == 49152 and task.chat and 2 in task.stop_token_ids
    options = {"prompts": PROMPTS}
    obs, _ = env.reset(seed=0, options=options)
    base_obs, _ = base_env.reset(seed=0, options=options)
    assert (obs["input_ids"] == base_obs["input_ids"]).all()  # the same tokenizer and chat template

    reloaded = LMPolicy.from_pretrained(folder)  # continues the adapter
    a, b = result.policy.state_dict(), reloaded.state_dict()
    assert reloaded.is_lora and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    episodes = run_episodes(env, reloaded, seed=0, options=options)
    batch = training_batch(episodes, True)
    with torch.no_grad():
        merged = sequence_logprobs(load_causal_lm(folder), batch)  # what an env loads for model= (adapter merged)
        trained = sequence_logprobs(result.policy, batch)
        untrained = sequence_logprobs(load_causal_lm(smollm2_path), batch)
    assert torch.allclose(merged, trained, atol=1e-3)
    assert not torch.allclose(merged, untrained, atol=1e-3)
    env.close()
    base_env.close()
