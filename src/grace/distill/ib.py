"""The Information-Bottleneck controller: projected dual ascent on the distillation weight beta.

    beta <- clip(beta + eta * (EMA(L_GDKD) - tau), beta_min, beta_max)        (GRACE.md §5)

Read ``tau`` as a budget on the distillation loss: while the smoothed GDKD stays above it the
student is not yet close enough to the teacher, so beta (the dual variable) rises; below it,
beta relaxes towards ``beta_min`` and cross-entropy dominates. The projection onto
``[beta_min, beta_max]`` keeps the objective bounded.

Invariants: one :meth:`IBController.update` per *optimizer* step, fed with a value every
data-parallel rank agrees on (the training loop averages GDKD over micro-steps and ranks), so
every rank holds the same beta. The EMA starts at the first observed value (no bias towards 0
in the early steps). A non-finite value is ignored (beta and EMA unchanged) so one bad batch
cannot poison the state. The state is a handful of floats: :meth:`state_dict` is JSON-safe.
"""

from __future__ import annotations

import math

__all__ = ["IBController"]


class IBController:
    """``ctl = IBController(tau=3.0, eta=0.003); beta = ctl.update(gdkd_value)`` once per optimizer step."""

    def __init__(self, tau: float = 3.0, eta: float = 0.003, beta_init: float = 0.5, beta_min: float = 0.1,
                 beta_max: float = 1.0, ema_decay: float = 0.99):
        if not beta_min <= beta_max:
            raise ValueError(f"IB controller: beta_min ({beta_min}) must not exceed beta_max ({beta_max})")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"IB controller: ema_decay must be in [0, 1); got {ema_decay}")
        if eta < 0:
            raise ValueError(f"IB controller: eta must be >= 0; got {eta}")
        self.tau, self.eta, self.ema_decay = float(tau), float(eta), float(ema_decay)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.beta = min(max(float(beta_init), self.beta_min), self.beta_max)
        self.ema: float | None = None
        self.steps = 0  # updates applied
        self.skipped = 0  # non-finite values ignored

    def update(self, value: float) -> float:
        """Fold one optimizer step's GDKD value into the EMA and take one projected ascent step."""
        value = float(value)
        if not math.isfinite(value):
            self.skipped += 1
            return self.beta
        self.ema = value if self.ema is None else self.ema_decay * self.ema + (1.0 - self.ema_decay) * value
        self.beta = min(max(self.beta + self.eta * (self.ema - self.tau), self.beta_min), self.beta_max)
        self.steps += 1
        return self.beta

    def state_dict(self) -> dict:
        return {"beta": self.beta, "ema": self.ema, "steps": self.steps, "skipped": self.skipped,
                "tau": self.tau, "eta": self.eta, "beta_min": self.beta_min, "beta_max": self.beta_max,
                "ema_decay": self.ema_decay}

    def load_state_dict(self, state: dict) -> None:
        """Restore beta, EMA and counters (the hyper-parameters stay those given at construction)."""
        self.beta = float(state["beta"])
        self.ema = None if state.get("ema") is None else float(state["ema"])
        self.steps = int(state.get("steps", 0))
        self.skipped = int(state.get("skipped", 0))

    def __repr__(self) -> str:
        return (f"IBController(beta={self.beta:.4f}, ema={self.ema}, tau={self.tau}, eta={self.eta}, "
                f"range=[{self.beta_min}, {self.beta_max}])")
