"""``grace pack`` and ``grace inspect``: thin wrappers over grace.formats."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from grace.cli.main import app

console = Console()


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


@app.command()
def pack(
    src: Path = typer.Argument(..., help="QAT checkpoint directory (dense grid weights + sidecar)."),
    out: Path = typer.Option(..., "--out", help="Destination directory (must not exist)."),
    bits: int | None = typer.Option(None, help="4 or 8; default: grace_quant.json, else inferred from the codes."),
    dtype: str | None = typer.Option(None, help="Cast non-quantized float tensors (e.g. float16, as published)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the unpack-and-compare verification."),
) -> None:
    """Pack a QAT checkpoint into real 4-bit (AWQ GEMM) or 8-bit tensors, verified bit-exactly."""
    import torch

    from grace.formats.pack_dir import pack_checkpoint

    td = getattr(torch, dtype) if dtype else None
    r = pack_checkpoint(src, out, bits=bits, dtype=td, verify=not no_verify)
    verdict = "skipped" if no_verify else f"max int-code error {r.max_code_error}"
    console.print(f"packed {r.n_modules} modules W{r.bits}G{r.group_size} -> {r.dst}  ({r.seconds:.1f} s)")
    if r.group_size_overrides:
        console.print(f"row-wide groups (group size does not divide in_features): {len(r.group_size_overrides)} modules")
    console.print(f"verification: {verdict}")
    console.print(f"footprint: {human_bytes(r.bytes_before)} -> {human_bytes(r.bytes_after)} ({r.ratio:.2f}x smaller)")


@app.command()
def inspect(path: Path = typer.Argument(..., help="A checkpoint directory.")) -> None:
    """Print the layout, family, form, bits, group size, quantized modules, footprint and kernel."""
    from grace.formats.inspect import inspect_checkpoint

    info = inspect_checkpoint(path)
    t = Table(show_header=False, box=None)
    for k, v in info.items():
        if k == "footprint":
            for part, n in v.items():
                t.add_row(f"footprint.{part}", human_bytes(n))
        else:
            t.add_row(k, str(v))
    console.print(t)
