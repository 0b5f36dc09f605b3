"""The quickstart's knobs: one frozen dataclass per run, presets ``default`` / ``fast`` / ``test``.

Invariant: every number that decides a stage's output lives here, and each stage's cache key is
the hash of exactly the fields it reads (plus its inputs' keys), so changing a knob re-runs only
the stages downstream of it. Presets were chosen on the *validation* split (never test).

    cfg = QuickConfig.preset("fast").replace(quant_steps=40)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from grace.errors import GraceError

# A world sized for a 2-layer CLIP at 32 px (patch 8 -> 16 image tokens) on a CPU:
# 32 px with a 2x2 grid (objects as large as at 48 px / 3x3, see docs/synthetic.md), four colours,
# three shapes, 1-2 objects (with 1-3 objects a 900-step student stayed within 6-8 points of the
# answer prior on val). All five question categories and all three kinds are kept.
WORLD_DEFAULTS: dict[str, Any] = dict(
    image_size=32, grid=2, min_objects=1, max_objects=2,
    shapes=["circle", "square", "triangle"], colors=["red", "green", "blue", "yellow"],
    n_train_images=2500, n_val_images=100, n_test_images=150,
)


@dataclass(frozen=True)
class QuickConfig:
    """Sizes, steps and learning rates of one quickstart run (see docs/quickstart.md)."""

    world: dict = field(default_factory=lambda: dict(WORLD_DEFAULTS))
    batch: int = 32
    teacher_steps: int = 600
    teacher_lr: float = 3e-4  # at 1e-3 the fast preset stayed at the answer prior (val and test)
    student_steps: int = 400
    student_lr: float = 3e-4
    quant_steps: int = 40  # the same for QAT-only and GRACE
    quant_lr: float = 1e-4
    bits: tuple[int, ...] = (4, 3, 2)
    group_size: int = 128
    eval_limit: int | None = None  # test questions per model (None: the whole test split)
    val_limit: int | None = 200
    eval_batch: int = 100
    speed_tokens: int = 24  # decode steps timed for tokens/s
    speed_repeats: int = 3
    threads: int = 1  # torch threads; 1 avoids OpenMP spin contention on a shared 2-core machine

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", tuple(int(b) for b in self.bits))
        if not self.bits or 4 not in self.bits or any(b not in (2, 3, 4, 8) for b in self.bits):
            raise GraceError(f"QuickConfig.bits must include 4 (the headline) and be among 2/3/4/8; got {self.bits}")
        for name in ("batch", "teacher_steps", "student_steps", "quant_steps", "eval_batch", "threads"):
            if getattr(self, name) < 1:
                raise GraceError(f"QuickConfig.{name} must be >= 1; got {getattr(self, name)}")

    def replace(self, **changes: Any) -> QuickConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["bits"] = list(d["bits"])
        return d

    @classmethod
    def preset(cls, name: str) -> QuickConfig:
        """``default`` (<= 10 min on 2 cores), ``fast`` (<= 3 min), ``test`` (the suite's end-to-end run)."""
        if name == "default":
            return cls()
        if name == "fast":
            w = dict(WORLD_DEFAULTS, n_train_images=1200, n_val_images=50, n_test_images=80)
            return cls(world=w, teacher_steps=110, student_steps=70, quant_steps=15, val_limit=100)
        if name == "test":
            w = dict(WORLD_DEFAULTS, n_train_images=60, n_val_images=8, n_test_images=10)
            return cls(world=w, batch=8, teacher_steps=4, student_steps=3, quant_steps=2, val_limit=16,
                       eval_limit=24, speed_tokens=4, speed_repeats=1, eval_batch=24)
        raise GraceError(f"unknown quickstart preset {name!r}; choose default, fast or test")


def digest(*parts: Any) -> str:
    """Stable short hash of JSON-able parts (a stage's cache key)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
