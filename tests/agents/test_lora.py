"""LoRA policies: only the adapter (and the value head) train, the reference is the base with the adapter off, a
saved LoRA policy is an adapter folder that loads back and resumes bit for bit.

Tiny random GPT-2s saved under ``tmp_path``, except the PPO test, which trains on the built-in world's LM.
"""

from __future__ import annotations

import json

import pytest
import torch

from agents import PGConfig, PPOConfig, train_pg, train_ppo
from agents.policies.lm import AdapterOff, LMPolicy, LoRASettings, sequence_batch
from textenv.lm import load_causal_lm, sequence_logprobs

pytest.importorskip("peft")

REVIEWS = [("the food was", " great and the staff were friendly .", " bad and the staff were rude ."),
           ("the room was", " clean and quiet .", " dirty and loud ."),
           ("our waiter was", " kind and quick .", " slow and rude ."),
           ("the pasta was", " fresh .", " cold .")]
CLOCK = ("time_s", "steps_per_s")


def _batch(policy):
    return sequence_batch(policy.tokenizer, [p for p, _, _ in REVIEWS], [w for _, w, _ in REVIEWS], add_eos=True)


def _sft_step(policy, lr=1e-1):
    """One AdamW step of SFT on the reviews (the adapter leaves zero: B gets a gradient at once)."""
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr)
    batch = _batch(policy)
    loss = -(policy.evaluate(batch).logprob * batch["mask"]).sum() / batch["mask"].sum()
    loss.backward()
    optimizer.step()


def _trainable(policy):
    return sorted(n for n, p in policy.named_parameters() if p.requires_grad)


# ------------------------------------------------------------------ settings
@pytest.mark.parametrize("changes, match", [
    (dict(lora_r=-1), "lora_r=-1"), (dict(lora_r=2.5), "lora_r=2.5"), (dict(lora_alpha=0), "lora_alpha=0"),
    (dict(lora_dropout=1.0), "lora_dropout=1.0"), (dict(lora_target_modules=()), "lora_target_modules"),
    (dict(lora_target_modules="c_attn"), "lora_target_modules"),
    (dict(lora_target_modules=("all-linear", "c_attn")), "all-linear"),
])
def test_bad_lora_settings_are_refused_naming_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        PPOConfig(**{"lora_r": 4, **changes})


def test_on_policy_lora_refuses_dropout_and_mlp_envs():
    with pytest.raises(ValueError, match="lora_dropout=0.1: on-policy"):
        PGConfig(lora_r=4, lora_dropout=0.1)
    with pytest.raises(ValueError, match="LoRA adapts a language model"):
        PGConfig(env_id="textenv/Bandit-v0", lora_r=4)
    from agents.text.dpo import DPOConfig

    assert DPOConfig(lora_r=4, lora_dropout=0.1).lora.lora_dropout == 0.1  # supervised training may use it
    assert PPOConfig().lora is None and PPOConfig(lora_r=8).lora.lora_r == 8


def test_lora_fields_have_help_text():
    from agents.cli.flags import field_docs

    for config in (PPOConfig, PGConfig):
        docs = field_docs(config)
        assert all(docs.get(name) for name in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"))


# ------------------------------------------------------------------ the policy
def test_only_the_adapter_and_value_head_train(tiny_lm):
    policy = LMPolicy.from_pretrained(tiny_lm, value_head=True, lora=LoRASettings(lora_r=4))
    names = _trainable(policy)
    assert names and all("lora_" in n or n.startswith("value_head.") for n in names)
    assert any(n.startswith("value_head.") for n in names)
    assert LMPolicy.from_pretrained(tiny_lm).reference_model() is None  # full fine-tuning: the caller loads a copy


def test_lora_without_peft_says_to_install_it(tiny_lm, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    with pytest.raises(ImportError, match="pip install peft"):
        LMPolicy.from_pretrained(tiny_lm, lora=LoRASettings(lora_r=4))
    assert not LMPolicy.from_pretrained(tiny_lm).is_lora  # full fine-tuning needs no peft


def test_reference_with_the_adapter_off_equals_the_base_exactly(tiny_lm):
    """After a training step (the adapter non-zero), the reference's log-probs are the base model's bit for bit,
    the policy's are not, and the reference holds no weights of its own."""
    policy = LMPolicy.from_pretrained(tiny_lm, lora=LoRASettings(lora_r=4, lora_target_modules=("c_attn", "c_fc")))
    _sft_step(policy)
    assert any(p.abs().sum() > 0 for n, p in policy.named_parameters() if "lora_B" in n)
    reference = policy.reference_model()
    assert isinstance(reference, AdapterOff) and reference.config.vocab_size == policy.vocab_size
    assert {id(p) for p in reference.parameters()} <= {id(p) for p in policy.parameters()}
    batch = _batch(policy)
    base = load_causal_lm(tiny_lm)
    with torch.no_grad():
        ref, expected, adapted = sequence_logprobs(reference, batch), sequence_logprobs(base, batch), sequence_logprobs(policy, batch)
    assert torch.equal(ref, expected)
    assert not torch.allclose(adapted, expected, atol=1e-4)
    assert _trainable(policy)  # using the reference changed nothing


def test_a_saved_lora_policy_is_an_adapter_folder_that_loads_back_and_as_a_model(tiny_lm, tmp_path):
    policy = LMPolicy.from_pretrained(tiny_lm, value_head=True, lora=LoRASettings(lora_r=4))
    _sft_step(policy)
    folder = policy.save_pretrained(tmp_path / "saved")
    files = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "value_head.safetensors", "tokenizer.json"} <= files
    assert "config.json" not in files and "model.safetensors" not in files  # the adapter only, no copy of the base
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_lm.resolve())
    loaded = LMPolicy.from_pretrained(folder, value_head=True)
    assert loaded.is_lora and _trainable(loaded) == _trainable(policy)  # continues training the same weights
    batch = _batch(policy)
    with torch.no_grad():
        a, b = policy.evaluate(batch), loaded.evaluate(batch)
        merged = sequence_logprobs(load_causal_lm(folder), batch)  # as an env's model=: base + adapter, merged
    assert torch.equal(a.logprob, b.logprob) and torch.equal(a.value, b.value)
    assert torch.allclose(merged, sequence_logprobs(policy, batch), atol=1e-4)
    fresh = LMPolicy.from_pretrained(folder, lora=LoRASettings(lora_r=2))  # a new adapter on the merged folder
    with torch.no_grad():
        assert torch.allclose(sequence_logprobs(fresh.reference_model(), batch), merged, atol=1e-6)


