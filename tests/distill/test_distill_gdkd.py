"""GDKD: hand-computed values, properties, chunking and gradcheck."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grace.distill import confidence_gate, dkd_per_position, gdkd, gdkd_loss


def _gate(p):
    h = -sum(x * math.log(x) for x in p)
    return math.exp(-h / math.log(len(p)))


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def _two_position_case(scale: float):
    """Logits of a (1, 3, 3) batch; positions 0 and 1 predict labels[0, 1] = 0 and labels[0, 2] = 1."""
    ln2 = math.log(2.0)
    zs = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, ln2], [5.0, -1.0, 0.3]]]) * scale
    zt = torch.tensor([[[ln2, 0.0, 0.0], [0.0, 0.0, 0.0], [-2.0, 4.0, 1.0]]]) * scale
    labels = torch.tensor([[-100, 0, 1]])
    return zs, zt, labels


def test_hand_computed_two_positions_t1():
    zs, zt, labels = _two_position_case(1.0)
    # Position 0, target 0: teacher (1/2, 1/4, 1/4), student uniform.
    tckd0 = _kl([0.5, 0.5], [1 / 3, 2 / 3])
    nckd0 = _kl([0.5, 0.5], [0.5, 0.5])  # = 0
    # Position 1, target 1: teacher uniform, student (1/4, 1/4, 1/2).
    tckd1 = _kl([1 / 3, 2 / 3], [1 / 4, 3 / 4])
    nckd1 = _kl([0.5, 0.5], [1 / 3, 2 / 3])
    l0, l1 = tckd0 + 4 * nckd0, tckd1 + 4 * nckd1
    g0, g1 = _gate([0.5, 0.25, 0.25]), _gate([1 / 3] * 3)
    expect = (g0 * l0 + g1 * l1) / (g0 + g1)
    got = gdkd_loss(zs, zt, labels, temperature=1.0, alpha=1.0, beta_dkd=4.0)
    assert got.item() == pytest.approx(expect, rel=1e-5)
    res = gdkd(zs, zt, labels, temperature=1.0)
    assert res.n_positions == 2
    assert res.gate_mean.item() == pytest.approx((g0 + g1) / 2, rel=1e-5)


def test_hand_computed_temperature_two():
    # Doubled logits at T=2 give the same tempered distributions, times T^2 = 4; the gate sees
    # the *untempered* (doubled) teacher logits.
    zs, zt, labels = _two_position_case(2.0)
    l0 = 4 * (0.5 * _kl([0.5, 0.5], [1 / 3, 2 / 3]))  # NCKD is 0 at position 0
    l1 = 4 * (0.5 * _kl([1 / 3, 2 / 3], [1 / 4, 3 / 4]) + 2.0 * _kl([0.5, 0.5], [1 / 3, 2 / 3]))
    g0, g1 = _gate([4 / 6, 1 / 6, 1 / 6]), _gate([1 / 3] * 3)
    expect = (g0 * l0 + g1 * l1) / (g0 + g1)
    got = gdkd_loss(zs, zt, labels, temperature=2.0, alpha=0.5, beta_dkd=2.0)
    assert got.item() == pytest.approx(expect, rel=1e-5)


def test_gate_bounds_and_extremes():
    v = 50
    uniform = torch.zeros(1, v)
    assert confidence_gate(uniform).item() == pytest.approx(math.exp(-1), rel=1e-6)
    peaked = torch.zeros(1, v)
    peaked[0, 3] = 200.0
    assert confidence_gate(peaked).item() == pytest.approx(1.0, abs=1e-6)
    g = confidence_gate(torch.randn(1000, v) * 4)
    assert bool(((g > math.exp(-1) - 1e-6) & (g <= 1.0)).all())


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 40), st.floats(0.1, 20.0), st.integers(0, 2**31 - 1))
def test_gate_in_range_property(v, scale, seed):
    z = torch.randn(8, v, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    g = confidence_gate(z)
    assert bool((g >= math.exp(-1) - 1e-12).all()) and bool((g <= 1.0 + 1e-12).all())


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 30), st.integers(2, 6), st.floats(0.5, 4.0), st.integers(0, 2**31 - 1))
def test_zero_when_teacher_equals_student(v, seq, temperature, seed):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(2, seq, v, generator=gen) * 3
    labels = torch.randint(0, v, (2, seq), generator=gen)
    loss = gdkd_loss(z, z.clone(), labels, temperature=temperature)
    assert abs(loss.item()) < 1e-6


def test_nonnegative_and_ignored_positions():
    gen = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(3, 7, 11, generator=gen), torch.randn(3, 7, 11, generator=gen)
    labels = torch.randint(0, 11, (3, 7), generator=gen)
    labels[1] = -100
    base = gdkd_loss(zs, zt, labels)
    assert base.item() > 0
    # Changing logits at a position whose next label is ignored changes nothing.
    zs2 = zs.clone()
    zs2[1, 3] += 5.0
    zs2[0, -1] += 5.0  # the last position predicts nothing
    assert gdkd_loss(zs2, zt, labels).item() == pytest.approx(base.item(), rel=1e-6)


def test_no_supervised_positions_is_connected_zero():
    zs = torch.randn(2, 4, 5, requires_grad=True)
    res = gdkd(zs, torch.randn(2, 4, 5), torch.full((2, 4), -100))
    assert res.loss.item() == 0.0 and res.n_positions == 0
    res.loss.backward()
    assert zs.grad is not None and float(zs.grad.abs().sum()) == 0.0


def test_chunking_and_checkpointing_do_not_change_value_or_grad():
    gen = torch.Generator().manual_seed(1)
    zs = torch.randn(2, 9, 13, generator=gen, requires_grad=True)
    zt = torch.randn(2, 9, 13, generator=gen)
    labels = torch.randint(0, 13, (2, 9), generator=gen)
    labels[0, :3] = -100
    ref = gdkd(zs, zt, labels, chunk_size=10_000, checkpoint_chunks=False).loss
    (g_ref,) = torch.autograd.grad(ref, zs)
    for chunk, ckpt in [(1, True), (3, True), (5, False)]:
        out = gdkd(zs, zt, labels, chunk_size=chunk, checkpoint_chunks=ckpt).loss
        (g,) = torch.autograd.grad(out, zs)
        assert out.item() == pytest.approx(ref.item(), rel=1e-6)
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-7)


def test_bf16_logits_computed_in_fp32():
    gen = torch.Generator().manual_seed(2)
    zs, zt = torch.randn(1, 6, 17, generator=gen), torch.randn(1, 6, 17, generator=gen)
    labels = torch.randint(0, 17, (1, 6), generator=gen)
    lo = gdkd_loss(zs.bfloat16(), zt.bfloat16(), labels)
    hi = gdkd_loss(zs.bfloat16().float(), zt.bfloat16().float(), labels)
    assert lo.dtype == torch.float32 and lo.item() == pytest.approx(hi.item(), rel=1e-6)


def test_per_position_matches_full_softmax_definition():
    gen = torch.Generator().manual_seed(3)
    zs, zt = torch.randn(5, 9, generator=gen, dtype=torch.float64), torch.randn(5, 9, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 9, (5,), generator=gen)
    t, a, b = 1.7, 0.8, 3.0
    got = dkd_per_position(zs, zt, y, temperature=t, alpha=a, beta_dkd=b)
    for i in range(5):
        ps, pt = torch.softmax(zs[i] / t, -1), torch.softmax(zt[i] / t, -1)
        yi = int(y[i])
        tck = _kl([pt[yi].item(), 1 - pt[yi].item()], [ps[yi].item(), 1 - ps[yi].item()])
        keep = [j for j in range(9) if j != yi]
        qs, qt = ps[keep] / ps[keep].sum(), pt[keep] / pt[keep].sum()
        nck = _kl(qt.tolist(), qs.tolist())
        assert got[i].item() == pytest.approx(t * t * (a * tck + b * nck), rel=1e-9)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(4)
    zs = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 5, (2, 3), generator=gen)
    labels[1, 1] = -100

    def f(s, t):
        return gdkd_loss(s, t, labels, temperature=2.0, chunk_size=2)

    assert torch.autograd.gradcheck(f, (zs, zt), eps=1e-6, atol=1e-6)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="share the vocabulary"):
        gdkd_loss(torch.randn(1, 3, 5), torch.randn(1, 3, 6), torch.zeros(1, 3, dtype=torch.long))
