"""`grace train` and `grace plot`: thin wrappers over :func:`grace.train.train` and the run plot.

    grace train --recipe recipes/grace_w4.yaml --set max_steps=1000
    torchrun --nproc_per_node 8 $(which grace) train --recipe recipes/grace_w4.yaml     # data parallel
    accelerate launch --config_file fsdp.yaml $(which grace) train --recipe ...          # FSDP / DeepSpeed
    grace plot runs/grace_w4                                                              # curves.png
"""

from __future__ import annotations

from pathlib import Path

import typer

from grace.cli.main import app


@app.command("train")
def train_cmd(
    recipe: Path = typer.Option(..., "--recipe", help="YAML recipe (see recipes/)."),
    set_: list[str] = typer.Option([], "--set", help="Override a knob: --set lr=1e-5 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's latest checkpoint."),
) -> None:
    """Train a student (sft / qat / kd / grace) as the recipe says; launch with accelerate or torchrun for DP."""
    from grace.train import TrainConfig, train

    cfg = TrainConfig.from_yaml(recipe, set_)
    result = train(cfg, resume=resume)
    last = result.last
    parts = [f"{k}={last[k]:.4g}" for k in ("ce", "gdkd", "rcka", "beta_next") if last.get(k) is not None]
    typer.echo(f"done: {result.steps} steps in {result.output_dir} ({', '.join(parts)})")
    if result.model_dir is not None:
        typer.echo(f"model: {result.model_dir}")


@app.command("plot")
def plot_cmd(
    run_dir: Path = typer.Argument(..., help="A training run directory (holds log.jsonl)."),
    out: Path | None = typer.Option(None, "--out", help="PNG path (default RUN_DIR/curves.png)."),
) -> None:
    """Draw the loss and beta curves of a run to a PNG."""
    from grace.train.plot import plot_run

    typer.echo(str(plot_run(run_dir, out)))
