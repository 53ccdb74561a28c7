"""Why the built-in world builds with ``OMP_WAIT_POLICY=PASSIVE``: torch threads on a busy 2-core machine.

The world's recipe pins 2 torch threads, because float sums (and so the trained weights) depend on the thread
count. With OpenMP's default wait policy the 2 threads spin while waiting for each other; when another process
holds one of the cores, every parallel region waits for a descheduled thread and the build collapses. With
``OMP_WAIT_POLICY=PASSIVE`` waiting threads sleep instead. The wait policy changes no arithmetic, so the weights
stay bit-identical; this script shows both, side by side, on the two workloads of the build at the world's
sizes (GPT-2, 2 layers × 128, vocab 2048): LM training (batch 64 × 64 tokens, AdamW) and sampling
(``generate``, 16 prompts × 24 new tokens, the preference-sampling stage).

Each configuration runs in a fresh Python process (the wait policy is read when OpenMP loads), once with the
machine as it is and once with one core kept busy by a spinning process:

    python benchmarks/threads_wait_policy.py            # ≈ 3 min on 2 cores
    python benchmarks/threads_wait_policy.py --json benchmarks/results/threads_wait_policy.json

It prints speeds, the ratio to 2 threads with the default policy, and a hash of the weights / samples: the same
hash for 2 threads with either policy, a different one for 1 thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORKLOAD = r'''
import hashlib, sys, time
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging
logging.set_verbosity_error()
kind, threads, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
config = GPT2Config(vocab_size=2048, n_layer=2, n_embd=128, n_head=4, n_positions=128, bos_token_id=0,
                    eos_token_id=1, pad_token_id=1)
model = GPT2LMHeadModel(config)
data = torch.randint(2, 2048, (n, 64, 64), generator=torch.Generator().manual_seed(1))
start = time.perf_counter()
if kind == "train":
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for batch in data:
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    digest = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    units = n
else:
    model.eval()
    outs = []
    with torch.no_grad():
        for i, batch in enumerate(data):
            torch.manual_seed(i)
            prompts = batch[:16, :12]
            outs.append(model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True,
                                       max_new_tokens=24, min_new_tokens=24))
    digest = b"".join(o.numpy().tobytes() for o in outs)
    units = 16 * n
print(units / (time.perf_counter() - start), hashlib.sha256(digest).hexdigest()[:12])
'''

CONFIGS = [(2, "default"), (2, "PASSIVE"), (1, "default")]
"""(torch threads, OMP_WAIT_POLICY); the first is the reference of the ratios."""


def measure(kind: str, threads: int, policy: str, n: int) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", WORKLOAD, kind, str(threads), str(n)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), out[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-steps", type=int, default=30, help="LM training steps per measurement")
    parser.add_argument("--generate-batches", type=int, default=15, help="generate calls (16 prompts each)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = []
    for load in ("as is", "one core busy"):
        spinner = None
        if load == "one core busy":
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1)
        try:
            for kind, n, unit in (("train", args.train_steps, "steps/s"), ("generate", args.generate_batches, "prompts/s")):
                base = None
                for threads, policy in CONFIGS:
                    speed, digest = measure(kind, threads, policy, n)
                    base = base or speed
                    rows.append({"load": load, "workload": kind, "threads": threads, "wait_policy": policy,
                                 "speed": round(speed, 2), "unit": unit, "ratio": round(speed / base, 2),
                                 "hash": digest})
                    print(f"{load:14s} {kind:8s} threads={threads} {policy:8s} {speed:8.2f} {unit:9s} "
                          f"×{speed / base:.2f}  {digest}", flush=True)
        finally:
            if spinner is not None:
                spinner.kill()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
