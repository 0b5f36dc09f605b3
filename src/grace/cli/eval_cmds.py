"""`grace eval score | run | list`: thin wrappers over :mod:`grace.eval`.

``score`` re-scores an answer file; ``run`` loads a model lazily (``grace.load``), generates the
benchmark's answers with resume, then scores them. Both print a table and write JSON.
"""

from __future__ import annotations

from pathlib import Path

import typer

from grace.cli.main import app

eval_app = typer.Typer(help="Benchmarks: score answer files the official way, or run a model.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("score")
def score_cmd(
    bench: str = typer.Option(..., "--bench", help="benchmark name (see `grace eval list`)"),
    answers: Path = typer.Option(..., "--answers", help="answer file (LLaVA jsonl, upload xlsx, MME tool folder ...)"),
    data: list[Path] = typer.Option(None, "--data", help="benchmark files or folders (repeat); default: the answer file"),
    out: Path | None = typer.Option(None, "--out", help="write the result JSON here"),
) -> None:
    """Score an existing answer file exactly as the benchmark's official evaluator would."""
    from grace.eval import score_files
    from grace.eval.report import print_result, write_result

    res = score_files(bench, answers, data or None)
    print_result(res)
    if out is not None:
        write_result(res, out)


@eval_app.command("run")
def run_cmd(
    model: Path = typer.Option(..., "--model", help="checkpoint folder (any layout grace.load reads)"),
    bench: str = typer.Option(..., "--bench", help="benchmark name (see `grace eval list`)"),
    data: list[Path] = typer.Option(..., "--data", help="benchmark files or folders (repeat)"),
    out: Path = typer.Option(..., "--out", help="output folder: <bench>_answers.jsonl and <bench>_results.json"),
    limit: int | None = typer.Option(None, "--limit", help="only the first N questions"),
    batch_size: int = typer.Option(1, "--batch-size", help="questions per generate_batch call"),
    device: str | None = typer.Option(None, "--device", help="e.g. cuda, cuda:1, cpu (default: the loader's)"),
    dtype: str | None = typer.Option(None, "--dtype", help="e.g. float16, bfloat16 (default: the loader's)"),
    images: Path | None = typer.Option(None, "--images", help="image folder, if not beside the question file"),
) -> None:
    """Generate answers with greedy decoding (resumable), then score them."""
    import grace
    from grace.eval import run_benchmark
    from grace.eval.report import print_result

    kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    vlm = grace.load(str(model), **kwargs)
    res = run_benchmark(vlm, bench, data, out, limit=limit, batch_size=batch_size, image_dir=images)
    print_result(res)


@eval_app.command("list")
def list_cmd() -> None:
    """List the benchmarks with their generation budget."""
    from rich.console import Console
    from rich.table import Table

    from grace.eval import BENCHMARKS

    table = Table(show_header=True, header_style="bold")
    for col in ("name", "benchmark", "max_new_tokens"):
        table.add_column(col)
    for name in sorted(BENCHMARKS):
        b = BENCHMARKS[name]
        table.add_row(name, b.title, str(b.max_new_tokens))
    Console().print(table)
