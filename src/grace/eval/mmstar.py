"""MMStar: the official ``mmstar.py`` four-rule letter check; final score is micro over questions.

Invariant: after lower-casing, stripping and turning newlines into spaces, an output is right iff
its first character is the answer letter, or it starts with "(" and the second character is, or
it starts with "option " / "the answer is " and the next character is. "The correct answer is B"
is wrong and "Answer: B" counts as "a" (its first character) -- upstream's behaviour, kept.
Per category scores are correct / questions in that category; the final score is total correct /
total questions (the official micro average, not lmms-eval's mean of l2 categories).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from grace.errors import GraceError
from grace.eval.base import MC_SUFFIX, Benchmark, Item, as_key, hf_image, pct, result
from grace.eval.readers import DataFiles, image_from_base64, is_missing, read_rows, require, where

LETTERS = ("A", "B", "C", "D")


def mmstar_correct(prediction: str, answer: str) -> bool:
    """The official rule. ``mmstar_correct("The answer is D.", "D") is True``"""
    a = str(answer).lower().strip().replace("\n", " ")
    p = str(prediction).lower().strip().replace("\n", " ")
    if not p:
        return False
    if a == p[0]:
        return True
    if p[0] == "(" and len(p) > 1 and a == p[1]:
        return True
    if p[:7] == "option " and len(p) > 7 and a == p[7]:
        return True
    return p[:14] == "the answer is " and len(p) > 14 and a == p[14]


def mmstar_prompt(row: dict) -> str:
    """Question (options are embedded in the HF question) or question + 'X. option' lines, + MC suffix."""
    q = str(row["question"])
    if not is_missing(row.get("hint")):
        q = str(row["hint"]) + "\n" + q
    for L in LETTERS:
        if L in row and not is_missing(row.get(L)):
            q += f"\n{L}. {row[L]}"
    return q + MC_SUFFIX


class MMStar(Benchmark):
    name = "mmstar"
    title = "MMStar"
    max_new_tokens = 128

    def load(self, data: DataFiles) -> list[Item]:
        files = data.match("*.parquet") or data.match("*.tsv")
        if not files:
            raise GraceError("mmstar: --data needs the Lin-Chen/MMStar parquet file(s) or VLMEvalKit's MMStar.tsv")
        items = []
        for f in files:
            for r in read_rows(f):
                require(r, ("index", "question", "answer"), where(f, r))
                img = r.get("image")
                img = image_from_base64(img, where(f, r)) if isinstance(img, str) else hf_image(img)
                l2 = next((r[c] for c in ("l2_category", "l2-category", "L2-category") if r.get(c)), None)
                target = {"answer": str(r["answer"]), "category": r.get("category"), "l2": l2}
                k = as_key(r["index"])
                items.append(Item(k, r["index"], mmstar_prompt(r), img, target))
        return items

    def score(self, items: Sequence[Item], answers: dict[str, dict]) -> dict:
        cats: dict[str, list[bool]] = defaultdict(list)
        l2s: dict[str, list[bool]] = defaultdict(list)
        allv = []
        for it in items:
            t = it.target
            if t is None:
                continue
            rec = answers.get(it.key)
            ok = bool(rec) and mmstar_correct(rec["text"], t["answer"])
            allv.append(ok)
            if t["category"]:
                cats[str(t["category"])].append(ok)
            if t["l2"]:
                l2s[str(t["l2"])].append(ok)
        acc = pct(sum(allv), len(allv))
        metrics = {"accuracy": acc}
        for c in sorted(cats):
            metrics[f"category/{c}"] = pct(sum(cats[c]), len(cats[c]))
        for c in sorted(l2s):
            metrics[f"l2_category/{c}"] = pct(sum(l2s[c]), len(l2s[c]))
        return result(self.name, "accuracy", acc, metrics, counts={"correct": sum(allv), "scored": len(allv)})
