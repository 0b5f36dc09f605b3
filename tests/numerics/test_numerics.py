"""The quantization math: codes, dequant, fake quant (LSQ + STE), scale init."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grace import numerics as N


def test_qrange():
    assert N.qrange(4) == (-8, 7)
    assert N.qrange(8) == (-128, 127)
    assert N.qrange(2) == (-2, 1)


def test_effective_group_size_row_wide_when_not_dividing():
    assert N.effective_group_size(256, 128) == 128
    assert N.effective_group_size(200, 128) == 200


def test_group_index_convention():
    # element (o, i) is in group o*(in/g) + i//g: the flat log_scale order of the sidecar
    w = torch.arange(2 * 8, dtype=torch.float32).reshape(2, 8)
    gv = N.group_view(w, 4)
    assert gv.shape == (2, 2, 4)
    flat = gv.reshape(-1, 4)
    assert torch.equal(flat[1], torch.tensor([4.0, 5, 6, 7]))  # o=0, i in 4..7 -> group 1
    assert torch.equal(flat[2], torch.tensor([8.0, 9, 10, 11]))  # o=1, i in 0..3 -> group 2


def test_quantize_codes_known_answer():
    w = torch.tensor([[0.0, 0.24, 0.26, -0.75, 10.0, -10.0, 0.5, -0.5]])
    s = torch.tensor([[0.5]])
    q = N.quantize_codes(w, s, 4, 8)
    # round-half-to-even: 0.5/0.5=1, -0.5/0.5=-1; 0.26/0.5=0.52 -> 1; clamp at [-8, 7]
    assert q.tolist() == [[0, 0, 1, -2, 7, -8, 1, -1]]


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.sampled_from([4, 8]), st.integers(0, 2**16))
def test_fake_quant_equals_dequant_of_codes_fp32(rows, groups, bits, seed):
    g = 16
    torch.manual_seed(seed)
    w = torch.randn(rows, groups * g)
    s = N.init_scales_mse(w, bits, g)
    ls = torch.log(s).reshape(-1)
    fq = N.fake_quantize(w, ls, bits, g, scale_dtype=torch.float32)
    s32 = N.scales_from_log(ls, rows)
    assert torch.equal(fq, N.dequantize(N.quantize_codes(w, s32, bits, g), s32, g))


def test_fake_quant_gradients_reach_weight_and_log_scale():
    torch.manual_seed(0)
    w = torch.randn(8, 32, requires_grad=True)
    ls = torch.log(N.init_scales_mse(w.detach(), 4, 16)).reshape(-1).requires_grad_(True)
    N.fake_quantize(w, ls, 4, 16).pow(2).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert ls.grad is not None and ls.grad.abs().sum() > 0


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 5), st.integers(1, 3), st.sampled_from([2, 3, 4, 8]), st.sampled_from([None, torch.float16]),
       st.floats(0.3, 3.0), st.integers(0, 2**16))
def test_fused_fake_quant_matches_autograd_reference(rows, groups, bits, sdt, spread, seed):
    # The fused autograd function must give the plain-autograd composition's values and gradients,
    # clipped weights (spread > 1 pushes some outside the code range) and fp16 scales included.
    g = 16
    torch.manual_seed(seed)
    w0 = torch.randn(rows, groups * g) * spread
    ls0 = torch.log(N.init_scales_mse(w0, bits, g)).reshape(-1) + 0.01 * torch.randn(rows * groups)
    up = torch.randn(rows, groups * g)
    grads = []
    for fn in (N.fake_quantize, N.fake_quantize_reference):
        w, ls = w0.clone().requires_grad_(True), ls0.clone().requires_grad_(True)
        out = fn(w, ls, bits, g, scale_dtype=sdt)
        (out * up).sum().backward()
        grads.append((out.detach(), w.grad, ls.grad))
    (o1, gw1, gs1), (o2, gw2, gs2) = grads
    assert torch.equal(o1, o2)
    torch.testing.assert_close(gw1, gw2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gs1, gs2, rtol=1e-4, atol=1e-5)


def test_ste_gradient_is_identity_inside_range_and_zero_outside():
    w = torch.tensor([[0.1, 0.2, 100.0, -100.0]], requires_grad=True)
    ls = torch.zeros(1)  # s = 1
    N.fake_quantize(w, ls, 4, 4, scale_dtype=torch.float32).sum().backward()
    assert w.grad.tolist() == [[1.0, 1.0, 0.0, 0.0]]


def test_init_scales_picks_mse_best_candidate():
    torch.manual_seed(1)
    w = torch.randn(4, 64)
    bits, g = 4, 32
    best = N.init_scales_mse(w, bits, g, chunk_elems=64)  # force several chunks
    qmin, qmax = N.qrange(bits)
    for o in range(4):
        for k in range(2):
            x = w[o, k * g : (k + 1) * g]
            cands = torch.linspace(0.3, 1.2, 20) * x.abs().max() / qmax
            errs = [((torch.clamp(torch.round(x / c), qmin, qmax) * c - x) ** 2).sum() for c in cands]
            assert torch.isclose(best[o, k], cands[int(torch.stack(errs).argmin())])


def test_fp16_scale_mode_sees_fp16_scales():
    torch.manual_seed(2)
    w = torch.randn(4, 32)
    ls = torch.log(N.init_scales_mse(w, 4, 32)).reshape(-1) + 1e-4
    s16 = N.scales_from_log(ls, 4, torch.float16)
    assert torch.equal(s16, s16.half().float())
    fq = N.fake_quantize(w, ls, 4, 32, scale_dtype=torch.float16)
    assert torch.equal(fq, N.dequantize(N.quantize_codes(w, s16, 4, 32), s16, 32))


def test_init_scales_memory_is_chunked():
    # A 4096x11008 weight in 2M-element chunks: the (R, G, C, g) temporary stays ~170 MB
    w = torch.randn(4096, 11008)
    rows = max(1, (1 << 21) // 11008)
    assert rows * 11008 * 20 * 4 < 200 * 2**20
    s = N.init_scales_mse(w[:rows * 2], 4, 128)
    assert s.shape == (rows * 2, 86)


def test_codes_from_grid_weight_exact_even_in_bf16():
    torch.manual_seed(3)
    for bits in (4, 8):
        w = torch.randn(16, 256)
        s = N.init_scales_mse(w, bits, 128).half().float()
        q = N.quantize_codes(w, s, bits, 128)
        grid = N.dequantize(q, s, 128).to(torch.bfloat16)
        q2, _ = N.codes_from_grid_weight(grid, torch.log(s).reshape(-1), bits, 128)
        assert torch.equal(q, q2)
