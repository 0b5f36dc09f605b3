"""``synthvqa``: scoring for grace's own synthetic VQA world.

Invariant: the question file is LLaVA-style JSONL ``{question_id, image, text, category, kind}``
with ``kind`` in {"short", "yesno", "mc"}; the annotation file is JSONL ``{question_id, answer}``.
A short answer is right iff it equals the answer after the EvalAI VQA normalisation (both sides);
a yes/no answer is read with POPE's rule and also summarised with POPE's metrics; a multiple-choice
answer is right iff the option letter read from the output equals the answer letter. Reported:
overall accuracy, accuracy per kind and per category, and the yes/no precision/recall/F1/yes-ratio.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from grace.errors import GraceError
from grace.eval.base import (
    MC_SUFFIX,
    SHORT_SUFFIX,
    Benchmark,
    Item,
    as_key,
    llava_image,
    pct,
    result,
    with_suffix,
)
from grace.eval.pope import binary_metrics, pope_parse
from grace.eval.readers import DataFiles, first_jsonl_row, read_jsonl, require, where
from grace.eval.vqa_norm import evalai_normalize

KINDS = ("short", "yesno", "mc")
# A bare leading capital followed by a space is not a letter pick ("I do not know", "A red cube").
_LEAD_LETTER = re.compile(r"^\(?([A-Z])(?:[).:,]|$)")
_ANSWER_IS = re.compile(r"answer is\s*\(?([A-Z])\b")


def mc_letter(output: str) -> str | None:
    """The option letter of an output: 'B', '(B)', 'B.', 'B)', 'B:' at the start, or '... answer is B'."""
    s = output.strip()
    m = _LEAD_LETTER.match(s) or _ANSWER_IS.search(s)
    return m.group(1) if m else None


def synth_correct(kind: str, output: str, answer: str) -> bool:
    """Whether one output is right for its kind. ``synth_correct("short", "Two.", "2") is True``"""
    if kind == "short":
        return evalai_normalize(output) == evalai_normalize(answer)
    if kind == "yesno":
        return pope_parse(output) == answer.strip().lower()
    if kind == "mc":
        return mc_letter(output) == answer.strip().upper()
    raise ValueError(f"unknown kind {kind!r}")


class SynthVQA(Benchmark):
    name = "synthvqa"
    title = "synthvqa (grace synthetic VQA)"
    max_new_tokens = 128

    def load(self, data: DataFiles) -> list[Item]:
        jsonl = data.match("*.jsonl")
        questions = [f for f in jsonl if "kind" in first_jsonl_row(f) and "text" in first_jsonl_row(f)]
        annotations = [f for f in jsonl if "answer" in first_jsonl_row(f) and "text" not in first_jsonl_row(f)]
        # A file whose first line is malformed is still read (and reported) if its name says what it is.
        questions += [f for f in jsonl if f not in questions and "question" in f.name.lower() and not first_jsonl_row(f)]
        annotations += [f for f in jsonl if f not in annotations and "annotation" in f.name.lower()
                        and not first_jsonl_row(f)]
        if not questions:
            raise GraceError("synthvqa: --data needs the question JSONL (question_id, image, text, category, kind)")
        gold: dict[str, str] = {}
        for f in annotations:
            for r in read_jsonl(f):
                require(r, ("question_id", "answer"), where(f, r))
                gold[as_key(r["question_id"])] = str(r["answer"])
        items = []
        for f in questions:
            for r in read_jsonl(f):
                w = where(f, r)
                require(r, ("question_id", "text", "kind"), w)
                kind = str(r["kind"])
                if kind not in KINDS:
                    raise GraceError(f"{w}: kind {kind!r} is not one of {', '.join(KINDS)}")
                k = as_key(r["question_id"])
                suffix = MC_SUFFIX if kind == "mc" else SHORT_SUFFIX
                target = {"answer": gold[k], "kind": kind, "category": str(r.get("category", ""))} if k in gold else None
                items.append(Item(k, r["question_id"], with_suffix(str(r["text"]), suffix), llava_image(r), target,
                                  {"category": r.get("category"), "kind": kind}))
        return items

    def score(self, items: Sequence[Item], answers: dict[str, dict]) -> dict:
        by_kind: dict[str, list[bool]] = defaultdict(list)
        by_cat: dict[str, list[bool]] = defaultdict(list)
        yn_labels: list[str] = []
        yn_preds: list[str] = []
        allv = []
        for it in items:
            t = it.target
            if t is None:
                continue
            rec = answers.get(it.key)
            ok = bool(rec) and synth_correct(t["kind"], rec["text"], t["answer"])
            allv.append(ok)
            by_kind[t["kind"]].append(ok)
            by_cat[t["category"]].append(ok)
            if t["kind"] == "yesno":
                lab = t["answer"].strip().lower()
                yn_labels.append(lab)
                yn_preds.append(pope_parse(rec["text"]) if rec else ("yes" if lab == "no" else "no"))
        acc = pct(sum(allv), len(allv))
        metrics = {"accuracy": acc}
        for k in KINDS:
            if by_kind[k]:
                metrics[f"kind/{k}"] = pct(sum(by_kind[k]), len(by_kind[k]))
        for c in sorted(by_cat):
            metrics[f"category/{c}"] = pct(sum(by_cat[c]), len(by_cat[c]))
        extra = {}
        if yn_labels:
            bm = binary_metrics(yn_labels, yn_preds)
            extra["yesno"] = bm
            for k in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
                metrics[f"yesno/{k}"] = bm[k]
        return result(self.name, "accuracy", acc, metrics, **extra)
