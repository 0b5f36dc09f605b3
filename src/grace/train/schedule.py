"""Step-indexed schedules: the learning rate, the loss warm-up ramps and the data order.

Everything here is a pure function of the optimizer step ``k`` (0-based, the step about to be
taken) and the seed, so a resumed run recomputes exactly what an uninterrupted run would have
used; nothing depends on wall-clock or iterator state.
"""

from __future__ import annotations

import math

import torch

__all__ = ["lr_factor", "ramp", "RankBatchSampler"]


def lr_factor(k: int, *, total: int, warmup: int, kind: str = "cosine", min_ratio: float = 0.0) -> float:
    """Multiplier of the base LR at step ``k``: ``LambdaLR(opt, partial(lr_factor, total=T, warmup=W))``.

    Linear warm-up from 0 over ``warmup`` steps (so step 0 of a warmed-up run takes no step, as in
    transformers' schedules), then cosine / linear decay to ``min_ratio`` at ``total``, or constant.
    """
    if warmup > 0 and k < warmup:
        return k / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (k - warmup) / max(1, total - warmup))
    if kind == "linear":
        decay = 1.0 - progress
    elif kind == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown LR schedule {kind!r}")
    return min_ratio + (1.0 - min_ratio) * decay


def ramp(k: int, steps: int) -> float:
    """Linear warm-up weight ``s(k) = min(1, k / steps)`` from 0 at step 0; 1 when ``steps == 0``."""
    return 1.0 if steps <= 0 else min(1.0, k / steps)


class RankBatchSampler(torch.utils.data.Sampler):
    """The dataset indices one data-parallel rank reads, micro-batch by micro-batch, from ``start_step``.

    Epoch ``e`` uses the permutation ``randperm(n, seed + e)``. Optimizer step ``k`` consumes the
    slice ``[j * G, (j + 1) * G)`` of it, ``j = k mod steps_per_epoch`` and
    ``G = micro * accum * world``; inside it, micro-step ``m`` of rank ``r`` takes the ``micro``
    indices at ``(m * world + r) * micro``. So the global batch of a step is the same set of
    records whatever the split into processes and micro-steps, and the data position after ``k``
    steps is ``k`` itself. The tail of each epoch shorter than ``G`` is dropped (every rank must run
    the same number of steps).
    """

    def __init__(self, n: int, *, micro: int, accum: int, world: int, rank: int, seed: int, start_step: int,
                 total_steps: int):
        self.n, self.micro, self.accum, self.world, self.rank = n, micro, accum, world, rank
        self.seed, self.start_step, self.total_steps = seed, start_step, total_steps
        self.global_batch = micro * accum * world
        self.steps_per_epoch = n // self.global_batch

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step) * self.accum

    def __iter__(self):
        perm, perm_epoch = None, -1
        for k in range(self.start_step, self.total_steps):
            epoch, j = divmod(k, self.steps_per_epoch)
            if epoch != perm_epoch:
                perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
                perm_epoch = epoch
            base = j * self.global_batch
            for m in range(self.accum):
                off = base + (m * self.world + self.rank) * self.micro
                yield perm[off : off + self.micro]
