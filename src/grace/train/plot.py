"""Loss and beta curves of a run, drawn from its ``log.jsonl`` (one JSON object per optimizer step).

    png = plot_run("runs/grace_w4")          # -> runs/grace_w4/curves.png

Uses matplotlib's Agg backend (no display needed). Metrics a mode does not produce (GDKD in
SFT, RCKA in KD) are simply absent from the plot.
"""

from __future__ import annotations

import json
from pathlib import Path

from grace.errors import GraceError

__all__ = ["read_log", "plot_run"]


def read_log(run_dir: str | Path) -> list[dict]:
    """The step records of a run (lines that are not JSON objects are skipped)."""
    p = Path(run_dir) / "log.jsonl"
    if not p.is_file():
        raise GraceError(f"{p}: no training log (is {Path(run_dir)} a run directory?)")
    out = []
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            out.append(rec)
    if not out:
        raise GraceError(f"{p}: the log holds no step yet")
    return out


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw losses (ce, gdkd, rcka), beta and the learning rate against the step; return the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_log(run_dir)
    steps = [r["step"] for r in recs]

    def series(key):
        pts = [(s, r[key]) for s, r in zip(steps, recs, strict=True) if r.get(key) is not None]
        return ([p[0] for p in pts], [p[1] for p in pts]) if pts else None

    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for key, label in (("ce", "CE"), ("gdkd", "GDKD"), ("rcka", "RCKA (1 - CKA)")):
        s = series(key)
        if s:
            axes[0].plot(*s, label=label)
    axes[0].set_ylabel("loss")
    axes[0].legend()
    axes[0].set_title(f"{Path(run_dir).name}")
    for key, label in (("beta", "beta (IB)"), ("gate", "gate mean")):
        s = series(key)
        if s:
            axes[1].plot(*s, label=label)
    axes[1].set_ylabel("beta / gate")
    if axes[1].lines:
        axes[1].legend()
    s = series("lr")
    if s:
        axes[2].plot(*s, color="tab:gray")
    axes[2].set_ylabel("learning rate")
    axes[2].set_xlabel("optimizer step")
    fig.tight_layout()
    path = Path(out) if out is not None else Path(run_dir) / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
