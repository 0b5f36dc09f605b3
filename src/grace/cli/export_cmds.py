"""``grace export``: a thin wrapper over :func:`grace.export.export_checkpoint`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from grace.cli.main import app

console = Console()


@app.command()
def export(
    src: Path = typer.Argument(..., help="QAT or packed checkpoint directory (LLaVA or Qwen3-VL, any layout)."),
    fmt: str = typer.Option(..., "--format", help="compressed-tensors (W4, W8) or awq (W4)."),
    out: Path = typer.Option(..., "--out", help="Destination directory (must not exist)."),
    vision_tower: Path | None = typer.Option(
        None, "--vision-tower", help="CLIP directory for an original-layout LLaVA checkpoint "
        "(default: mm_vision_tower when it is a local directory)."),
    dtype: str = typer.Option("float16", "--dtype", help="float16 (scales exact) or bfloat16 (scales rounded)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Export to a standard checkpoint that plain transformers and vLLM load (codes carried over exactly)."""
    from grace.cli.formats_cmds import human_bytes
    from grace.export import export_checkpoint

    r = export_checkpoint(src, out, fmt, vision_tower=vision_tower, dtype=dtype, progress=not no_progress)
    console.print(f"exported {r.n_modules} modules W{r.bits}G{r.group_size} ({r.family}, {r.layout} layout, "
                  f"{r.source_form}) -> {r.dst} as {r.format}, {r.dtype}  ({r.seconds:.1f} s)")
    console.print(f"verification: max int-code error {r.max_code_error}; largest relative scale change "
                  f"{r.scale_max_rel_change:.3g} ({'bit-exact' if r.exact else 'scales rounded'})")
    console.print(f"ignored by the quantizer: {', '.join(r.ignore)}")
    if r.added_token_ids:
        console.print(f"vocabulary: added rows {r.added_token_ids} (image placeholder / pad), suppressed in "
                      f"generation_config.json")
    for n in r.notes:
        console.print(f"note: {n}")
    console.print(f"size: {human_bytes(r.bytes_written)}")
    if r.format == "compressed-tensors":
        console.print(f"serve: vllm serve {r.dst} --dtype {r.dtype}   |   load: "
                      f"AutoModelForImageTextToText.from_pretrained('{r.dst}') (pip install compressed-tensors)")
    else:
        console.print(f"serve: vllm serve {r.dst} --dtype float16   |   load: "
                      f"AutoModelForImageTextToText.from_pretrained('{r.dst}') (needs gptqmodel)")
