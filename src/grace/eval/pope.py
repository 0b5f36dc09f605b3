"""POPE (COCO adversarial / popular / random): LLaVA's ``eval_pope.py`` parsing and metrics.

Invariant: an output is "no" iff, within its first sentence with commas removed, one of the
space-separated tokens is exactly ``No``, ``not`` or ``no``; everything else ("NO", "Nope", "Not
sure") is "yes". Metrics are per split with yes = positive; LLaVA's headline is the mean of the
three split F1 scores. Answers are joined to labels by id (LLaVA id mod 10,000,000 = POPE id in
the split's label file), not by position as LLaVA does, so a reordered answer file scores the same.
A missing answer counts as wrong (it is given the opposite of its label).
"""

from __future__ import annotations

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
    result,
    with_suffix,
)
from grace.eval.readers import DataFiles, first_jsonl_row, read_jsonl, read_rows, require, where

SPLITS = ("adversarial", "popular", "random")
_SPLIT_OFFSET = 10_000_000


def pope_parse(text: str) -> str:
    """'yes' or 'no' by LLaVA's rule. ``pope_parse("There is no dog.") == "no"``"""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def binary_metrics(labels: Sequence[str], preds: Sequence[str]) -> dict:
    """TP/FP/TN/FN, precision, recall, F1, accuracy and yes-ratio (percent) with 'yes' positive.

    Labels other than 'no' count as 'yes' (as in LLaVA). A zero denominator gives 0.0 instead of
    LLaVA's ZeroDivisionError.
    """
    tp = fp = tn = fn = 0
    for lab, pred in zip(labels, preds, strict=True):
        pos_l = lab != "no"
        pos_p = pred == "yes"
        if pos_p and pos_l:
            tp += 1
        elif pos_p:
            fp += 1
        elif pos_l:
            fn += 1
        else:
            tn += 1
    n = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": 100.0 * (tp + tn) / n if n else 0.0,
        "precision": 100.0 * precision,
        "recall": 100.0 * recall,
        "f1": 100.0 * f1,
        "yes_ratio": 100.0 * (tp + fp) / n if n else 0.0,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "n": n,
    }


def pope_split_name(path: Path) -> str:
    """'coco_pope_random.json' -> 'random' (the part after the last '_pope_')."""
    stem = path.stem
    return stem.split("_pope_")[-1] if "_pope_" in stem else stem


class POPE(Benchmark):
    name = "pope"
    title = "POPE"
    max_new_tokens = 128

    def load(self, data: DataFiles) -> list[Item]:
        parquet = data.match("*.parquet")
        if parquet:
            return self._load_hf(parquet)
        label_files = [f for f in data.match("*pope_*.json", "*pope_*.jsonl") if "label" in first_jsonl_row(f)]
        questions = find_llava_question_files(data, "pope", exclude=label_files)
        if not label_files:
            raise GraceError(
                "pope: --data needs the POPE label files (coco_pope_{adversarial,popular,random}.json) "
                "and LLaVA's llava_pope_test.jsonl, or lmms-lab/POPE parquet files"
            )
        labels: dict[tuple[str, str], dict] = {}
        for f in label_files:
            split = pope_split_name(f)
            for r in read_jsonl(f):
                require(r, ("question_id", "label"), where(f, r))
                labels[(split, as_key(r["question_id"]))] = r
        items = []
        if questions:
            path = questions[0]
            for r in load_llava_questions(path):
                require(r, ("category",), where(path, r))
                split = str(r["category"])
                pope_id = as_key(int(r["question_id"]) % _SPLIT_OFFSET)
                lab = labels.get((split, pope_id))
                target = {"label": str(lab["label"]), "split": split} if lab else None
                items.append(
                    Item(as_key(r["question_id"]), r["question_id"], with_suffix(r["text"], SHORT_SUFFIX),
                         llava_image(r), target, {"category": split})
                )
            return items
        # Labels alone: build LLaVA's question ids (split offset + POPE id) and prompts from them.
        offsets = {"adversarial": 0, "random": _SPLIT_OFFSET, "popular": 2 * _SPLIT_OFFSET}
        for (split, pid), r in labels.items():
            qid = offsets.get(split, 0) + int(pid)
            items.append(
                Item(as_key(qid), qid, with_suffix(r.get("text", ""), SHORT_SUFFIX), llava_image(r),
                     {"label": str(r["label"]), "split": split}, {"category": split})
            )
        return items

    def _load_hf(self, files: list[Path]) -> list[Item]:
        items = []
        for f in files:
            for r in read_rows(f):
                require(r, ("question_id", "question", "category"), where(f, r))
                k = f"{r['category']}:{as_key(r['question_id'])}"
                target = {"label": str(r["answer"]).strip().lower(), "split": str(r["category"])} if r.get("answer") else None
                items.append(Item(k, k, r["question"] + SHORT_SUFFIX, hf_image(r.get("image")), target,
                                  {"category": str(r["category"])}))
        return items

    def score(self, items: Sequence[Item], answers: dict[str, dict]) -> dict:
        per: dict[str, tuple[list[str], list[str]]] = {}
        for it in items:
            if it.target is None:
                continue
            labs, preds = per.setdefault(it.target["split"], ([], []))
            lab = it.target["label"]
            rec = answers.get(it.key)
            labs.append(lab)
            preds.append(pope_parse(rec["text"]) if rec else ("yes" if lab == "no" else "no"))
        if not per:
            raise GraceError("pope: no question has a label")
        order = [s for s in SPLITS if s in per] + sorted(s for s in per if s not in SPLITS)
        metrics: dict = {}
        details = {}
        for s in order:
            bm = binary_metrics(*per[s])
            details[s] = bm
            for k in ("f1", "accuracy", "precision", "recall", "yes_ratio"):
                metrics[f"{s}/{k}"] = bm[k]
        mean_f1 = sum(details[s]["f1"] for s in order) / len(order)
        metrics = {"mean_f1": mean_f1, **metrics}
        return result(self.name, "mean F1 over splits", mean_f1, metrics, splits=details)
