"""TRL half of ``grpo_lora_real.py``: ``trl.GRPOTrainer`` + ``peft.LoraConfig`` on SmolLM2-135M-Instruct.

Batch layout as in ``trl_grpo_side.py`` (checked on trl 1.16.0): ``per_device_train_batch_size`` counts
completions, so ``P·G`` of them with ``gradient_accumulation_steps = steps_per_generation = num_iterations = 1``
is one optimizer step per generation batch of ``P`` prompts × ``G`` fresh completions, on-policy (no old-log-prob
pass). Prompts are conversational (``[{"role": "user", "content": ...}]``): TRL renders them with the tokenizer's
chat template and ``add_generation_prompt=True``, as the text env does; :func:`run_trl` checks that the token ids
match. ``loss_type="dapo"`` (TRL's default) averages the loss over every completion token of the batch, as ours
does.
"""

from __future__ import annotations

import time
from pathlib import Path

from grpo_lora_real import addition_prompts, addition_reward, model_path, rss_mb
from trl_grpo_side import CPU_SETTINGS


def _text(x) -> str:
    """A conversational prompt or completion (a list of messages) as its last message's text; plain text as is."""
    return x[-1]["content"] if isinstance(x, list) else x


def run_trl(steps, prompts_per_step, group_size, max_new_tokens, lr, lora_r, lora_alpha, seed, threads,
            out_dir) -> dict:
    """Train TRL's GRPO with LoRA in this process; returns the per-step records, train time and the adapter folder."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    imported_rss_mb = rss_mb()
    torch.set_num_threads(threads)
    out = Path(out_dir)
    path = model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompts = addition_prompts("train")
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in prompts]})
    _check_rendering(tokenizer, prompts[0], max_new_tokens)

    def reward(prompts, completions, **kwargs):
        return addition_reward([_text(p) for p in prompts], [_text(c) for c in completions])

    config = GRPOConfig(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=prompts_per_step * group_size,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=group_size,
        num_iterations=1,
        max_steps=steps,
        max_completion_length=max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        loss_type="dapo",
        scale_rewards="group",
        learning_rate=lr,
        seed=seed,
        data_seed=seed,
        **CPU_SETTINGS,
    )
    peft_config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                             bias="none", task_type="CAUSAL_LM")
    records: list[dict] = []

    class Recorder(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.t0, self.step_time = time.perf_counter(), {}

        def on_step_end(self, args, state, control, **kwargs):
            self.step_time[state.global_step] = time.perf_counter() - self.t0

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "reward" not in logs:
                return  # the final train summary
            records.append({"step": state.global_step, "time_s": self.step_time[state.global_step],
                            "reward": float(logs["reward"]), "length": float(logs["completions/mean_length"])})
            r = records[-1]
            print(f"trl step {r['step']}: {r['time_s']:.1f} s, reward {r['reward']:.3f}, length {r['length']:.1f}",
                  flush=True)

    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=[Recorder()])
    trainer.remove_callback(PrinterCallback)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable), trainable[:5]
    assert not getattr(trainer.model, "is_gradient_checkpointing", False)
    trainer.train()
    adapter = out / "adapter"
    trainer.save_model(str(adapter))
    trainable_params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {"records": records, "train_s": records[-1]["time_s"], "adapter": str(adapter),
            "imported_rss_mb": imported_rss_mb, "trainable_params": trainable_params}


def _check_rendering(tokenizer, prompt: str, max_new_tokens: int) -> None:
    """TRL's prompt tokens (a conversational prompt, chat template, generation prompt) are the text env's."""
    import gymnasium as gym

    import textenv  # noqa: F401  (registers the ids)

    env = gym.make("textenv/Sentiment-v1", model=model_path(), reward_model=addition_reward, gold_reward=None,
                   prompts=[prompt], max_new_tokens=max_new_tokens)
    obs, _ = env.reset(seed=0)
    ours = obs["input_ids"][obs["attention_mask"].astype(bool)].tolist()
    theirs = tokenizer.apply_chat_template(conversation=[[{"role": "user", "content": prompt}]],
                                           add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"][0]
    if ours != list(theirs):
        raise AssertionError(f"prompt tokens differ between the env and TRL: {ours} vs {list(theirs)}")
    env.close()
