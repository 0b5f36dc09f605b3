"""`grace quickstart`: a thin wrapper over :func:`grace.quickstart.run`.

    grace quickstart                      # ~10 min on 2 CPU cores: the table in runs/quickstart
    grace quickstart --fast --out /tmp/q  # ~3 min, smaller world and fewer steps
    grace quickstart --seeds 3            # mean ± std over 3 model seeds (same world)
"""

from __future__ import annotations

from pathlib import Path

import typer

from grace.cli.main import app


@app.command("quickstart")
def quickstart_cmd(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Output directory (stages cached there)."),
    seed: int = typer.Option(0, "--seed", help="World seed and first model seed."),
    seeds: int = typer.Option(1, "--seeds", help="Model seeds to average over (seed, seed+1, ...)."),
    fast: bool = typer.Option(False, "--fast", help="Smaller world and fewer steps (~3 min)."),
    workers: int = typer.Option(1, "--workers", help="Train this many seeds at once (one process each)."),
    preset: str = typer.Option("", "--preset", hidden=True, help="default | fast | test (overrides --fast)."),
) -> None:
    """Train a teacher and a student on a synthetic VQA world, quantize (RTN / QAT / GRACE), pack, evaluate."""
    from grace.quickstart import QuickConfig, run

    config = QuickConfig.preset(preset) if preset else None
    run(out, seed=seed, seeds=seeds, fast=fast, workers=workers, config=config)
