"""Shared helpers for the kernel tests: random packed linears and the error bound they must meet."""

from __future__ import annotations

import pytest
import torch

import grace.kernels as K
from grace import numerics
from grace.formats import awq_gemm
from grace.quant.modules import PackedLinear

# Unit roundoff per dtype; fp32 gets a floor that also covers fp32 summation-order differences
# over a few thousand terms (observed ~1e-7 relative, bound 1e-5).
UNIT = {torch.float32: 1e-5, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def make_packed(out_f: int, in_f: int, bits: int, group: int, bias: bool, seed: int = 0,
                general_zeros: bool = False, device="cpu") -> PackedLinear:
    """A PackedLinear with random codes on the full grid and random fp16 scales (~0.002-0.03)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = numerics.qrange(bits)
    codes = torch.randint(lo, hi + 1, (out_f, in_f), generator=g, dtype=torch.int8)
    scales = (torch.rand(out_f, in_f // group, generator=g) * 0.03 + 0.002).half()
    b = torch.randn(out_f, generator=g) if bias else None
    m = PackedLinear.from_codes(codes, scales, bits, group, bias=b)
    if general_zeros:  # a general AWQ checkpoint: zero points other than 8, codes reinterpreted
        z = torch.randint(0, 16, (in_f // group, out_f), generator=g, dtype=torch.int64)
        z = z.view(in_f // group, out_f // 8, 8)[:, :, list(awq_gemm.AWQ_ORDER)]
        words = (z << torch.arange(0, 32, 4)).sum(-1)
        m.qzeros.copy_(torch.where(words >= 2**31, words - 2**32, words).to(torch.int32))
    return m.to(device)


def exact_and_magnitude(m: PackedLinear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(y in fp64 from the exact dequantised weight, sum_i |x_i W_oi| + |b_o| in fp64)."""
    w = m.dequantized_weight(torch.float32).double()
    xd = x.double().reshape(-1, m.in_features)
    y = xd @ w.t()
    mag = xd.abs() @ w.abs().t()
    if m.bias is not None:
        b = m.bias.to(x.dtype).double()
        y, mag = y + b, mag + b.abs()
    return y, mag


def assert_close_to_exact(m: PackedLinear, x: torch.Tensor, y: torch.Tensor, backend_name: str) -> None:
    """|y - exact| <= u_c * sum|x W| + u_a * |exact| elementwise.

    u_c: unit roundoff of the coarser of the activation dtype and the backend's compute dtype
    (weights / scales / activations rounded once each); u_a: the output dtype's, for the final
    rounding. A wrong nibble order, zero point or scale layout misses this by orders of magnitude.
    """
    b = K.get_backend(backend_name)
    u_a = UNIT[x.dtype]
    u_c = max(u_a, UNIT[b.compute_dtype]) if b.compute_dtype is not None else u_a
    if backend_name == "dequant":  # the public path computes in fp16 whatever the input
        u_c = max(u_a, UNIT[torch.float16])
    exact, mag = exact_and_magnitude(m, x)
    assert y.dtype == x.dtype and y.shape == (*x.shape[:-1], m.out_features)
    err = (y.double().reshape(exact.shape) - exact).abs()
    bound = u_c * mag + u_a * exact.abs() + 1e-12  # observed worst: about 0.3 of this
    worst = (err / bound).max().item()
    assert worst <= 1.0, f"{backend_name} {x.dtype}: error {worst:.2f}x the bound (max err {err.max().item():.3g})"


def require(backend_name: str, device: str = "cpu") -> None:
    b = K.get_backend(backend_name)
    if not b.is_available(torch.device(device)):
        pytest.skip(f"{backend_name} unavailable here: {b.unavailable_reason(torch.device(device))}")
