"""Rollout tokens/s of the batched text env vs ``generate`` + one reference pass + one RM pass, and vs a naive env.

    OMP_NUM_THREADS=1 python benchmarks/rollout_throughput.py            # batches 1, 16, 64; 1 torch thread

Same as ``textenv throughput``; see :mod:`agents.cli.throughput` for what each pipeline does. Writes the
markdown table to ``benchmarks/results/throughput.md``.
"""

import sys

from agents.cli.app import main

if __name__ == "__main__":
    main(["throughput", "--out", "benchmarks/results/throughput.md", *sys.argv[1:]])
