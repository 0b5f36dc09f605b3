"""Matmul backends for packed (W4 AWQ GEMM / W8) linears, chosen once per module at attach time.

    import grace.kernels
    grace.kernels.attach(model)                  # best backend per PackedLinear -> e.g. "int4-cpu"
    grace.kernels.attach(model, "reference")     # or GRACE_KERNEL=reference in the environment
    grace.kernels.available_backends(4, "cpu")   # ['int4-cpu', 'int4-avx512', 'reference', 'dequant']
    grace.kernels.describe(model)                # "int4-cpu (224 modules)"

Backends (``tests/kernels`` checks each against ``reference`` with per-dtype tolerances):

================  =====  ======  ===================================================================
name              bits   device  what it runs
================  =====  ======  ===================================================================
``int4-cpu``      4      cpu     torch ``_weight_int4pack_mm_for_cpu`` (bf16 compute, repacked copy)
``int4-avx512``   4      cpu     grace native kernel on the AWQ buffers in place (fp32 accumulate)
``int8-avx512``   8      cpu     grace native group-wise int8 kernel (fp32 accumulate)
``int8-cpu``      8      cpu     W8 as one doubled-input int4 matmul on torch's CPU int4 kernel
``int4-cuda``     4      cuda    torch tinygemm ``_weight_int4pack_mm`` (sm80+, bf16 compute)
``int8-cuda``     8      cuda    W8 as one doubled-input int4 matmul on tinygemm
``reference``     4, 8   any     dequantise (exact, fp32) + ``F.linear``; the oracle
``dequant``       4, 8   any     the public runtime's fp16 dequantise-every-call path (benchmarks)
================  =====  ======  ===================================================================

Automatic order (first available that supports the module's shape wins; measured on the
2-core AVX-512 CPU this project targets, bench/results/):

* W4 / CPU: bf16 activations -> ``int4-cpu`` then ``int4-avx512`` (batch-1 decode of 4 LLaMA-7B
  layers, layers only: 3.25x vs 2.67x over bf16; torch's repacked layout streams better from
  DRAM). fp16 / fp32 activations -> ``int4-avx512`` first: it keeps fp32 accuracy where
  ``int4-cpu`` would round to bf16, and it needs no second copy of the weights.
* W8 / CPU: ``int8-avx512`` (2.43x) then ``int8-cpu`` (1.76x).
* CUDA: ``int4-cuda`` / ``int8-cuda``. Then ``reference`` everywhere.

The CUDA backends are written against torch's documented op contracts and are tested only under
the ``gpu`` marker; no GPU was available when they were written, so their speed is unmeasured.
"""

from __future__ import annotations

import torch

from grace.kernels import native, reference, torch_int4  # noqa: F401  (each module registers its backends)
from grace.kernels.registry import (
    ENV_VAR,
    Backend,
    KernelError,
    attach,
    available_backends,
    backend_names,
    describe,
    get_backend,
    register,
    set_preference,
)


def _w4_cpu_order(dtype: torch.dtype) -> list[str]:
    if dtype == torch.bfloat16:
        return ["int4-cpu", "int4-avx512"]
    return ["int4-avx512", "int4-cpu"]


set_preference(4, "cpu", _w4_cpu_order)
set_preference(8, "cpu", lambda dtype: ["int8-avx512", "int8-cpu"])
set_preference(4, "cuda", lambda dtype: ["int4-cuda"])
set_preference(8, "cuda", lambda dtype: ["int8-cuda"])

__all__ = [
    "ENV_VAR",
    "Backend",
    "KernelError",
    "attach",
    "available_backends",
    "backend_names",
    "describe",
    "get_backend",
    "register",
    "set_preference",
]
