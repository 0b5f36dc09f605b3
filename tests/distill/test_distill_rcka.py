"""RCKA / CKA: hand-computed values, invariances, skipping rules, gradcheck."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grace.distill import cka, rcka, rcka_loss


def test_hand_computed_one_dimensional_features():
    # 1-D features normalise to their signs: a -> (1, 1, -1, -1), b -> (1, 1, 1, -1).
    # Kc_a = a a^T (a already has mean 0); Kc_b = c c^T with c = b - mean(b) = (.5, .5, .5, -1.5).
    # CKA = (a.c)^2 / (|a|^2 |c|^2) = 2^2 / (4 * 3) = 1/3.
    a = torch.tensor([[2.0], [3.0], [-1.0], [-5.0]])
    b = torch.tensor([[0.5], [7.0], [1.0], [-2.0]])
    assert cka(a, b).item() == pytest.approx(1 / 3, rel=1e-6)
    # (1, -1, 1, -1) against (1, 1, -1, -1): orthogonal centred kernels, CKA = 0.
    assert cka(a, torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])).item() == pytest.approx(0.0, abs=1e-7)


def test_hand_computed_two_dimensional_features():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    a = torch.tensor([e1, e2, e1, e2])
    b = torch.tensor([e1, e1, e2, e2])
    # Kc_a = +-1/2 by parity, Kc_b = +-1/2 by half: the 16 products cancel exactly.
    assert cka(a, b).item() == pytest.approx(0.0, abs=1e-7)
    assert cka(a, a * 3).item() == pytest.approx(1.0, abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(4, 20), st.integers(2, 12), st.integers(2, 12), st.floats(0.01, 100.0), st.integers(0, 2**31 - 1))
def test_invariances(n, da, db, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, da, generator=gen, dtype=torch.float64)
    b = torch.randn(n, db, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(da, da, generator=gen, dtype=torch.float64))
    assert cka(a, a.clone()).item() == pytest.approx(1.0, abs=1e-9)
    base = cka(a, b).item()
    assert 0.0 - 1e-9 <= base <= 1.0 + 1e-9
    assert cka(a @ q, b).item() == pytest.approx(base, abs=1e-9)  # orthogonal transform
    assert cka(a * scale, b).item() == pytest.approx(base, abs=1e-9)  # isotropic scaling
    assert cka(a, b * scale).item() == pytest.approx(base, abs=1e-9)
    assert cka(b, a).item() == pytest.approx(base, abs=1e-9)  # symmetric


def test_rcka_loss_averages_images_and_skips_small_or_degenerate():
    hs = torch.zeros(3, 8, 1)
    ht = torch.zeros(3, 8, 2)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    # Sample 0: 4 image tokens at 2..5, 1-D features of the hand case above -> 1 - 1/3.
    hs[0, 2:6, 0] = torch.tensor([2.0, 3.0, -1.0, -5.0])
    ht[0, 2:6, 0] = torch.tensor([0.5, 7.0, 1.0, -2.0])
    mask[0, 2:6] = True
    # Sample 1: only 3 image tokens -> skipped.
    hs[1, :3] = torch.randn(3, 1)
    ht[1, :3] = torch.randn(3, 2)
    mask[1, :3] = True
    # Sample 2: 5 tokens but every feature identical -> centred Gram is 0 -> skipped.
    hs[2, 1:6] = 1.0
    ht[2, 1:6] = torch.randn(5, 2)
    mask[2, 1:6] = True
    res = rcka(hs, ht, mask)
    assert res.n_images == 1
    assert res.loss.item() == pytest.approx(2 / 3, rel=1e-6)
    # Features outside the mask do not matter.
    hs2 = hs.clone()
    hs2[0, 0] = 42.0
    assert rcka_loss(hs2, ht, mask).item() == pytest.approx(2 / 3, rel=1e-6)


def test_rcka_no_images_is_connected_zero():
    hs = torch.randn(2, 5, 4, requires_grad=True)
    res = rcka(hs, torch.randn(2, 5, 6), torch.zeros(2, 5, dtype=torch.bool))
    assert res.n_images == 0 and res.loss.item() == 0.0
    res.loss.backward()
    assert hs.grad is not None


def test_rcka_widths_may_differ_and_tokens_must_match():
    with pytest.raises(ValueError):
        rcka_loss(torch.randn(2, 5, 4), torch.randn(2, 6, 4), torch.ones(2, 5, dtype=torch.bool))


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    hs = torch.randn(2, 7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    ht = torch.randn(2, 7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, 1:6] = True
    mask[1, 2:7] = True
    assert torch.autograd.gradcheck(lambda a, b: rcka_loss(a, b, mask), (hs, ht), eps=1e-6, atol=1e-6)