# ------------------------------------------------------------------ training
def _length_reward(prompts, completions):
    return [len(c) / 10 for c in completions]


def _pg(tiny_lm, **changes):
    return PGConfig(**{**dict(model=str(tiny_lm), estimator="grpo", iterations=4, prompts_per_iter=2, group_size=2,
                              max_new_tokens=4, lr=5e-2, kl_coef=0.1, kl_target=0.5, kl_horizon=16, checkpoint_every=2,
                              seed=2, lora_r=4, env_kwargs={"reward_model": _length_reward, "gold_reward": None,
                                                            "prompts": [p for p, _, _ in REVIEWS]}), **changes})


def _without_clock(rows):
    """Rows without their wall-clock columns, NaN spelled "nan" (NaN != NaN)."""
    nan = lambda v: "nan" if isinstance(v, float) and v != v else v  # noqa: E731
    return [{k: nan(v) for k, v in row.items() if k not in CLOCK} for row in rows]


def test_a_lora_run_resumes_bit_identically(tiny_lm, tmp_path):
    """GRPO with LoRA and adaptive β, interrupted after iteration 3 (checkpoint at 2) and resumed: the rows and the
    weights of the uninterrupted run, the base untouched, the checkpoint an adapter folder."""
    class Interrupt(Exception):
        pass

    def crash(row, _):
        if row["iteration"] == 3:
            raise Interrupt

    straight = train_pg(_pg(tiny_lm), tmp_path / "a", progress=False)
    with pytest.raises(Interrupt):
        train_pg(_pg(tiny_lm), tmp_path / "cut", progress=False, callback=crash)
    assert (tmp_path / "cut" / "checkpoint" / "policy" / "adapter_config.json").is_file()
    resumed = train_pg(_pg(tiny_lm), tmp_path / "cut", progress=False)
    assert _without_clock(resumed.rows) == _without_clock(straight.rows)
    a, b = straight.policy.state_dict(), resumed.policy.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert_base_untouched(resumed.policy, tiny_lm)


def _base_weights(policy) -> dict[str, torch.Tensor]:
    """The policy's base weights under the base model's own names (peft's prefixes and ``base_layer`` removed)."""
    return {k.replace("model.base_model.model.", "", 1).replace(".base_layer", ""): v
            for k, v in policy.state_dict().items() if "lora_" not in k and not k.startswith("value_head.")}


def assert_base_untouched(policy, base_dir):
    base, adapted = load_causal_lm(base_dir).state_dict(), _base_weights(policy)
    assert adapted.keys() == base.keys()
    assert all(torch.equal(adapted[k], base[k]) for k in base), [k for k in base if not torch.equal(adapted[k], base[k])]


