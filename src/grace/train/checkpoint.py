"""Training checkpoints: written atomically, found by step, restored exactly.

Layout of ``RUN_DIR/checkpoints/step-00000100/``:

* what ``accelerate`` writes with ``save_state``: ``model.safetensors`` (student, log-scales
  included), ``optimizer.bin``, ``random_states_<rank>.pkl``. Going through accelerate is what
  lets DeepSpeed / FSDP write their sharded states with no change here; accelerate reads these
  ``.bin`` / ``.pkl`` files back with ``torch.load(weights_only=True)`` (numpy's RNG arrays
  allowed), so no code is unpickled.
* ``trainer_state.json``: the step, the data-order position, the IB controller, the LR
  scheduler's counters, the bad-record tally and the config that produced it.

Atomicity: everything goes to ``.tmp-step-...`` first and the directory is renamed into place
only when complete, so a run killed while saving leaves either the previous checkpoint or the
new one, never a half-written "latest". Only directories named ``step-<digits>`` that hold a
``trainer_state.json`` count as checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

__all__ = ["CHECKPOINT_DIR", "STATE_FILE", "checkpoint_name", "latest_checkpoint", "list_checkpoints",
           "read_state", "write_state", "finalize", "prune"]

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"step-(\d+)")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first: ``[(step, path)]``."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.fullmatch(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def tmp_dir_for(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f".tmp-{checkpoint_name(step)}"


def write_state(directory: Path, state: dict) -> None:
    path = directory / STATE_FILE
    part = path.with_suffix(".part")
    part.write_text(json.dumps(state, indent=2))
    os.replace(part, path)


def read_state(checkpoint: str | Path) -> dict:
    from grace.errors import GraceError

    p = Path(checkpoint) / STATE_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GraceError(f"{p}: unreadable trainer state ({e})") from None


def finalize(tmp: Path, run_dir: str | Path, step: int) -> Path:
    """Rename a completed temporary checkpoint into place (replacing a stale one of the same step)."""
    final = Path(run_dir) / CHECKPOINT_DIR / checkpoint_name(step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def prune(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep == 0`` keeps every one)."""
    if keep <= 0:
        return
    for _, p in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
