"""Every CPU backend against the exact dequantised weight, per activation dtype, shape and batch."""

from __future__ import annotations

import pytest
import torch

import grace.kernels as K
from conftest import assert_close_to_exact, make_packed, require

CPU_BACKENDS = {4: ["reference", "dequant", "int4-cpu", "int4-avx512"],
                8: ["reference", "dequant", "int8-cpu", "int8-avx512"]}
# (out, in, group): square; out not a multiple of 128 (partial native block); row-wide group
# (what PackedLinear gets when g does not divide in); group 64; out % 16 != 0 (int4-cpu refuses).
SHAPES = [(128, 256, 128), (272, 384, 128), (96, 192, 192), (64, 512, 64), (40, 256, 128)]
DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def _cases():
    for bits, names in CPU_BACKENDS.items():
        for name in names:
            yield pytest.param(bits, name, id=f"w{bits}-{name}")


@pytest.mark.parametrize("bits,name", list(_cases()))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[1])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_backend_matches_exact(bits, name, dtype, bias):
    require(name)
    b = K.get_backend(name)
    ran = 0
    for i, (out_f, in_f, g) in enumerate(SHAPES):
        m = make_packed(out_f, in_f, bits, g, bias, seed=i)
        if not b.supports(m):
            continue
        assert K.attach(m, name) == name
        gen = torch.Generator().manual_seed(100 + i)
        # batch 1 (decode), 3 (W4 GEMV with several rows), 16 (W8 GEMV largest), 3-D (2, 5, in)
        # and 40 (the native kernels switch to dequantise-and-GEMM above 4 (W4) and 16 (W8) rows).
        for shape in [(1, in_f), (3, in_f), (16, in_f), (2, 5, in_f), (40, in_f)]:
            x = torch.randn(*shape, generator=gen).to(dtype)
            assert_close_to_exact(m, x, m(x), name)
        ran += 1
    assert ran >= 3  # each backend is exercised on most shapes


@pytest.mark.parametrize("name", ["reference", "dequant", "int4-cpu", "int4-avx512"])
def test_w4_general_zero_points(name):
    # AWQ checkpoints from other tools carry zero points != 8: W = s * (u - z).
    require(name)
    m = make_packed(128, 256, 4, 64, bias=True, general_zeros=True)
    K.attach(m, name)
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(3, 256).to(dtype)
        assert_close_to_exact(m, x, m(x), name)


@pytest.mark.parametrize("bits,name", list(_cases()))
def test_exact_on_representable_problems(bits, name):
    """Integer activations, power-of-two scales, small sums: every backend must be bit-exact.

    This pins the scale/zero conversions (e.g. int4-cpu's S = (s, s (8 - z))) and the nibble
    order with no tolerance at all: any off-by-one in a code or zero changes the result.
    """
    require(name)
    out_f, in_f, g = 128, 256, 64
    gen = torch.Generator().manual_seed(7)
    m = make_packed(out_f, in_f, bits, g, bias=False, seed=3)
    pow2 = torch.tensor([2.0**-3, 2.0**-4, 2.0**-5], dtype=torch.float16)
    m.scales.copy_(pow2[torch.randint(0, 3, m.scales.shape, generator=gen)])
    K.attach(m, name)
    # Rows with one or two +-1 entries. A sum's exactness needs its significant bits to fit the
    # output dtype's 8 (bf16): two W4 terms with scales 2^-3 and 2^-5 need 7; two W8 terms need
    # the same scale (|q1 + q2| <= 256), so W8 pairs are drawn inside one group.
    x = torch.zeros(6, in_f)
    for r in range(6):
        i = int(torch.randint(0, in_f, (1,), generator=gen))
        x[r, i] = 1.0 if r % 2 else -1.0
        if r >= 2:
            j = (i // g) * g + (i % g + 1 + int(torch.randint(0, g - 1, (1,), generator=gen))) % g
            if bits == 4 and r >= 4:
                j = (i + g + int(torch.randint(0, in_f - 2 * g, (1,), generator=gen))) % in_f  # other group
            x[r, j] = 1.0
    exact = (x.double() @ m.dequantized_weight(torch.float32).double().t())
    for dtype in DTYPES:
        y = m(x.to(dtype)).double()
        assert torch.equal(y, exact), f"{name} {dtype}: max diff {(y - exact).abs().max().item()}"


def test_attach_auto_choice_is_supported_and_correct():
    # out=40 is not a multiple of 16: int4-cpu must be skipped in favour of the next backend.
    m = make_packed(40, 256, 4, 128, bias=True)
    chosen = K.attach(m, dtype=torch.bfloat16)
    assert chosen != "int4-cpu"
    x = torch.randn(2, 256, dtype=torch.bfloat16)
    assert_close_to_exact(m, x, m(x), chosen)
