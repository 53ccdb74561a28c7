"""TRL half of ``group_losses_trl.py``: ``trl.GRPOTrainer`` full fine-tuning of the arithmetic world's LM.

Batch layout (checked on trl 1.16.0): ``per_device_train_batch_size`` counts completions. One generation batch is
``steps_per_generation · per_device_train_batch_size = 2 · 128 = 256`` completions (32 prompts × 8), reused for
``num_iterations = 2`` passes of two 128-completion optimizer steps each: 4 optimizer steps per generation batch,
as ours does with ``epochs=2, minibatch_rows=128``. So ``max_steps = 4 · iterations`` and TRL's step ``s`` ends our
iteration ``s / 4``. Prompts are plain text (``"47+38="``, no chat template; the char-level tokenizer adds no
special tokens, checked against the env's prompt ids); generation stops at EOS (id 0) or after
``max_completion_length = 8`` tokens, EOS counted, as the env's cap and EOS do (checked on the first batch).
"""

from __future__ import annotations

import time
from pathlib import Path

from trl_grpo_side import CPU_SETTINGS


def trl_loss_settings(loss_type: str) -> dict:
    """GRPOConfig fields that make TRL's loss our ``loss_type`` (clip ε, ε_high as our presets)."""
    if loss_type == "gspo":
        return dict(loss_type="grpo", importance_sampling_level="sequence", epsilon=3e-4, epsilon_high=4e-4)
    if loss_type == "dapo":
        return dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28)
    if loss_type in ("grpo", "bnpo"):
        return dict(loss_type=loss_type, epsilon=0.2, epsilon_high=0.2)
    if loss_type == "dr_grpo":
        return dict(loss_type="dr_grpo", epsilon=0.2, epsilon_high=0.2, scale_rewards="none")
    if loss_type == "cispo":  # TRL caps the weight at epsilon_high itself; ours at 1 + clip_high = 5
        return dict(loss_type="cispo", epsilon=0.2, epsilon_high=5.0)
    raise ValueError(f"loss_type={loss_type!r} has no TRL counterpart here")


def run_trl(loss_type: str, seed: int, iterations: int, samples: int, out_dir: Path, every: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from group_losses import evaluate
    from textenv.rewards import ExactMatch
    from textenv.world import arithmetic

    path = str(arithmetic.lm_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    problems = arithmetic.problems_path()
    prompts = [r["prompt"] for r in arithmetic.load_problems(problems, split="train")]
    _check_prompt_ids(tokenizer, prompts[0])
    correct = ExactMatch(arithmetic.answer_key(problems), extract=arithmetic.ANSWER_PATTERN)  # the env's reward
    seen: dict = {}

    def reward(prompts, completions, completion_ids=None, **kwargs):
        if not seen and completion_ids is not None:  # first batch: completions end on EOS or stop at 8 tokens
            seen["mean_len"] = sum(map(len, completion_ids)) / len(completion_ids)
            seen["ends_eos"] = sum(c[-1] == tokenizer.eos_token_id for c in completion_ids if c)
            seen["max_len"] = max(map(len, completion_ids))
            seen["examples"] = [tokenizer.decode(c) for c in completion_ids[:4]]
            assert seen["max_len"] <= 8, seen
            assert all(c[-1] == tokenizer.eos_token_id or len(c) == 8 for c in completion_ids), seen
        return correct(prompts, completions)

    steps_per_iter = 4
    settings = dict(scale_rewards="group")
    settings.update(trl_loss_settings(loss_type))
    config = GRPOConfig(
        output_dir=str(Path(out_dir) / "trainer"),
        per_device_train_batch_size=128,
        gradient_accumulation_steps=1,
        steps_per_generation=2,
        num_generations=8,
        num_iterations=2,
        max_steps=iterations * steps_per_iter,
        max_completion_length=8,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        learning_rate=5e-4,
        seed=seed,
        data_seed=seed,
        **settings,
        **CPU_SETTINGS,
    )
    evals, records = [], []

    class Recorder(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.t0, self.eval_s = time.perf_counter(), 0.0

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter() - self.t0 - self.eval_s
            step = state.global_step
            if step % steps_per_iter:
                return
            iteration = step // steps_per_iter
            records.append({"iteration": iteration, "time_s": now})
            if iteration % every == 0 or iteration == iterations:
                tick = time.perf_counter()
                evals.append({"iteration": iteration, "time_s": now, **evaluate(trainer.model, samples)})
                self.eval_s += time.perf_counter() - tick
                e = evals[-1]
                print(f"  trl {loss_type} s{seed} it {iteration}: {now:.1f} s, pass@1 {e['pass@1']:.3f}, "
                      f"greedy {e['greedy']:.3f}", flush=True)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if records and "reward" in logs and records[-1]["iteration"] * steps_per_iter <= state.global_step:
                records[-1].setdefault("proxy", float(logs["reward"]))
                records[-1].setdefault("length", float(logs.get("completions/mean_length", float("nan"))))

    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=Dataset.from_dict(
        {"prompt": prompts}), processing_class=tokenizer, callbacks=[Recorder()])
    trainer.remove_callback(PrinterCallback)
    assert not getattr(trainer.model, "is_gradient_checkpointing", False)
    trainer.train()
    return {"loss_type": loss_type, "seed": seed, "evals": evals, "rows": records, "train_s": records[-1]["time_s"],
            "first_batch": seen, "trl_settings": settings}


def _check_prompt_ids(tokenizer, prompt: str) -> None:
    """TRL's prompt tokens (plain text, ``add_special_tokens`` as TRL calls the tokenizer) are the env's."""
    import gymnasium as gym

    import textenv  # noqa: F401  (registers the ids)

    env = gym.make("textenv/Arithmetic-v0")
    obs, _ = env.reset(seed=0, options={"prompt": prompt})
    ours = obs["input_ids"][obs["attention_mask"].astype(bool)].tolist()
    theirs = tokenizer(prompt)["input_ids"]
    if ours != list(theirs):
        raise AssertionError(f"prompt tokens differ between the env and TRL: {ours} vs {list(theirs)}")
    env.close()
