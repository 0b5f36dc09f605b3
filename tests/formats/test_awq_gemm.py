"""AWQ GEMM (W4) and grace W8 layouts: hand-worked golden vectors and round-trip properties."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grace import numerics as N
from grace.formats import awq_gemm as A


def test_known_answer_one_row_of_codes():
    # out=8, in=2, g=2. Input row 0 holds codes -8..-1 for channels 0..7 -> u = 0..7.
    # Nibble k holds channel ORDER[k] = [0,2,4,6,1,3,5,7], so nibbles (low->high) are
    # u = 0,2,4,6,1,3,5,7 -> the word 0x75316420. Row 1 holds codes 0..7 -> u = 8..15 ->
    # nibbles 8,10,12,14,9,11,13,15 -> 0xFDB9ECA8, which as a signed int32 is 0xFDB9ECA8 - 2^32.
    codes = torch.stack([torch.arange(-8, 0), torch.arange(0, 8)], dim=1).to(torch.int8)  # (out=8, in=2)
    scales = torch.arange(1, 9, dtype=torch.float32).reshape(8, 1) / 4  # (out, in/g) = (8, 1)
    t = A.pack_w4(codes, scales, 2)
    assert t["qweight"].dtype == torch.int32 and t["qweight"].shape == (2, 1)
    assert t["qweight"][0, 0].item() == 0x75316420
    assert t["qweight"][1, 0].item() == 0xFDB9ECA8 - (1 << 32)
    # qzeros: zero point 8 in every nibble
    assert t["qzeros"].shape == (1, 1) and t["qzeros"][0, 0].item() == 0x88888888 - (1 << 32) == -2004318072
    # scales are the transposed grid, fp16
    assert t["scales"].dtype == torch.float16 and t["scales"].shape == (1, 8)
    assert t["scales"][0].tolist() == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]


def test_known_answer_dequant_formula():
    codes = torch.tensor([[3, -2], [0, 7], [-8, 1], [5, 5], [1, 1], [2, 2], [-1, -1], [4, -4]], dtype=torch.int8)
    scales = torch.full((8, 1), 0.5)
    t = A.pack_w4(codes, scales, 2)
    w = A.dequantize_w4(t["qweight"], t["qzeros"], t["scales"])
    assert torch.equal(w, codes.float() * 0.5)


def test_unpack_honours_non_eight_zero_points():
    codes = torch.zeros(8, 2, dtype=torch.int8)
    t = A.pack_w4(codes, torch.ones(8, 1), 2)  # u = 8 everywhere
    t["qzeros"] = torch.full_like(t["qzeros"], 0x77777777)  # zero 7 -> code 1
    c, _, _ = A.unpack_w4(**t)
    assert (c == 1).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.sampled_from([8, 32, 128]), st.integers(0, 2**16))
def test_w4_pack_unpack_identity(out_words, n_groups, g, seed):
    gen = torch.Generator().manual_seed(seed)
    out_f, in_f = out_words * 8, n_groups * g
    codes = torch.randint(-8, 8, (out_f, in_f), generator=gen).to(torch.int8)
    scales = (torch.rand(out_f, n_groups, generator=gen) + 1e-3).half().float()
    t = A.pack_w4(codes, scales, g)
    c2, s2, g2 = A.unpack_w4(**t)
    assert g2 == g and torch.equal(c2, codes) and torch.equal(s2.float(), scales)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 40), st.integers(1, 3), st.integers(0, 2**16))
def test_w8_pack_unpack_identity(out_f, n_groups, seed):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(-128, 128, (out_f, n_groups * 16), generator=gen).to(torch.int8)
    scales = torch.rand(out_f, n_groups, generator=gen) + 1e-3
    c2, s2, g2 = A.unpack(A.pack(codes, scales, 8, 16), 8)
    assert g2 == 16 and torch.equal(c2, codes) and torch.equal(s2, scales.half())


def test_every_code_value_survives():
    codes = torch.arange(-8, 8).repeat(8, 8).reshape(8, -1).to(torch.int8)  # all 16 codes, many positions
    t = A.pack_w4(codes, torch.ones(8, codes.shape[1] // 16), 16)
    assert torch.equal(A.unpack_w4(**t)[0], codes)


def test_fake_quant_equals_dequant_of_pack_with_fp16_scales():
    torch.manual_seed(0)
    w = torch.randn(16, 256)
    ls = torch.log(N.init_scales_mse(w, 4, 128)).reshape(-1)
    fq = N.fake_quantize(w, ls, 4, 128, scale_dtype=torch.float16)
    s16 = N.scales_from_log(ls, 16, torch.float16)
    t = A.pack_w4(N.quantize_codes(w, s16, 4, 128), s16, 128)
    assert torch.equal(fq, A.dequantize_w4(**t))


@pytest.mark.parametrize(
    "codes,scales,g,msg",
    [
        (torch.zeros(7, 8, dtype=torch.int8), torch.ones(7, 1), 8, "divisible by 8"),
        (torch.zeros(8, 12, dtype=torch.int8), torch.ones(8, 1), 8, "does not divide"),
        (torch.full((8, 8), 9, dtype=torch.int8), torch.ones(8, 1), 8, r"\[-8, 7\]"),
        (torch.zeros(8, 8, dtype=torch.int8), torch.ones(8, 2), 8, "scale grid shape"),
    ],
)
def test_pack_refuses_bad_input(codes, scales, g, msg):
    with pytest.raises(A.PackError, match=msg):
        A.pack_w4(codes, scales, g)


def test_pack_is_vectorised_fast_enough_for_7b_shapes():
    # Correctness at a real shape (the timing goal lives in bench/pack.py).
    codes = torch.randint(-8, 8, (4096, 4096), dtype=torch.int8)
    scales = torch.rand(4096, 32) + 0.01
    t = A.pack_w4(codes, scales, 128)
    assert torch.equal(A.unpack_w4(**t)[0], codes)
