"""Rollout throughput of the batched text env against the physical limit and against a naive env.

Three pipelines do the same work: sample ``B × T`` tokens from the policy LM, get the reference model's
log-prob of every sampled token (for KL shaping), and score every completion with a reward model.

* ``env``: ``make_vec("textenv/Sentiment-v1", kl_coef>0)`` stepped by :class:`agents.policies.sampler.LMSampler`
  (policy KV cache) — the reference is stepped with its own KV cache inside the env, the RM scores the
  envs that finish.
* ``generate``: ``model.generate`` + one teacher-forced reference forward + one RM pass (the limit).
* ``naive``: an env loop that recomputes the whole prefix through policy and reference at every token.

EOS is suppressed in all three so every completion has exactly ``T`` tokens and the work is equal.
Variants alternate within each repeat and the median time is reported.
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
from textenv.lm import load_causal_lm, load_tokenizer, pad_batch
from textenv.rewards import HFRewardModel
from textenv.task import load_prompts


def make_reward_model(lm_dir: Path, out_dir: Path) -> Path:
    """A sequence-classification RM on the base LM's trunk (untrained head: the cost is what matters here)."""
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(lm_dir, num_labels=1)
    rm.save_pretrained(out_dir)
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
def _generate_pipeline(policy, ref, reward, tokenizer, prompts: list[str], T: int) -> None:
    prompt_ids, prompt_mask = pad_batch(tokenizer(prompts, add_special_tokens=False)["input_ids"], tokenizer.pad_token_id)
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
def _naive_pipeline(policy, ref, reward, tokenizer, prompts: list[str], T: int) -> None:
    """A gym-style env that keeps no cache: every step re-reads the whole prefix, for policy and reference."""
    seqs = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
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


def run_throughput(batch_sizes=(1, 16, 64), max_new_tokens: int = 32, repeats: int = 3, threads: int = 1, naive: bool = True, progress: bool = True) -> list[dict]:
    """Tokens/s of each pipeline at each batch size (median of ``repeats``), with ratios to ``generate``."""
    from textenv import world

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    lm_dir = world.lm_path(progress=progress)
    tokenizer = load_tokenizer(lm_dir)
    policy, ref = load_causal_lm(lm_dir), load_causal_lm(lm_dir)
    prompts_all = load_prompts(world.prompts_path(), split="eval")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rm_dir = make_reward_model(lm_dir, Path(tmp) / "rm")
        reward = HFRewardModel(rm_dir)
        for B in batch_sizes:
            prompts = prompts_all[:B]
            env = gym.make_vec(
                "textenv/Sentiment-v1", num_envs=B, reward_model=str(rm_dir), prompts=prompts,
                max_new_tokens=max_new_tokens, kl_coef=0.05, kl_mode="policy",
            )
            pipelines = {
                "env": lambda: _env_pipeline(env, policy, max_new_tokens),
                "generate": lambda: _generate_pipeline(policy, ref, reward, tokenizer, prompts, max_new_tokens),
            }
            if naive:
                pipelines["naive"] = lambda: _naive_pipeline(policy, ref, reward, tokenizer, prompts, max_new_tokens)
            times: dict[str, list[float]] = {name: [] for name in pipelines}
            for fn in pipelines.values():  # warm-up
                fn()
            for _ in range(repeats):
                for name, fn in pipelines.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
            tokens = B * max_new_tokens
            row = {"batch": B, "threads": threads, "new_tokens": max_new_tokens}
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
    cols = ["batch", "threads", "env_tok_s", "generate_tok_s", "naive_tok_s", "env_vs_generate", "naive_vs_generate"]
    cols = [c for c in cols if c in rows[0]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] if header else []
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.2f}" if "vs" in c else f"{r[c]:.0f}" for c in cols) + " |")
    return "\n".join(lines)
