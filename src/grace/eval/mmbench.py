"""MMBench-dev with circular evaluation and VLMEvalKit exact matching (no LLM judge).

Invariant: circular copies are separate rows; group id = index mod 1,000,000 and the main row is
the one whose index equals its group id. A group scores 1 only if the letter read from *every*
copy (:func:`grace.eval.mcq.can_infer`) equals that copy's answer; a missing or unreadable answer
fails its group. Categories come from the main row. The prompt is LLaVA's ``model_vqa_mmbench``:
hint + question, "X. option" lines up to the first missing option, then the MC suffix.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from grace.errors import GraceError
from grace.eval.base import MC_SUFFIX, Benchmark, Item, as_key, hf_image, pct, result
from grace.eval.mcq import can_infer
from grace.eval.readers import DataFiles, ImageRef, image_from_base64, is_missing, read_rows, require, where

LETTERS = ("A", "B", "C", "D")
_GROUP = 1_000_000


def _absent(v) -> bool:
    # VLMEvalKit's choices use pandas isna: an empty cell is absent, the text "None" is an option.
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v == "")


def _text(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def mmbench_prompt(row: dict, suffix: str = MC_SUFFIX) -> str:
    """LLaVA's MMBench prompt for one row (options stop at the first missing one)."""
    q = _text(row["question"])
    if not is_missing(row.get("hint")):
        q = _text(row["hint"]) + "\n" + q
    for L in LETTERS:
        if is_missing(row.get(L)):
            break
        q += f"\n{L}. {_text(row[L])}"
    return q + suffix


def circular_accuracy(groups: dict[str, list[tuple[str | None, str]]]) -> tuple[int, int]:
    """(groups passed, groups) where a group passes iff every (extracted, answer) pair agrees."""
    passed = sum(1 for rows in groups.values() if rows and all(p is not None and p == a for p, a in rows))
    return passed, len(groups)


class MMBench(Benchmark):
    name = "mmbench"
    title = "MMBench-dev (circular)"
    max_new_tokens = 1024
    image_mode = None  # model_vqa_mmbench decodes the base64 image without .convert('RGB')

    def load(self, data: DataFiles) -> list[Item]:
        files = data.match("*.parquet") or data.match("*.tsv") or data.match("*.xlsx")
        if not files:
            raise GraceError(
                "mmbench: --data needs the MMBench TSV (mmbench_dev_20230712.tsv), lmms-lab/MMBench "
                "parquet files, or LLaVA's upload .xlsx (with an 'answer' column)"
            )
        if len(files) > 1 and any("dev" in f.name.lower() for f in files):
            files = [f for f in files if "dev" in f.name.lower()]  # a folder holding dev and test TSVs
        rows = []
        for f in files:
            for r in read_rows(f):
                require(r, ("index", "question"), where(f, r))
                r["__file__"] = f
                rows.append(r)
        if any("split" in r for r in rows) and any(str(r.get("split")) == "dev" for r in rows):
            rows = [r for r in rows if str(r.get("split", "dev")) == "dev"]
        by_index = {as_key(r["index"]): r for r in rows}
        items = []
        for r in rows:
            idx = int(float(r["index"]))
            img = self._image(r, by_index)
            choices = {L: _text(r[L]) for L in LETTERS if L in r and not _absent(r[L])}
            target = None
            if not _absent(r.get("answer")):
                target = {
                    "answer": str(r["answer"]).strip(),
                    "choices": choices,
                    "group": str(idx % _GROUP),
                    "main": idx < _GROUP,
                    "category": None if _absent(r.get("category")) else str(r["category"]),
                    "l2": next((str(r[c]) for c in ("l2-category", "L2-category") if not _absent(r.get(c))), None),
                }
            items.append(Item(as_key(idx), idx, mmbench_prompt(r), img, target))
        return items

    @staticmethod
    def _image(r: dict, by_index: dict) -> ImageRef | None:
        cell = r.get("image")
        if isinstance(cell, ImageRef | list):
            return hf_image(cell)
        if not isinstance(cell, str) or not cell.strip():
            return None
        # VLMEvalKit TSVs store a repeated image once; other rows hold that row's index instead.
        if len(cell) <= 64 and cell.strip().isdigit() and cell.strip() in by_index:
            cell = by_index[cell.strip()].get("image")
        return image_from_base64(cell, where(r["__file__"], r))

    def score(self, items: Sequence[Item], answers: dict[str, dict]) -> dict:
        groups: dict[str, list[tuple[str | None, str]]] = defaultdict(list)
        mains: dict[str, dict] = {}
        vanilla = []
        for it in items:
            t = it.target
            if t is None:
                continue
            rec = answers.get(it.key)
            pred = can_infer(rec["text"], t["choices"]) if rec else None
            groups[t["group"]].append((pred, t["answer"]))
            if t["main"]:
                mains[t["group"]] = t
                vanilla.append(pred == t["answer"])
        passed, n = circular_accuracy(groups)
        acc = pct(passed, n)
        metrics = {"circular_accuracy": acc, "vanilla_main_rows": pct(sum(vanilla), len(vanilla))}
        for field_name, label in (("category", "category"), ("l2", "l2_category")):
            by: dict[str, dict] = defaultdict(dict)
            for g, t in mains.items():
                if t[field_name] is not None:
                    by[t[field_name]][g] = groups[g]
            for cat in sorted(by):
                p, c = circular_accuracy(by[cat])
                metrics[f"{label}/{cat}"] = pct(p, c)
        return result(self.name, "circular accuracy", acc, metrics, counts={"groups": n, "groups_passed": passed})
