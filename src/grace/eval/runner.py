"""Run a VLM over a benchmark: greedy generation, answers appended as they come, then scoring.

Invariant: the answer file (``<out>/<bench>_answers.jsonl``, LLaVA's answer layout) is the only
state. Every finished answer is flushed to it at once, so an interrupted run loses at most the
batch in flight, and a rerun skips every question already answered (after checking that the saved
prompt is the prompt it would send now). The score is computed from that file with the same code
``grace eval score`` uses, so both print the same number. A question whose image is missing or
unreadable is not generated; it is counted, reported, and scored as unanswered.

The model is any object with ``generate(image, query, *, max_new_tokens, temperature)`` and
optionally ``generate_batch(images, queries, *, max_new_tokens)`` (see :func:`grace.load`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from grace.errors import GraceError
from grace.eval.base import Benchmark, Item
from grace.eval.readers import MissingImage, read_jsonl
from grace.eval.registry import get_benchmark

_MAX_LISTED_MISSING = 20


def _repair_tail(path: Path) -> bool:
    """Drop a half-written last line (a crash mid-write); True if something was dropped."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    raw = path.read_bytes()
    if raw.endswith(b"\n"):
        return False
    cut = raw.rfind(b"\n") + 1
    path.write_bytes(raw[:cut])
    return True


def _done_answers(path: Path, bench: Benchmark, items: Sequence[Item]) -> dict[str, dict]:
    """Answers already in ``path`` for ``items`` (key -> record), validated against the prompts."""
    if not path.exists():
        return {}
    by_key = {it.key: it for it in items}
    done: dict[str, dict] = {}
    for rec in read_jsonl(path):
        if "question_id" not in rec or "text" not in rec:
            raise GraceError(f"{path}:{rec['__line__']}: answer lacks question_id/text")
        try:
            key = bench.answer_key(rec)
        except (KeyError, GraceError):
            continue
        it = by_key.get(key)
        if it is None:
            continue  # an answer to a question outside this run (e.g. beyond --limit): keep it, skip it
        if rec.get("prompt") is not None and rec["prompt"] != bench.saved_prompt(it):
            raise GraceError(
                f"{path}:{rec['__line__']}: the saved prompt of question {it.qid!r} differs from the prompt "
                "built from --data now; use another --out folder (or delete the file) to start over"
            )
        done[key] = rec
    return done


def _generate(vlm: Any, images: list, queries: list[str], max_new_tokens: int) -> list[str]:
    if len(queries) > 1 and hasattr(vlm, "generate_batch"):
        outs = list(vlm.generate_batch(images, queries, max_new_tokens=max_new_tokens))
        if len(outs) != len(queries):
            raise GraceError(f"generate_batch returned {len(outs)} outputs for {len(queries)} queries")
        return outs
    return [vlm.generate(im, q, max_new_tokens=max_new_tokens, temperature=0.0) for im, q in zip(images, queries, strict=True)]


def _chunks(seq: Sequence[Item], n: int) -> Iterable[Sequence[Item]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[missing]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def run_benchmark(
    vlm: Any,
    bench: str | Benchmark,
    data: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    limit: int | None = None,
    batch_size: int = 1,
    *,
    image_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Generate answers for ``bench`` (resuming), score them, write ``<out_dir>/<bench>_results.json``.

    ``res = run_benchmark(grace.load("ckpt/"), "pope", "data/pope", "runs/pope", batch_size=8)``
    """
    b = get_benchmark(bench) if isinstance(bench, str) else bench
    if batch_size < 1:
        raise GraceError(f"batch size must be at least 1, got {batch_size}")
    paths = [data] if isinstance(data, str | Path) else list(data)
    items, _ = b.load_paths(paths)
    if limit is not None:
        if limit < 1:
            raise GraceError(f"--limit must be at least 1, got {limit}")
        items = items[:limit]
    empty = [it for it in items if not it.prompt]
    if empty:
        raise GraceError(f"{b.name}: the data files give no question text for {empty[0].qid!r} (and "
                         f"{len(empty) - 1} more); pass the benchmark's question files")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    answers_path = out / f"{b.name}_answers.jsonl"
    repaired = _repair_tail(answers_path)
    done = _done_answers(answers_path, b, items)
    todo = [it for it in items if it.key not in done]
    extra_roots = [Path(image_dir)] if image_dir else []
    model_id = str(getattr(vlm, "name", None) or getattr(vlm, "model_id", None) or type(vlm).__name__)

    missing: list[str] = []
    generated = 0
    t0 = time.perf_counter()
    with answers_path.open("a", encoding="utf-8") as fh, _progress(progress) as bar:
        task = bar.add_task(b.name, total=len(items), completed=len(done), rate="", missing="")
        for batch in _chunks(todo, batch_size):
            ready: list[Item] = []
            images: list = []
            for it in batch:
                if it.image is None:
                    if b.requires_image:
                        missing.append(f"no image given for question {it.qid!r}")
                        continue
                    images.append(None)
                    ready.append(it)
                    continue
                try:
                    images.append(it.image.open(extra_roots, mode=b.image_mode))
                    ready.append(it)
                except MissingImage as e:
                    missing.append(str(e))
            # Text-only and image questions go to the model in separate calls (LLaVA sends no image at all).
            outputs: dict[str, str] = {}
            for want_image in (True, False):
                sel = [(it, im) for it, im in zip(ready, images, strict=True) if (im is not None) == want_image]
                if sel:
                    outs = _generate(vlm, [im for _, im in sel], [it.prompt for it, _ in sel], b.max_new_tokens)
                    outputs.update({it.key: o for (it, _), o in zip(sel, outs, strict=True)})
            for it in ready:
                rec = {
                    "question_id": it.qid,
                    "prompt": b.saved_prompt(it),
                    "text": str(outputs[it.key]).strip(),
                    "model_id": model_id,
                    "metadata": {},
                }
                if it.meta.get("category") is not None:
                    rec["category"] = it.meta["category"]
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                generated += 1
            fh.flush()
            elapsed = time.perf_counter() - t0
            bar.update(
                task,
                advance=len(batch),
                rate=f"{generated / elapsed:.2f} q/s" if elapsed > 0 else "",
                missing=f"[red]{len(missing)} missing image(s)" if missing else "",
            )
    seconds = time.perf_counter() - t0

    records = b.read_answers(answers_path)
    if any(it.target is not None for it in items):
        res = b.score_answers(items, records, str(answers_path))
    else:
        res = {"benchmark": b.name, "headline": None, "metrics": {},
               "note": "the data files hold no ground truth; answers were generated but not scored"}
    res["run"] = {
        "answers_file": str(answers_path),
        "questions": len(items),
        "resumed": len(done),
        "generated": generated,
        "dropped_partial_line": repaired,
        "missing_images": len(missing),
        "missing_image_examples": missing[:_MAX_LISTED_MISSING],
        "seconds": round(seconds, 3),
        "questions_per_s": round(generated / seconds, 3) if seconds > 0 and generated else None,
        "max_new_tokens": b.max_new_tokens,
        "batch_size": batch_size,
        "limit": limit,
        "model_id": model_id,
        "family": getattr(vlm, "family", None),
    }
    (out / f"{b.name}_results.json").write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    return res


def score_files(bench: str | Benchmark, answers: str | Path, data: Sequence[str | Path] | None = None) -> dict:
    """Score an existing answer file. ``res = score_files("pope", "answers.jsonl", ["pope/"])``"""
    b = get_benchmark(bench) if isinstance(bench, str) else bench
    return b.score_files(answers, data)
