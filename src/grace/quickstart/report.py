"""The quickstart's outputs: a rich table, ``results.json``, ``results.md`` and ``results.png``.

Invariant: every number shown is read from the results dict that is written to results.json
(nothing is computed only for display), so the three files and the console agree.

    write_report(results, Path("runs/quickstart"), log)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

CAT_SHORT = {"colour": "col", "shape": "shp", "count": "cnt", "position": "pos", "existence": "exi"}


def _pm(mean: float, std: float, n: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:.1f}" if n < 2 else f"{mean:.1f} ± {std:.1f}"


def _mb(b) -> str:
    return "-" if b is None else f"{b / 1e6:.2f}"


def table_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the comparison table (shared by console and markdown)."""
    n = len(results["seeds"])
    rows = results["rows"]
    cats = [c for c in CAT_SHORT if any(c in r["categories"] for r in rows)]
    kinds = [k for k in ("short", "mc", "yesno") if any(k in r["kinds"] for r in rows)]
    header = (["model", "form", "test acc %", "retention %"] + [CAT_SHORT[c] for c in cats] + kinds
              + ["size MB", "tok/s", "vs bf16"])
    out = []
    prior = results["answer_prior"]
    out.append(["answer prior (blind)", "-", f"{100 * prior['overall']:.1f}", "-"]
               + [f"{100 * prior[c]:.1f}" if c in prior else "-" for c in cats] + ["-"] * len(kinds) + ["-", "-", "-"])
    for r in rows:
        form = {"dense": "bf16", "fake": "fake-quant", "packed": f"packed ({r['kernel']})"}[r["form"]]
        out.append([r["label"], form, _pm(r["accuracy"], r["accuracy_std"], n),
                    "-" if r["name"] in ("teacher", "student") else _pm(r["retention"], r["retention_std"], n)]
                   + [f"{r['categories'][c]:.1f}" if c in r["categories"] else "-" for c in cats]
                   + [f"{r['kinds'][k]:.1f}" if k in r["kinds"] else "-" for k in kinds]
                   + [_mb(r["footprint_bytes"]),
                      f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else "-",
                      f"{r['speedup_vs_bf16']:.2f}x" if "speedup_vs_bf16" in r else "-"])
    return header, out


def verdict(results: dict) -> list[str]:
    """Plain sentences: teacher goal, GRACE W4 retention, the lowest bit-width comparison."""
    rows = {r["name"]: r for r in results["rows"]}
    bits = sorted({r["bits"] for r in results["rows"] if r["bits"] < 16})
    low = bits[0]
    g4, g, q, rt = rows["grace_w4"], rows[f"grace_w{low}"], rows[f"qat_w{low}"], rows[f"rtn_w{low}"]
    n = len(results["seeds"])
    lines = [
        f"Teacher test accuracy {rows['teacher']['accuracy']:.1f}% (goal >= 90%); bf16 student "
        f"{rows['student']['accuracy']:.1f}%; answer prior {100 * results['answer_prior']['overall']:.1f}%.",
        f"GRACE W4G128 keeps {g4['retention']:.1f}% of the bf16 student's accuracy (goal >= 98%).",
        f"At W{low}: GRACE {g['accuracy']:.1f}% vs QAT-only {q['accuracy']:.1f}% ({g['accuracy'] - q['accuracy']:+.1f}) "
        f"vs RTN {rt['accuracy']:.1f}% ({g['accuracy'] - rt['accuracy']:+.1f}), mean over {n} seed(s).",
    ]
    if n > 1:
        wins_q = sum(a > b for a, b in zip(g["accuracy_per_seed"], q["accuracy_per_seed"], strict=True))
        wins_r = sum(a > b for a, b in zip(g["accuracy_per_seed"], rt["accuracy_per_seed"], strict=True))
        lines.append(f"GRACE beat QAT-only on {wins_q}/{n} seeds and RTN on {wins_r}/{n} seeds at W{low}.")
    return lines


def markdown(results: dict) -> str:
    header, rows = table_rows(results)
    lines = ["# grace quickstart results", "",
             f"Seeds {results['seeds']} (mean ± std over seeds where more than one); test split of the synthetic "
             f"VQA world ({results['rows'][0]['test_questions']} questions per model); wall time "
             f"{results['wall_seconds']:.0f} s.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", *("- " + v for v in verdict(results)), "",
              "Retention = accuracy / the bf16 student's accuracy (per seed, then averaged). Size = weight bytes "
              "as loaded (bf16 dense; packed INT4 + fp16 scales); fake-quant rows are not packable (W3/W2). "
              "tok/s = greedy generation of a fixed number of tokens, prefill included, measured side by side "
              "in one process.", ""]
    return "\n".join(lines)


def chart(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {r["name"]: r for r in results["rows"]}
    bits = sorted({r["bits"] for r in results["rows"] if r["bits"] < 16}, reverse=True)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    width = 0.26
    for i, (m, label, colour) in enumerate((("rtn", "RTN", "#999999"), ("qat", "QAT-only", "#4c72b0"),
                                             ("grace", "GRACE", "#dd8452"))):
        xs = [j + (i - 1) * width for j in range(len(bits))]
        ys = [rows[f"{m}_w{b}"]["accuracy"] for b in bits]
        es = [rows[f"{m}_w{b}"]["accuracy_std"] for b in bits]
        ax.bar(xs, ys, width, yerr=es, label=label, color=colour, capsize=3)
    ax.axhline(rows["student"]["accuracy"], color="black", lw=1, ls="--", label="bf16 student")
    ax.axhline(rows["teacher"]["accuracy"], color="green", lw=1, ls=":", label="bf16 teacher")
    ax.axhline(100 * results["answer_prior"]["overall"], color="red", lw=1, ls="-.", label="answer prior")
    ax.set_xticks(range(len(bits)), [f"W{b}G{rows['grace_w4']['group_size']}" for b in bits])
    ax.set_ylabel("synthvqa test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"grace quickstart: {len(results['seeds'])} seed(s)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(results: dict, out: Path, log) -> None:
    from rich.table import Table

    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "results.md").write_text(markdown(results))
    chart(results, out / "results.png")
    header, rows = table_rows(results)
    t = Table(title=f"grace quickstart (synthvqa test, seeds {results['seeds']})")
    for h in header:
        t.add_column(h, justify="left" if h in ("model", "form") else "right")
    for r in rows:
        t.add_row(*r)
    log.console.print(t)
    for v in verdict(results):
        log(v)
    log(f"wall time {results['wall_seconds']:.0f} s; wrote {out / 'results.json'}, results.md, results.png")
