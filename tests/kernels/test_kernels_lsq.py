"""The fused native LSQ fake-quant ops against grace's torch definition (values exact, gradients close)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grace import numerics as N
from grace.kernels import native


@pytest.fixture(scope="module")
def ops():
    o = native.lsq_ops()
    if o is None:
        pytest.skip(f"native kernels unavailable here: {native._STATE['error']}")
    return o


def _run(wg, s, qmin, qmax, up, use_native, monkeypatch):
    if not use_native:
        monkeypatch.setattr(N, "_native_lsq", lambda *a: None)
    w = wg.clone().requires_grad_(True)
    sc = s.clone().requires_grad_(True)
    out = N._LSQFakeQuant.apply(w, sc, qmin, qmax)
    (out * up).sum().backward()
    monkeypatch.undo()
    return out.detach(), w.grad, sc.grad


@settings(deadline=None, max_examples=30)
@given(rows=st.integers(1, 6), groups=st.integers(1, 3), gs=st.sampled_from([16, 20, 128, 7]),
       bits=st.sampled_from([2, 3, 4, 8]), spread=st.floats(0.5, 3.0), seed=st.integers(0, 2**16))
def test_native_lsq_matches_torch(ops, rows, groups, gs, bits, spread, seed):
    # gs 20 / 7 exercise the scalar tail after (or instead of) the 16-lane loop.
    qmin, qmax = N.qrange(bits)
    g = torch.Generator().manual_seed(seed)
    wg = torch.randn(rows, groups, gs, generator=g) * spread
    s = wg.abs().amax(-1, keepdim=True).clamp_min(1e-3) / qmax
    # Exact ties at the range ends and at code mid-points, where rounding is half-to-even.
    wg[0, 0, :4] = torch.tensor([qmax + 0.5, qmin - 0.5, 0.5, -1.5]) * s[0, 0, 0]
    up = torch.randn(rows, groups, gs, generator=g)
    with pytest.MonkeyPatch.context() as mp:
        a = _run(wg, s, qmin, qmax, up, True, mp)
        b = _run(wg, s, qmin, qmax, up, False, mp)
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])  # the STE mask: exact
    torch.testing.assert_close(a[2], b[2], rtol=1e-5, atol=1e-5)  # a sum in another order


def test_native_lsq_keeps_nan_like_torch(ops):
    wg = torch.tensor([[[float("nan")] + [0.1] * 15]])
    s = torch.tensor([[[0.05]]])
    out = ops.lsq_forward(wg, s, -8, 7)
    assert torch.isnan(out[0, 0, 0]) and torch.equal(out[0, 0, 1:], (torch.round(wg[0, 0, 1:] / s[0, 0]) * s[0, 0]))
    gw, gs = ops.lsq_backward(torch.ones_like(wg), wg, s, -8, 7)
    assert gw[0, 0, 0] == 0 and torch.isnan(gs).all()


def test_native_lsq_rejects_bad_inputs(ops):
    with pytest.raises(RuntimeError, match="contiguous fp32"):
        ops.lsq_forward(torch.zeros(2, 2, 16, dtype=torch.float64), torch.ones(2, 2, 1), -8, 7)
    with pytest.raises(RuntimeError, match="one scale per group"):
        ops.lsq_forward(torch.zeros(2, 2, 16), torch.ones(3), -8, 7)
