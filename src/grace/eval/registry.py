"""Benchmark name -> scorer. One instance per benchmark; names are case- and dash-insensitive.

Invariant: every benchmark grace supports is listed here exactly once, and the aliases users type
(``sqa``, ``seed-bench``, ``hallusion`` ...) all resolve to the same object.
"""

from __future__ import annotations

from grace.errors import GraceError
from grace.eval.ai2d import AI2D
from grace.eval.base import Benchmark
from grace.eval.gqa import GQA
from grace.eval.hallusion import HallusionBench
from grace.eval.mmbench import MMBench
from grace.eval.mme import MME
from grace.eval.mmmu import MMMU
from grace.eval.mmstar import MMStar
from grace.eval.pope import POPE
from grace.eval.scienceqa import ScienceQA
from grace.eval.seed import SEEDBench
from grace.eval.synthvqa import SynthVQA
from grace.eval.textvqa import TextVQA
from grace.eval.vqav2 import VQAv2

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        VQAv2(), GQA(), TextVQA(), POPE(), MME(), ScienceQA(), SEEDBench(), MMBench(),
        HallusionBench(), AI2D(), MMMU(), MMStar(), SynthVQA(),
    )
}  # fmt: skip

_ALIASES = {
    "sqa": "scienceqa", "sqaimg": "scienceqa", "scienceqaimg": "scienceqa",
    "seedbench": "seed", "seedimg": "seed", "seedbenchimg": "seed",
    "mmbenchdev": "mmbench", "mmbenchen": "mmbench",
    "hallusion": "hallusionbench", "hallb": "hallusionbench",
    "mmmuval": "mmmu", "vqa": "vqav2", "vqav2val": "vqav2", "textvqaval": "textvqa", "gqatestdev": "gqa",
    "ai2dtest": "ai2d", "synth": "synthvqa",
}  # fmt: skip


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name`` (or an alias). ``get_benchmark("POPE").name == "pope"``"""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    key = _ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise GraceError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    return BENCHMARKS[key]


def list_benchmarks() -> list[str]:
    """Names of all registered benchmarks."""
    return sorted(BENCHMARKS)
