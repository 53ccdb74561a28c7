"""Sampler–trainer agreement: how far the log-probs a rollout sampled with are from the ones the update computes.

TRL #6789 and verl #2996: when the sampler (vLLM, a KV-cached decode) and the trainer (a teacher-forced forward)
compute log π differently, PPO's ratio is not 1 before the first step, and in bf16 8% of tokens fall outside
[0.9, 1.1]. textenv samples with the policy's own model and KV cache and re-scores the old log-probs with the
update's pass, in the update's own minibatches (:func:`agents.core.update.score_old`), so the first minibatch's
ratio is exactly 1. This script measures, for one rollout of ``--episodes`` completions:

* ``sampler vs trainer``: max and mean |log π_sample − log π_train| over the completion tokens, and the fraction of
  tokens whose ratio exp(log π_train − log π_sample) lies outside [0.9, 1.1];
* ``first minibatch``: max |log ρ| of the update's first minibatch with the old log-probs scored as the update
  scores them (textenv) and, for comparison, scored by one full-batch pass (another shape, as before ``score_old``);

in fp32 (what textenv trains in) and with the model's weights in bf16 (sampler and trainer both bf16: the setting
of TRL #6789, not one textenv uses). Models: the built-in world's LM and, when fetched, SmolLM2-135M-Instruct.

    OMP_NUM_THREADS=1 python benchmarks/sampler_trainer_gap.py --json benchmarks/results/sampler_trainer_gap.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def measure(model_path: str, dtype: torch.dtype, episodes: int, max_new_tokens: int, seed: int = 0) -> dict:
    import gymnasium as gym

    from agents.core.onpolicy import training_batch
    from agents.core.rollout import run_episodes
    from agents.core.update import UpdateSettings, first_epoch_rows, score_old
    from agents.policies.lm import LMPolicy

    env = gym.make_vec("textenv/Sentiment-v1", num_envs=episodes, autoreset_mode="disabled", model=model_path,
                       max_new_tokens=max_new_tokens, gold_reward=None)
    torch.manual_seed(seed)
    policy = LMPolicy.from_pretrained(model_path)
    policy.model.to(dtype)
    policy.generator = torch.Generator().manual_seed(seed)
    prompts = env.unwrapped.task.prompts
    batch = training_batch(run_episodes(env, policy, seed=seed, options={"prompts": prompts[:episodes]}), True)
    valid = batch["mask"]
    with torch.no_grad():
        train = policy.evaluate(batch, with_values=False).logprob
    gap = (batch["sample_logprobs"] - train)[valid].abs()
    outside = ((train - batch["sample_logprobs"])[valid].exp() - 1).abs() > 0.1
    settings = UpdateSettings(epochs=2, minibatch_rows=max(1, episodes // 4))
    rng = np.random.default_rng(seed)
    rows = first_epoch_rows(episodes, settings, rng)[0]
    first = {k: v[rows] for k, v in batch.items()}
    with torch.no_grad():
        new = policy.evaluate(first, with_values=False).logprob  # what the update's first minibatch computes
        score_old(policy, batch, settings, rng)
        full_pass = policy.evaluate(batch, with_values=False).logprob[rows]
    m = first["mask"]
    return {"model": Path(model_path).name, "dtype": str(dtype).replace("torch.", ""), "tokens": int(valid.sum()),
            "gap_max": float(gap.max()), "gap_mean": float(gap.mean()), "outside_0.9_1.1": float(outside.float().mean()),
            "first_minibatch_max_log_ratio": float((new - batch["old_logprobs"][rows])[m].abs().max()),
            "full_batch_old_max_log_ratio": float((new - full_pass)[m].abs().max())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from textenv import world
    from textenv.models import is_fetched, model_dir

    models = [str(world.lm_path())]
    if is_fetched("smollm2-135m-instruct"):
        models.append(str(model_dir("smollm2-135m-instruct")))
    rows = [measure(m, dtype, args.episodes, args.max_new_tokens) for m in models for dtype in (torch.float32, torch.bfloat16)]
    print("| model | weights | tokens | max \\|Δ log π\\| sampler vs trainer | mean | ratio outside [0.9, 1.1] | "
          "first minibatch max \\|log ρ\\| (textenv) | same, old from a full-batch pass |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['dtype']} | {r['tokens']} | {r['gap_max']:.2e} | {r['gap_mean']:.2e} | "
              f"{100 * r['outside_0.9_1.1']:.2f} % | {r['first_minibatch_max_log_ratio']:.1e} | "
              f"{r['full_batch_old_max_log_ratio']:.1e} |")
    if args.json:
        args.json.write_text(json.dumps({"episodes": args.episodes, "max_new_tokens": args.max_new_tokens,
                                         "threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
