"""Rollout throughput of the batched text env against the physical limit and against a naive env.

Three pipelines do the same work: sample ``B × T`` tokens from the policy LM, get the reference model's
log-prob of every sampled token (for KL shaping), and score every completion with a reward model.

* ``env``: ``make_vec("textenv/Sentiment-v1", kl_coef>0)`` stepped by :class:`agents.policies.sampler.LMSampler`
  (policy KV cache) — the reference is stepped with its own KV cache inside the env (``kl_timing="step"``), the
  RM scores the envs that finish.
* ``env_end``: the same env with ``kl_timing="end"``: the reference scores each finished completion in one
  teacher-forced pass.
* ``generate``: ``model.generate`` + one teacher-forced reference forward + one RM pass (the limit).
* ``naive``: an env loop that recomputes the whole prefix through policy and reference at every token.

EOS is suppressed in all of them so every completion has exactly ``T`` tokens and the work is equal.
Variants alternate within each repeat and the median time is reported.

Models (``model=``): ``"builtin"`` (the built-in world's 0.68M-parameter LM), ``"gpt2-small"`` (GPT-2 small's
shape, 12 layers × 768, vocabulary 8,192, random weights seeded 0, on the world's tokenizer: 92M parameters), or
the path of any saved causal LM (e.g. ``textenv models fetch smollm2-135m-instruct``). The reward model is a
sequence classifier on the same trunk (untrained head: its cost is what matters); the reference a second copy.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import torch
from transformers import AutoModelForSequenceClassification

from agents.policies.sampler import LMSampler
from textenv import supply_policy_logprobs
from textenv.lm import load_causal_lm, load_tokenizer, pad_batch, quiet_progress, save_pretrained
from textenv.rewards import HFRewardModel
from textenv.task import load_prompts


def make_gpt2_small(tokenizer_dir: Path, out_dir: Path) -> Path:
    """GPT-2 small's shape (12 × 768, 12 heads, 1,024 positions) with a vocabulary of 8,192 and random weights
    (seed 0), saved with the tokenizer of ``tokenizer_dir`` (smaller than the vocabulary, as real models' often
    are); what a real-size rollout costs, without a hub download."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=8192,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    save_pretrained(GPT2LMHeadModel(config), out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def make_reward_model(lm_dir: Path, out_dir: Path) -> Path:
    """A sequence-classification RM on the base LM's trunk (untrained head: the cost is what matters here)."""
    from transformers.utils import logging as hf_logging

    torch.manual_seed(0)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the loading report lists the new score head as "MISSING": it is meant to be
    try:
        with quiet_progress():
            rm = AutoModelForSequenceClassification.from_pretrained(lm_dir, num_labels=1)
    finally:
        hf_logging.set_verbosity(verbosity)
    save_pretrained(rm, out_dir)
    load_tokenizer(lm_dir).save_pretrained(out_dir)
    return out_dir


def _env_pipeline(env, policy, T: int) -> None:
    sampler = LMSampler(policy, env, suppress_tokens=[env.unwrapped.task.eos_token_id])
    env.reset(seed=0)
    sampler.restart(range(env.num_envs))
    for t in range(T):
        tokens, logprobs = sampler.sample()
        supply_policy_logprobs(env, logprobs)
        _, _, terminated, truncated, infos = env.step(tokens)
        if t < T - 1:
            sampler.advance(tokens, terminated | truncated)
    assert infos["final_info"]["capped"].all(), "every episode should end at the token cap, T tokens"


@torch.inference_mode()
def _generate_pipeline(policy, ref, reward, tokenizer, prompts: list[str], prompt_tokens: list[list[int]],
                       T: int) -> None:
    """``prompt_tokens``: each prompt's ids as the env feeds them (its chat template applied, if any)."""
    prompt_ids, prompt_mask = pad_batch(prompt_tokens, tokenizer.pad_token_id)
    out = policy.generate(
        input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True, top_k=0, max_new_tokens=T, min_new_tokens=T,
        suppress_tokens=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id,
    )  # (B, P + T)
    mask = torch.cat([prompt_mask, torch.ones(len(prompts), T, dtype=torch.long)], dim=1)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = ref(input_ids=out, attention_mask=mask, position_ids=position_ids).logits[:, -T - 1 : -1]  # (B, T, V)
    torch.log_softmax(logits.float(), -1).gather(-1, out[:, -T:, None])
    completions = tokenizer.batch_decode(out[:, -T:], skip_special_tokens=True)
    reward(prompts, completions)


