"""Benchmarks and metrics for grace models, scored the way each official evaluator scores.

Nothing else in the package imports ``grace.eval``; it sits on top (it only needs a model object
with ``generate``). Public API:

    from grace.eval import run_benchmark, score_files, get_benchmark, list_benchmarks
    res = score_files("pope", "answers.jsonl", ["data/pope"])        # res["headline"]["value"]
    res = run_benchmark(vlm, "mme", "data/MME", "runs/mme", batch_size=8)

The per-benchmark rules, and the choices made where toolkits disagree, are in docs/eval.md.
"""

from grace.eval.base import Benchmark, Item
from grace.eval.registry import BENCHMARKS, get_benchmark, list_benchmarks
from grace.eval.runner import run_benchmark, score_files

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "Item",
    "get_benchmark",
    "list_benchmarks",
    "run_benchmark",
    "score_files",
]