def test_lora_ppo_on_the_built_in_world_trains_the_adapter_and_value_head_only(lm_dir, tmp_path):
    """Two PPO iterations on the world's LM with LoRA: the env's KL reference is the policy's own base (no copy),
    the adapter and the value head move, every base weight stays bit-identical; the saved policy is an env model."""
    import gymnasium as gym

    from textenv import world

    seen = {}

    def callback(row, policy):
        seen["row"] = row

    config = PPOConfig(iterations=2, prompts_per_iter=4, max_new_tokens=6, epochs=2, minibatch_rows=2, lr=1e-2,
                       kl_coef=0.05, lora_r=4, seed=1, checkpoint_every=2,
                       env_kwargs={"reward_model": world.gold_sentiment, "gold_reward": None})
    torch.manual_seed(config.seed)  # what the trainer's policy starts from (same seed, same loading order)
    start = LMPolicy.from_pretrained(lm_dir, value_head=True, lora=LoRASettings(lora_r=4))
    result = train_ppo(config, tmp_path / "run", progress=False, callback=callback)
    assert seen["row"]["iteration"] == 2 and torch.isfinite(torch.tensor(seen["row"]["kl"]))
    trained, initial = result.policy.state_dict(), start.state_dict()
    moved = {k for k in trained if not torch.equal(trained[k], initial[k])}
    assert moved and all("lora_" in k or k.startswith("value_head.") for k in moved)
    assert any(k.startswith("value_head.") for k in moved) and any("lora_B" in k for k in moved)
    assert_base_untouched(result.policy, lm_dir)
    env = gym.make_vec("textenv/Sentiment-v1", num_envs=1, model=str(tmp_path / "run" / "policy"),
                       reward_model=world.gold_sentiment, gold_reward=None, max_new_tokens=2)
    assert env.unwrapped.task.vocab_size == result.policy.vocab_size
    env.close()


@pytest.mark.parametrize("timing", ["step", "end"])
def test_the_on_policy_env_gets_the_policys_base_as_reference(tiny_lm, timing, tmp_path):
    """No second copy of the LM: the KL wrapper's reference is :class:`AdapterOff` over the policy's own module, and
    the adapter is still trainable afterwards (whatever the KL wrapper does to a reference's requires_grad); a
    GRPO iteration runs with the reference stepped per token or scoring at the episode end."""
    import math

    import textenv.kl
    from agents.core.onpolicy import make_env_and_policy

    if timing not in getattr(textenv.kl, "TIMINGS", ("step",)):
        pytest.skip(f"this textenv has no kl_timing={timing!r}")
    config = _pg(tiny_lm, iterations=1)
    config.env_kwargs["kl_timing"] = timing
    env, policy = make_env_and_policy(config, value_head=False)
    wrapper = env
    while not hasattr(wrapper, "ref"):
        wrapper = wrapper.env
    reference = getattr(wrapper, "ref_model", None) or wrapper.ref.model
    assert isinstance(reference, AdapterOff) and reference.peft_model is policy.model
    assert _trainable(policy) and all("lora_" in n for n in _trainable(policy))
    env.close()
    result = train_pg(config, tmp_path / "run", progress=False)
    assert math.isfinite(result.rows[0]["kl"])  # the reference scored every token


