"""LR schedule, warm-up ramps and the rank-aware data order."""

import math

import pytest

from grace.train.schedule import RankBatchSampler, lr_factor, ramp


def test_lr_factor_cosine_and_linear():
    assert lr_factor(0, total=10, warmup=2) == 0.0
    assert lr_factor(1, total=10, warmup=2) == 0.5
    assert lr_factor(2, total=10, warmup=2) == pytest.approx(1.0)
    assert lr_factor(6, total=10, warmup=2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(10, total=10, warmup=2) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(6, total=10, warmup=2, kind="linear") == pytest.approx(0.5)
    assert lr_factor(10, total=10, warmup=0, kind="cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(7, total=10, warmup=0, kind="constant") == 1.0


def test_ramp():
    assert [ramp(k, 4) for k in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert ramp(0, 0) == 1.0


def _global_batches(world, accum, micro, *, n=37, seed=3, steps=7, start=0):
    per_rank = [list(RankBatchSampler(n, micro=micro, accum=accum, world=world, rank=r, seed=seed, start_step=start,
                                      total_steps=steps)) for r in range(world)]
    out = []
    for k in range(steps - start):
        batch = set()
        for r in range(world):
            for m in range(accum):
                batch |= set(per_rank[r][k * accum + m])
        out.append(batch)
    return out


def test_global_batch_is_independent_of_split():
    a = _global_batches(1, 4, 2)
    assert a == _global_batches(2, 2, 2) == _global_batches(4, 1, 2) == _global_batches(2, 1, 4)
    assert all(len(b) == 8 for b in a)


def test_epochs_cover_without_repeats_and_resume_is_a_suffix():
    n, gb = 37, 8  # 4 steps per epoch, 5 records dropped per epoch
    full = _global_batches(1, 1, gb, n=n, steps=8)
    first_epoch = set().union(*full[:4])
    assert len(first_epoch) == 32  # no record twice in an epoch
    assert full[4:] != full[:4]  # a new permutation for epoch 1
    assert _global_batches(1, 1, gb, n=n, steps=8, start=5) == full[5:]
    s = RankBatchSampler(n, micro=2, accum=3, world=2, rank=1, seed=0, start_step=2, total_steps=5)
    assert len(s) == len(list(s)) == 9
