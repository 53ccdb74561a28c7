"""bf16 autocast on this CPU (AVX512-BF16): does it pay for a real-size LM? Side by side with fp32, same process.

Model: GPT-2 small's shape (12 layers x 768, vocabulary 8,192, random weights seeded 0; what
``textenv throughput --model gpt2-small`` uses). Three workloads, each timed fp32 then
``torch.autocast("cpu", dtype=torch.bfloat16)``, alternating, median of ``--repeats``:

* ``decode``: one KV-cached token for a batch of 8 (what a rollout step costs),
* ``score``: one teacher-forced forward of 8 x 64 tokens (the reference / reward-model pass),
* ``update``: forward + backward of 8 x 64 tokens (what a PPO/GRPO minibatch costs);
* ``decode, bf16 weights``: the decode step of a copy of the model converted to bf16 (no casting per call), against
  the fp32 model.

Also reports how far bf16 moves the per-token log-probs (max |Δ log p| on the score batch): a KL estimate reads
log-probability *differences* of a few hundredths of a nat, so a bf16 reference is not free of cost in accuracy.

    OMP_NUM_THREADS=1 python benchmarks/bf16_cpu.py --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def _model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=8192,
                                      bos_token_id=0, eos_token_id=0)).eval()


def _timed(fn, repeats: int) -> dict[str, float]:
    out = {"fp32": [], "bf16": []}
    for precision in ("fp32", "bf16"):  # warm-up
        fn(precision)
    for _ in range(repeats):
        for precision in ("fp32", "bf16"):
            start = time.perf_counter()
            fn(precision)
            out[precision].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in out.items()}


def _cast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def run(threads: int = 1, repeats: int = 5) -> dict:
    torch.set_num_threads(threads)
    model = _model()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 8192, (8, 64), generator=gen)
    with torch.no_grad():
        cache = model(input_ids=ids[:, :48], use_cache=True).past_key_values
    next_token = ids[:, 48:49]

    def decode(precision):
        with torch.no_grad(), _cast(precision):
            model(input_ids=next_token, past_key_values=cache, use_cache=False)

    def score(precision):
        with torch.no_grad(), _cast(precision):
            return torch.log_softmax(model(input_ids=ids).logits.float(), -1)

    def update(precision):
        model.zero_grad(set_to_none=True)
        with _cast(precision):
            loss = torch.log_softmax(model(input_ids=ids).logits.float(), -1).mean()
        loss.backward()

    import copy

    half = copy.deepcopy(model).to(torch.bfloat16)
    with torch.no_grad():
        half_cache = half(input_ids=ids[:, :48], use_cache=True).past_key_values

    def decode_weights(precision):
        with torch.no_grad():
            if precision == "bf16":
                half(input_ids=next_token, past_key_values=half_cache, use_cache=False)
            else:
                model(input_ids=next_token, past_key_values=cache, use_cache=False)

    rows = {}
    for name, fn in (("decode", decode), ("score", score), ("update", update), ("decode, bf16 weights", decode_weights)):
        t = _timed(fn, repeats)
        rows[name] = {"fp32_s": t["fp32"], "bf16_s": t["bf16"], "bf16_speedup": t["fp32"] / t["bf16"]}
    lp32, lp16 = score("fp32"), score("bf16")
    taken = ids[:, 1:, None]
    delta = (lp32[:, :-1].gather(-1, taken) - lp16[:, :-1].gather(-1, taken)).abs()
    return {"threads": threads, "repeats": repeats, "model": "gpt2-small shape (12x768, vocab 8192), 92M",
            "workloads": rows, "max_abs_dlogp": float(delta.max()), "mean_abs_dlogp": float(delta.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/bf16_cpu.json")
    args = parser.parse_args()
    result = run(args.threads, args.repeats)
    print("| workload | fp32 s | bf16 s (autocast, or bf16 weights) | bf16 speed-up |\n|---|---|---|---|")
    for name, r in result["workloads"].items():
        print(f"| {name} | {r['fp32_s']:.3f} | {r['bf16_s']:.3f} | {r['bf16_speedup']:.2f}x |")
    print(f"max |Δ log p| = {result['max_abs_dlogp']:.3f} nats, mean {result['mean_abs_dlogp']:.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
