"""GQA testdev-balanced: LLaVA's ``convert_gqa_for_eval`` post-processing + GQA ``eval.py`` accuracy.

Invariant: the prediction is ``text.rstrip('.').lower()`` and nothing else (no article or
punctuation stripping: "The cat." scores 0 against "cat"); only questions with ``isBalanced``
count; "open" questions are those whose structural type is "query", every other one is "binary".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from grace.errors import GraceError
from grace.eval.base import (
    SHORT_SUFFIX,
    Benchmark,
    Item,
    as_key,
    find_llava_question_files,
    hf_image,
    llava_image,
    load_llava_questions,
    pct,
    result,
    with_suffix,
)
from grace.eval.readers import DataFiles, ImageRef, read_json, read_rows, require, where


def gqa_normalize(text: str) -> str:
    """LLaVA's GQA post-processing. ``gqa_normalize("Yes.") == "yes"``"""
    return text.rstrip(".").lower()


def gqa_correct(prediction: str, answer: str) -> bool:
    """Exact match of the post-processed prediction with the GT answer string."""
    return gqa_normalize(prediction) == answer


def gqa_metrics(rows: Sequence[tuple[bool, str, str]]) -> dict:
    """Accuracy overall, binary/open, and per structural and semantic type from
    (correct, structural type, semantic type)."""
    m = {"accuracy": pct(sum(c for c, _, _ in rows), len(rows))}
    split: dict[str, list[bool]] = defaultdict(list)
    struct: dict[str, list[bool]] = defaultdict(list)
    sem: dict[str, list[bool]] = defaultdict(list)
    for c, st, se in rows:
        split["open" if st == "query" else "binary"].append(c)
        if st:
            struct[st].append(c)
        if se:
            sem[se].append(c)
    for name in ("binary", "open"):
        if split[name]:
            m[name] = pct(sum(split[name]), len(split[name]))
    for k in sorted(struct):
        m[f"structural/{k}"] = pct(sum(struct[k]), len(struct[k]))
    for k in sorted(sem):
        m[f"semantic/{k}"] = pct(sum(sem[k]), len(sem[k]))
    return m


def _target(q: dict | None) -> dict | None:
    if q is None or q.get("answer") is None:
        return None
    types = q.get("types") or {}
    return {
        "answer": str(q["answer"]),
        "balanced": bool(q.get("isBalanced", True)),
        "structural": str(types.get("structural") or ""),
        "semantic": str(types.get("semantic") or ""),
    }


class GQA(Benchmark):
    name = "gqa"
    title = "GQA (testdev-balanced)"
    max_new_tokens = 128

    def load(self, data: DataFiles) -> list[Item]:
        parquet = data.match("*.parquet")
        if parquet:
            return self._load_hf(parquet)
        gt_files = data.match("*questions*.json")
        llava = find_llava_question_files(data, "gqa")
        if not gt_files and not llava:
            raise GraceError(
                "gqa: --data needs testdev_balanced_questions.json (and optionally LLaVA's "
                "llava_gqa_testdev_balanced.jsonl) or the lmms-lab/GQA parquet files"
            )
        gt: dict[str, dict] = {}
        for f in gt_files:
            doc = read_json(f)
            if not isinstance(doc, dict):
                raise GraceError(f"{f}: expected a GQA questions file (an object keyed by question id)")
            for qid, q in doc.items():
                if not isinstance(q, dict):
                    raise GraceError(f"{f}: entry {qid!r} is not an object")
                gt[as_key(qid)] = q
        items = []
        if llava:
            for r in load_llava_questions(llava[0]):
                k = as_key(r["question_id"])
                items.append(
                    Item(k, r["question_id"], with_suffix(r["text"], SHORT_SUFFIX), llava_image(r), _target(gt.get(k)))
                )
            return items
        for k, q in gt.items():
            require(q, ("question", "imageId"), f"{gt_files[0]}: question {k}")
            items.append(Item(k, k, q["question"] + SHORT_SUFFIX, ImageRef(name=f"{q['imageId']}.jpg"), _target(q)))
        return items

    def _load_hf(self, files: list[Path]) -> list[Item]:
        questions = []
        images: dict[str, object] = {}
        for f in files:
            for r in read_rows(f):
                if "question" in r:
                    require(r, ("id", "imageId", "question"), where(f, r))
                    questions.append(r)
                elif "image" in r and "id" in r:
                    images[str(r["id"])] = r["image"]
        items = []
        for r in questions:
            img = hf_image(images.get(str(r["imageId"]))) or ImageRef(name=f"{r['imageId']}.jpg")
            k = as_key(r["id"])
            items.append(Item(k, k, r["question"] + SHORT_SUFFIX, img, _target(r)))
        return items

    def score(self, items: Sequence[Item], answers: dict[str, dict]) -> dict:
        rows = []
        for it in items:
            t = it.target
            if t is None or not t["balanced"]:
                continue
            rec = answers.get(it.key)
            rows.append((bool(rec) and gqa_correct(rec["text"], t["answer"]), t["structural"], t["semantic"]))
        m = gqa_metrics(rows)
        return result(self.name, "accuracy", m["accuracy"], m, counts={"scored": len(rows)})
