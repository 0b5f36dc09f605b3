"""VQAv2 (val2014): LLaVA's prediction post-processing, then the official ``vqaEval.py`` rule.

Invariant: test-dev is scored only by the EvalAI server, so offline numbers are on val. The flow
is the one LLaVA-1.5 used for its published numbers: the EvalAI processor on the prediction, then
the official per-question rule (normalise both sides only when the ten humans disagree; mean of
the leave-one-out min(1, matches/3)). The official tool rounds to 2 decimals; we keep full precision.
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
from grace.eval.readers import DataFiles, ImageRef, read_json_records, read_rows, require, where
from grace.eval.vqa_norm import evalai_normalize, vqa_official_accuracy


def vqav2_question_score(prediction: str, gt_answers: Sequence[str]) -> float:
    """LLaVA-compatible VQAv2 score of one question in [0, 1].

    ``vqav2_question_score("Two", ["2","2","two"] + ["3"] * 7) == 0.9``
    """
    return vqa_official_accuracy(evalai_normalize(prediction), gt_answers)


def vqav2_metrics(rows: Sequence[tuple[float, str, str]]) -> dict:
    """Accuracy overall, per answer type and per question type from (score, answer_type, question_type)."""
    by_at: dict[str, list[float]] = defaultdict(list)
    by_qt: dict[str, list[float]] = defaultdict(list)
    for s, at, qt in rows:
        by_at[at].append(s)
        by_qt[qt].append(s)
    m = {"accuracy": pct(sum(s for s, _, _ in rows), len(rows))}
    for at in sorted(by_at):
        m[f"answer_type/{at}"] = pct(sum(by_at[at]), len(by_at[at]))
    for qt in sorted(by_qt):
        m[f"question_type/{qt}"] = pct(sum(by_qt[qt]), len(by_qt[qt]))
    return m


class VQAv2(Benchmark):
    name = "vqav2"
    title = "VQAv2 (val)"
    max_new_tokens = 128

    def load(self, data: DataFiles) -> list[Item]:
        parquet = data.match("*.parquet")
        if parquet:
            return self._load_hf(parquet)
        ann_files = data.match("*annotation*.json")
        q_files = data.match("*question*.json")
        llava = find_llava_question_files(data, "vqav2")
        if not ann_files and not llava:
            raise GraceError(
                "vqav2: --data needs the official val files (v2_OpenEnded_mscoco_val2014_questions.json and "
                "v2_mscoco_val2014_annotations.json) or lmms-lab/VQAv2 parquet files"
            )
        anns: dict[str, dict] = {}
        for f in ann_files:
            _, records = read_json_records(f, "annotations", "a VQA annotation file", ("question_id", "answers"))
            for a in records:
                anns[as_key(a["question_id"])] = a
        items: list[Item] = []
        if llava:
            for r in load_llava_questions(llava[0]):
                k = as_key(r["question_id"])
                a = anns.get(k)
                items.append(self._item(k, r["question_id"], with_suffix(r["text"], SHORT_SUFFIX), llava_image(r), a))
            return items
        if not q_files:
            raise GraceError("vqav2: no questions file (*questions*.json) among the --data files")
        for f in q_files:
            doc, records = read_json_records(f, "questions", "a VQA questions file",
                                             ("question_id", "question", "image_id"))
            subtype = doc.get("data_subtype", "val2014")
            roots = [r for d in data.dirs for r in (d / subtype, d / "images" / subtype)] + data.image_roots()
            for q in records:
                k = as_key(q["question_id"])
                img = ImageRef(name=f"COCO_{subtype}_{int(q['image_id']):012d}.jpg", roots=roots)
                items.append(self._item(k, q["question_id"], q["question"] + SHORT_SUFFIX, img, anns.get(k)))
        return items

    def _load_hf(self, files: list[Path]) -> list[Item]:
        items = []
        for f in files:
            for r in read_rows(f):
                require(r, ("question_id", "question"), where(f, r))
                answers = r.get("answers")
                ann = None
                if answers is not None:
                    ann = {
                        "answers": answers,
                        "answer_type": r.get("answer_type", ""),
                        "question_type": r.get("question_type", ""),
                    }
                k = as_key(r["question_id"])
                items.append(self._item(k, r["question_id"], r["question"] + SHORT_SUFFIX, hf_image(r.get("image")), ann))
        return items

    @staticmethod
    def _item(key, qid, prompt, image, ann) -> Item:
        target = None
        if ann is not None:
            gts = [a["answer"] if isinstance(a, dict) else str(a) for a in ann["answers"]]
            target = {
                "answers": gts,
                "answer_type": ann.get("answer_type", ""),
                "question_type": ann.get("question_type", ""),
            }
        return Item(key=key, qid=qid, prompt=prompt, image=image, target=target)

    def score(self, items: Sequence[Item], answers: dict[str, dict]) -> dict:
        rows = []
        for it in items:
            if it.target is None:
                continue
            rec = answers.get(it.key)
            s = vqav2_question_score(rec["text"], it.target["answers"]) if rec else 0.0
            rows.append((s, it.target["answer_type"], it.target["question_type"]))
        m = vqav2_metrics(rows)
        return result(self.name, "accuracy", m["accuracy"], m, counts={"scored": len(rows)})
