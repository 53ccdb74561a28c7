"""The ``textenv`` command: world building, reward models, demos (:mod:`agents.cli.app`), ``train <algo>``,
``rlhf``, ``bench`` and ``best-of-n`` (:mod:`agents.cli.train`), the benchmark (:mod:`agents.cli.bench`) and
the rollout-throughput harness (:mod:`agents.cli.throughput`)."""

from agents.cli.app import main

__all__ = ["main"]