@torch.inference_mode()
def _naive_pipeline(policy, ref, reward, tokenizer, prompts: list[str], prompt_tokens: list[list[int]],
                    T: int) -> None:
    """A gym-style env that keeps no cache: every step re-reads the whole prefix, for policy and reference."""
    seqs = [list(ids) for ids in prompt_tokens]
    for _ in range(T):
        ids, mask = pad_batch(seqs, tokenizer.pad_token_id)  # (B, L), left-padded
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=1).logits[:, -1]
        logits[:, tokenizer.eos_token_id] = -float("inf")
        tokens = torch.multinomial(torch.softmax(logits.float(), -1), 1)[:, 0]
        ref(input_ids=ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=1)
        for s, t in zip(seqs, tokens.tolist()):
            s.append(t)
    completions = [tokenizer.decode(s[-T:], skip_special_tokens=True) for s in seqs]
    reward(prompts, completions)


def run_throughput(batch_sizes=(1, 16, 64), max_new_tokens: int = 32, repeats: int = 3, threads: int = 1,
                   naive: bool = True, progress: bool = True, model: str = "builtin") -> list[dict]:
    """Tokens/s of each pipeline at each batch size (median of ``repeats``), with ratios to ``generate``."""
    from textenv import world

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    world_lm = world.lm_path(progress=progress)
    prompts_all = load_prompts(world.prompts_path(), split="eval")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if model == "builtin":
            lm_dir = world_lm
        elif model == "gpt2-small":
            lm_dir = make_gpt2_small(world_lm, Path(tmp) / "gpt2-small")
        else:
            lm_dir = Path(model)
        tokenizer = load_tokenizer(lm_dir)
        policy, ref = load_causal_lm(lm_dir), load_causal_lm(lm_dir)
        rm_dir = make_reward_model(lm_dir, Path(tmp) / "rm")
        reward = HFRewardModel(rm_dir)
        n_params = sum(p.numel() for p in policy.parameters())
        for B in batch_sizes:
            prompts = prompts_all[:B]
            envs = {timing: gym.make_vec(
                "textenv/Sentiment-v1", num_envs=B, model=str(lm_dir), reward_model=str(rm_dir), prompts=prompts,
                max_new_tokens=max_new_tokens, kl_coef=0.05, kl_mode="policy", kl_timing=timing,
            ) for timing in ("step", "end")}
            prompt_tokens = [envs["step"].unwrapped.task.encode_prompt(p) for p in prompts]  # the env's own ids
            pipelines = {
                "env": lambda: _env_pipeline(envs["step"], policy, max_new_tokens),
                "env_end": lambda: _env_pipeline(envs["end"], policy, max_new_tokens),
                "generate": lambda: _generate_pipeline(policy, ref, reward, tokenizer, prompts, prompt_tokens,
                                                       max_new_tokens),
            }
            if naive:
                pipelines["naive"] = lambda: _naive_pipeline(policy, ref, reward, tokenizer, prompts, prompt_tokens,
                                                             max_new_tokens)
            times: dict[str, list[float]] = {name: [] for name in pipelines}
            for fn in pipelines.values():  # warm-up
                fn()
            for _ in range(repeats):
                for name, fn in pipelines.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
            tokens = B * max_new_tokens
            row = {"model": model if model in ("builtin", "gpt2-small") else Path(model).name,
                   "params_m": n_params / 1e6, "batch": B, "threads": threads, "new_tokens": max_new_tokens}
            for name, ts in times.items():
                row[f"{name}_tok_s"] = tokens / statistics.median(ts)
            for name in pipelines:
                row[f"{name}_vs_generate"] = row[f"{name}_tok_s"] / row["generate_tok_s"]
            rows.append(row)
            if progress:
                print(format_rows([row], header=len(rows) == 1), flush=True)
    return rows


def format_rows(rows: list[dict], header: bool = True) -> str:
    """A markdown table of :func:`run_throughput` rows."""
    cols = ["model", "params_m", "batch", "threads", "env_tok_s", "env_end_tok_s", "generate_tok_s", "naive_tok_s",
            "env_vs_generate", "env_end_vs_generate", "naive_vs_generate"]
    cols = [c for c in cols if c in rows[0]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] if header else []

    def cell(c, v):
        return v if isinstance(v, str) else f"{v:.2f}" if "vs" in c else f"{v:.1f}" if c == "params_m" else f"{v:.0f}"

    for r in rows:
        lines.append("| " + " | ".join(cell(c, r[c]) for c in cols) + " |")
    return "\n".join(lines)
