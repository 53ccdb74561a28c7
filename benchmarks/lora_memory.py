"""Peak memory and time of PPO with full fine-tuning (a second, frozen copy as the KL reference) against LoRA (the
reference is the policy's own base with the adapter off: no second copy), each with and without gradient
checkpointing, same model, same run.

Each variant runs in its own process (peak resident memory, ``ru_maxrss``, is per process) on
``textenv/Sentiment-v1`` with the built-in world's proxy reward model: ``--iterations`` PPO iterations of
``--prompts`` completions of ``--tokens`` tokens, KL shaping on (β = 0.05, ``kl_timing="end"``), 1 epoch, one
minibatch. The model is GPT-2 small's shape (12 x 768, vocabulary 8,192, random weights; what
``textenv throughput --model gpt2-small`` uses) or ``--model PATH`` (e.g. the fetched SmolLM2-135M-Instruct).

    OMP_NUM_THREADS=1 python benchmarks/lora_memory.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(model: str, lora_r: int, checkpointing: bool, iterations: int, prompts: int, tokens: int, threads: int,
          out: str) -> None:
    from agents import PPOConfig, train_ppo

    config = PPOConfig(model=model, lora_r=lora_r, gradient_checkpointing=checkpointing, iterations=iterations, prompts_per_iter=prompts, max_new_tokens=tokens,
                       epochs=1, minibatch_rows=0, kl_coef=0.05, kl_timing="end", threads=threads,
                       checkpoint_every=10**6, seed=0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_ppo(config, Path(tmp) / "run", resume=False, progress=False)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    Path(out).write_text(json.dumps({"lora_r": lora_r, "gradient_checkpointing": checkpointing, "peak_rss_mb": peak_mb,
                                     "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-small", help="gpt2-small or a saved causal LM's folder")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/lora_memory.json")
    parser.add_argument("--child", nargs=3, metavar=("LORA_R", "CHECKPOINTING", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.model, int(args.child[0]), args.child[1] == "1", args.iterations, args.prompts, args.tokens,
              args.threads, args.child[2])
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model == "gpt2-small":
            from agents.cli.throughput import make_gpt2_small
            from textenv import world

            model = str(make_gpt2_small(world.lm_path(), Path(tmp) / "gpt2-small"))
        rows = []
        for r in (0, args.lora_r):
            for checkpointing in ("0", "1"):
                out = Path(tmp) / f"r{r}-{checkpointing}.json"
                subprocess.run([sys.executable, __file__, "--model", model, "--iterations", str(args.iterations),
                                "--prompts", str(args.prompts), "--tokens", str(args.tokens), "--threads",
                                str(args.threads), "--child", str(r), checkpointing, str(out)], check=True)
                rows.append(json.loads(out.read_text()))
    print("| fine-tuning | KL reference | gradient checkpointing | peak RSS MB | seconds |\n|---|---|---|---|---|")
    for row in rows:
        what = "full" if row["lora_r"] == 0 else f"LoRA r={row['lora_r']}"
        ref = "a second copy" if row["lora_r"] == 0 else "the base, adapter off"
        checkpointing = "on" if row["gradient_checkpointing"] else "off"
        print(f"| {what} | {ref} | {checkpointing} | {row['peak_rss_mb']:.0f} | {row['seconds']:.1f} |")
    print(f"LoRA / full peak memory (no checkpointing): {rows[2]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}")
    result = {"model": args.model if args.model == "gpt2-small" else Path(args.model).name, "threads": args.threads,
              "iterations": args.iterations, "prompts": args.prompts, "tokens": args.tokens, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
