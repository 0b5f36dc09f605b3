"""Rendering of a benchmark result for the terminal (a rich table) and for disk (JSON).

Invariant: presentation only -- the numbers shown are the ones in the result dict, printed with 3
decimals (enough to compare with the official tools, which print 2 or 3).
"""

from __future__ import annotations

import json
from pathlib import Path


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def result_table(res: dict):
    """A rich Table: the headline first, then every metric. ``console.print(result_table(res))``"""
    from rich.table import Table

    title = res.get("benchmark", "")
    head = res.get("headline")
    if head:
        title = f"{title} -- {head['metric']}: [bold]{_fmt(head['value'])}[/bold]"
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in res.get("metrics", {}).items():
        table.add_row(k, _fmt(v))
    counts = {**res.get("counts", {})}
    run = res.get("run") or {}
    for k in ("generated", "resumed", "missing_images", "questions_per_s"):
        if run.get(k) is not None:
            counts[k] = run[k]
    if counts:
        table.caption = ", ".join(f"{k}={_fmt(v)}" for k, v in counts.items())
    return table


def print_result(res: dict) -> None:
    """Print the table (and any protocol note or warning) to stdout."""
    from rich.console import Console

    console = Console()
    console.print(result_table(res))
    if res.get("protocol"):
        console.print(f"[yellow]protocol:[/yellow] {res['protocol']}")
    if res.get("note"):
        console.print(f"[yellow]note:[/yellow] {res['note']}")
    missing = res.get("counts", {}).get("missing", 0)
    if missing:
        console.print(f"[yellow]warning:[/yellow] {missing} question(s) have no answer and are scored as wrong")
    run = res.get("run") or {}
    if run.get("missing_images"):
        console.print(f"[yellow]warning:[/yellow] {run['missing_images']} image(s) missing or unreadable, e.g. "
                      + "; ".join(run.get("missing_image_examples", [])[:3]))


def write_result(res: dict, path: str | Path) -> Path:
    """Write ``res`` as indented JSON (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    return path