def _crash_and_resume(train_fn, config, tmp_path, monkeypatch):
    """Train ``config`` straight into ``a``; into ``cut`` crash after step 3 (checkpoint at 2) and resume; the two
    give the same metrics rows and weights. Returns the straight run's policy folder."""
    from agents.core.run import Run

    straight = train_fn(config, tmp_path / "a", progress=False)

    class Interrupt(Exception):
        pass

    log = Run.log

    def crash(run, row):
        log(run, row)
        if row["iteration"] == 3:
            raise Interrupt

    with monkeypatch.context() as m:
        m.setattr(Run, "log", crash)
        with pytest.raises(Interrupt):
            train_fn(config, tmp_path / "cut", progress=False)
    resumed = train_fn(config, tmp_path / "cut", progress=False)
    rows = [_csv(tmp_path / d / "metrics.csv") for d in ("a", "cut")]
    assert _without_clock(rows[0]) == _without_clock(rows[1]) and len(rows[0]) == 6
    a, b = LMPolicy.from_pretrained(straight).state_dict(), LMPolicy.from_pretrained(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    return straight


def test_lora_dpo_uses_the_policys_base_as_reference_and_resumes_exactly(tiny_lm, tmp_path, monkeypatch):
    from agents.text.dpo import DPOConfig, train_dpo

    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "chosen": w, "rejected": l}) + "\n" for p, w, l in REVIEWS * 3))
    config = DPOConfig(model=str(tiny_lm), data=str(data), max_pairs=None, batch_size=4, epochs=2, lr=5e-2,
                       max_length=40, checkpoint_every=2, seed=3, lora_r=4)
    loads = []
    real = LMPolicy.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args[0])
        return real(cls, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(LMPolicy, "from_pretrained", classmethod(counting))
        straight = train_dpo(config, tmp_path / "once", progress=False)
    assert len(loads) == 1  # the policy only: its reference is its base, adapter off
    assert (straight / "adapter_config.json").is_file()
    _crash_and_resume(train_dpo, config, tmp_path, monkeypatch)


def test_lora_sft_with_dropout_resumes_exactly(tiny_lm, tmp_path, monkeypatch):
    """LoRA's dropout draws from torch's RNG in every step: the resumed run must draw the same masks."""
    from agents.text.sft import SFTConfig, train_sft

    data = tmp_path / "demos.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, w, l in REVIEWS for c in (w, l)))

    def config(dropout):
        return SFTConfig(model=str(tiny_lm), data=str(data), epochs=3, batch_size=4, lr=5e-2, max_length=40,
                         checkpoint_every=2, seed=3, lora_r=4, lora_dropout=dropout)

    with_dropout = _crash_and_resume(train_sft, config(0.3), tmp_path, monkeypatch)
    without_dropout = train_sft(config(0.0), tmp_path / "no-dropout", progress=False)
    a, b = LMPolicy.from_pretrained(with_dropout).state_dict(), LMPolicy.from_pretrained(without_dropout).state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the dropout acted


def _csv(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("lora_r", [0, 4])
def test_gradient_checkpointing_gives_the_same_values_and_gradients(tiny_lm, lora_r, monkeypatch):
    """Recomputing activations in the backward pass changes memory, not maths: log-probs, values and every
    gradient match the plain update (full fine-tuning and LoRA); the model is back in eval mode afterwards."""
    from transformers.models.gpt2 import modeling_gpt2

    calls = []
    forward = modeling_gpt2.GPT2MLP.forward  # inside the checkpointed block (module hooks are not re-run)
    monkeypatch.setattr(modeling_gpt2.GPT2MLP, "forward", lambda self, x: calls.append(1) or forward(self, x))
    grads = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        lora = LoRASettings(lora_r=lora_r) if lora_r else None
        policy = LMPolicy.from_pretrained(tiny_lm, value_head=True, lora=lora, gradient_checkpointing=checkpointing)
        batch = _batch(policy)
        calls.clear()
        out = policy.evaluate(batch)
        loss = -(out.logprob * batch["mask"]).sum() + (out.value * batch["mask"]).pow(2).sum()
        loss.backward()
        assert len(calls) == (2 if checkpointing else 1)  # the block's MLP ran again in the backward pass
        assert not policy.model.training
        grads[checkpointing] = {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}
        grads[checkpointing]["logprob"] = out.logprob.detach()
    assert grads[True].keys() == grads[False].keys()
    for name in grads[False]:
        torch.testing.assert_close(grads[True][name], grads[False][name], rtol=1e-5, atol=1e-7, msg=name)


def test_gradient_checkpointing_must_be_a_bool():
    with pytest.raises(ValueError, match="gradient_checkpointing='yes' must be True or False"):
        LoRASettings(gradient_checkpointing="yes").check_lora()


def test_a_lora_run_started_from_a_lora_policy_keeps_both_adapters(tiny_lm, tmp_path):
    """SFT with LoRA, then RL with a new LoRA adapter on that result: the second adapter's base is the first
    adapter folder (merged), so the saved policy reloads, as a policy and as an env's model, with both adapters."""
    first = LMPolicy.from_pretrained(tiny_lm, lora=LoRASettings(lora_r=4))
    _sft_step(first)
    first.save_pretrained(tmp_path / "a1")
    second = LMPolicy.from_pretrained(tmp_path / "a1", lora=LoRASettings(lora_r=4))
    _sft_step(second)
    second.save_pretrained(tmp_path / "a2")
    config = json.loads((tmp_path / "a2" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((tmp_path / "a1").resolve())
    batch = _batch(second)
    with torch.no_grad():
        expected = second.evaluate(batch).logprob
        resumed = LMPolicy.from_pretrained(tmp_path / "a2").evaluate(batch).logprob  # adapter 2 on merged adapter 1
        merged = LMPolicy(load_causal_lm(tmp_path / "a2")).evaluate(batch).logprob  # what an env's model= loads
        without_first = LMPolicy(load_causal_lm(tiny_lm)).evaluate(batch).logprob
    torch.testing.assert_close(resumed, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged, expected, rtol=1e-5, atol=1e-5)
    assert (without_first - expected).abs().max() > 1e-2  # the adapters did change the model


def test_target_modules_the_model_lacks_are_refused_naming_the_ones_it_has(tiny_lm):
    with pytest.raises(ValueError, match=r"lora_target_modules=\('nope',\) does not fit GPT2LMHeadModel.*'c_attn'"):
        LMPolicy.from_pretrained(tiny_lm, lora=LoRASettings(lora_r=4, lora_target_modules=("nope",)))
