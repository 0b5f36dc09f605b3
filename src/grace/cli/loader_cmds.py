"""``grace init-tiny``, ``grace generate`` and ``grace chat``: thin wrappers over grace.load / VLM.

``generate`` prints the answer, then one line of figures: time to first token, decode tokens/s,
the weight footprint and the kernel backend.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from grace.cli.main import app
from grace.errors import GraceError


def _open_image(path: Path):
    from grace.infer.generate import load_image

    return load_image(path)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _stats_line(vlm, gen) -> str:
    fp = vlm.footprint()
    return (f"[ttft {gen.ttft_s * 1000:.0f} ms | {gen.tokens_per_s:.1f} tok/s | {gen.n_new_tokens} tokens | "
            f"weights {_mb(fp['total'])} (lm {_mb(fp['language_model'])}, vision {_mb(fp['vision'])}, "
            f"other {_mb(fp['other'])}) | kernel {vlm.kernel_name}]")


@app.command("init-tiny")
def init_tiny(
    family: str = typer.Option(..., "--family", help="llava | qwen3vl"),
    out: Path = typer.Option(..., "--out", help="output directory"),
    layout: str = typer.Option("hf", "--layout", help="original (LLaVA only) | hf"),
    size: str = typer.Option("student", "--size", help="student | teacher"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a tiny random model of the real architecture in the real on-disk layout."""
    from grace.models.tiny import write_tiny

    p = write_tiny(family, out, layout=layout, size=size, seed=seed)
    typer.echo(f"wrote tiny {family} ({size}, seed {seed}) in the {layout} layout to {p}")


def _load(model: Path, vision_tower, device, kernel, dtype):
    import grace

    return grace.load(model, vision_tower=vision_tower, device=device, kernel=kernel, dtype=dtype)


@app.command("generate")
def generate_cmd(
    model: Path = typer.Option(..., "--model", help="checkpoint directory"),
    query: str = typer.Option(..., "--query", help="the question (without <image>)"),
    image: Path | None = typer.Option(None, "--image", help="image file"),
    text_only: bool = typer.Option(False, "--text-only", help="no image"),
    vision_tower: Path | None = typer.Option(None, "--vision-tower", help="CLIP directory (LLaVA original layout)"),
    conv_mode: str | None = typer.Option(None, "--conv-mode", help="vicuna_v1 | llava_v1 (LLaVA)"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
    kernel: str | None = typer.Option(None, "--kernel", help="packed matmul backend (default: automatic)"),
    dtype: str | None = typer.Option(None, "--dtype", help="float16 | bfloat16 | float32 (default: checkpoint's)"),
) -> None:
    """Answer one question about an image (or text only) and print timing and footprint."""
    from grace.infer.generate import generate

    if (image is None) == (not text_only):
        raise GraceError("give exactly one of --image FILE or --text-only")
    img = _open_image(image) if image is not None else None
    vlm = _load(model, vision_tower, device, kernel, dtype)
    gen = generate(vlm, img, query, max_new_tokens=max_new_tokens, temperature=temperature, conv_mode=conv_mode)
    typer.echo(gen.text)
    typer.echo(_stats_line(vlm, gen))


@app.command("chat")
def chat_cmd(
    model: Path = typer.Option(..., "--model", help="checkpoint directory"),
    image: Path | None = typer.Option(None, "--image", help="image file"),
    text_only: bool = typer.Option(False, "--text-only", help="no image"),
    vision_tower: Path | None = typer.Option(None, "--vision-tower"),
    conv_mode: str | None = typer.Option(None, "--conv-mode"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature"),
    device: str = typer.Option("cpu", "--device"),
    kernel: str | None = typer.Option(None, "--kernel"),
    dtype: str | None = typer.Option(None, "--dtype"),
) -> None:
    """Several turns about one image: one question per stdin line; ends on EOF or 'exit'."""
    if (image is None) == (not text_only):
        raise GraceError("give exactly one of --image FILE or --text-only")
    img = _open_image(image) if image is not None else None
    vlm = _load(model, vision_tower, device, kernel, dtype)
    session = vlm.chat(img, conv_mode=conv_mode, max_new_tokens=max_new_tokens, temperature=temperature)
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            typer.echo("> ", nl=False)
        line = sys.stdin.readline()
        if not line:
            break
        q = line.strip()
        if q == "exit":
            break
        if not q:
            continue
        typer.echo(session.ask(q))
        typer.echo(_stats_line(vlm, session.last))
