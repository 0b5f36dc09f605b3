"""MME: the official ``calculation.py`` parsing and scores (acc + acc+ per subtask, summed).

Invariant: a response is lower-cased; exactly "yes"/"no" is that answer, otherwise its first four
characters decide ("yes" inside -> yes, else "no" inside -> no, else "other" = wrong). A subtask
scores 100*acc + 100*acc+ where acc+ is the share of images whose questions are all right.
Perception sums the 10 perception subtasks, cognition the 4 cognition ones. Questions are matched
by (subtask, image stem, question without LLaVA's suffix and without "Please answer yes or no."),
which is how LLaVA's ``convert_answer_to_mme.py`` finds the ground truth; images are grouped by
(subtask, image stem) instead of by line pairs, so a reordered answer file scores the same.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from grace.errors import GraceError
from grace.eval.base import (
    SHORT_SUFFIX,
    SHORT_SUFFIX_TEXT,
    Benchmark,
    Item,
    find_llava_question_files,
    hf_image,
    llava_image,
    load_llava_questions,
    result,
    with_suffix,
)
from grace.eval.readers import DataFiles, ImageRef, read_rows, require, where

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
TASKS = PERCEPTION + COGNITION
# These five keep images in images/ and QA files in questions_answers_YN/ in the official release.
_NESTED = ("artwork", "celebrity", "landmark", "posters", "scene")
_PLEASE = re.compile(r"\s*Please answer yes or no\.\s*$")


def mme_parse(response: str) -> str:
    """'yes', 'no' or 'other' by the official rule. ``mme_parse("Not really") == "no"``"""
    r = response.lower()
    if r in ("yes", "no"):
        return r
    head = r[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def mme_subtask_score(groups: Sequence[Sequence[tuple[str, str]]]) -> dict:
    """acc, acc+ and score (percent) of one subtask from image groups of (gt, parsed prediction).

    ``mme_subtask_score([[("yes","yes"),("no","no")], [("yes","yes"),("no","yes")]])["score"] == 125.0``
    """
    n_q = sum(len(g) for g in groups)
    right = sum(1 for g in groups for gt, p in g if gt == p)
    plus = sum(1 for g in groups if all(gt == p for gt, p in g))
    acc = 100.0 * right / n_q if n_q else 0.0
    acc_plus = 100.0 * plus / len(groups) if groups else 0.0
    return {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus, "questions": n_q, "images": len(groups)}


def question_core(question: str) -> str:
    """The question without LLaVA's short-answer suffix and without 'Please answer yes or no.'."""
    q = question.replace(SHORT_SUFFIX_TEXT, "").strip()
    return _PLEASE.sub("", q).strip()


def image_stem(name: str) -> str:
    """'artwork/images/14777.jpg' -> '14777' (LLaVA takes the text before the first dot)."""
    return name.replace("\\", "/").split("/")[-1].split(".")[0]


def mme_key(task: str, image: str, question: str) -> str:
    return f"{task}/{image_stem(image)}|{question_core(question)}"


def read_tool_files(paths: Sequence[Path]) -> list[dict]:
    """Rows of MME tool files ``<subtask>.txt`` (image, question, gt[, response]) as dicts."""
    rows = []
    for f in paths:
        task = f.stem
        with f.open("r", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                line = line.rstrip("\n").rstrip("\r")
                if not line.strip():
                    continue
                parts = line.split("\t", 3)
                if len(parts) < 3:
                    raise GraceError(f"{f}:{lineno}: expected 'image<TAB>question<TAB>answer[<TAB>response]'")
                row = {"task": task, "image": parts[0], "question": parts[1], "gt": parts[2].strip(), "__line__": lineno}
                if len(parts) == 4:
                    row["response"] = parts[3]
                rows.append(row)
    return rows


def _tool_files(data: DataFiles) -> list[Path]:
    return [f for f in data.match("*.txt") if f.stem in TASKS and f.parent.name not in TASKS]


def _release_gt(data: DataFiles) -> dict[str, str]:
    """GT from the official release folder: <task>/[questions_answers_YN/]<stem>.txt = question<TAB>Yes|No."""
    gt: dict[str, str] = {}
    for f in data.match("*.txt"):
        parent = f.parent.name
        task = f.parent.parent.name if parent == "questions_answers_YN" else parent
        if task not in TASKS or f.stem in TASKS:
            continue
        with f.open("r", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 2:
                    raise GraceError(f"{f}:{lineno}: expected 'question<TAB>Yes|No'")
                gt[mme_key(task, f.stem, parts[0])] = parts[1].strip()
    return gt


def _target(task: str, image: str, gt: str | None) -> dict | None:
    if gt is None:
        return None
    g = gt.strip().lower()
    if g not in ("yes", "no"):
        raise GraceError(f"mme: ground truth {gt!r} for {task}/{image} is not Yes/No")
    return {"gt": g, "task": task, "group": f"{task}/{image_stem(image)}"}


class MME(Benchmark):
    name = "mme"
    title = "MME"
    max_new_tokens = 128

    def load(self, data: DataFiles) -> list[Item]:
        parquet = data.match("*.parquet")
        if parquet:
            return self._load_hf(parquet)
        tool = read_tool_files(_tool_files(data))
        gt = {mme_key(r["task"], r["image"], r["question"]): r["gt"] for r in tool}
        gt.update(_release_gt(data))
        questions = find_llava_question_files(data, "mme")
        if questions:
            path = questions[0]
            items = []
            for r in load_llava_questions(path):
                require(r, ("category",), where(path, r))
                task = str(r["category"])
                image = str(r.get("image") or r["question_id"])
                k = mme_key(task, image, r["text"])
                items.append(Item(k, r["question_id"], with_suffix(r["text"], SHORT_SUFFIX), llava_image(r),
                                  _target(task, image, gt.get(k)), {"category": task}))
            return items
        if not tool and not gt:
            raise GraceError(
                "mme: --data needs MME ground truth (the official release folder, or the eval tool's "
                "<subtask>.txt files) and optionally LLaVA's llava_mme.jsonl, or lmms-lab/MME parquet files"
            )
        if tool:
            items = []
            seen = set()
            for r in tool:
                k = mme_key(r["task"], r["image"], r["question"])
                if k in seen:  # the same subtask given twice (e.g. templates and results): keep one
                    continue
                seen.add(k)
                sub = "images/" if r["task"] in _NESTED else ""
                img = ImageRef(name=f"{r['task']}/{sub}{r['image']}")
                items.append(Item(k, f"{r['task']}/{sub}{r['image']}", question_core(r["question"]) + SHORT_SUFFIX,
                                  img, _target(r["task"], r["image"], r["gt"]), {"category": r["task"]}))
            return items
        raise GraceError("mme: with the release folder alone, also pass LLaVA's llava_mme.jsonl (it lists the images)")

    def _load_hf(self, files: list[Path]) -> list[Item]:
        items = []
        for f in files:
            for r in read_rows(f):
                require(r, ("question_id", "question", "category"), where(f, r))
                task = str(r["category"])
                k = mme_key(task, str(r["question_id"]), r["question"])
                target = _target(task, str(r["question_id"]), r.get("answer"))
                items.append(Item(k, r["question_id"], question_core(r["question"]) + SHORT_SUFFIX,
                                  hf_image(r.get("image")), target, {"category": task}))
        return items

    def read_answers(self, path: Path) -> list[dict]:
        # The official tool's own input (one <subtask>.txt per subtask with the response as 4th column).
        if path.is_dir() or path.suffix == ".txt":
            files = _tool_files(DataFiles.from_paths(path))
            rows = read_tool_files(files)
            if rows and not all("response" in r for r in rows):
                raise GraceError(f"{path}: MME tool files need a 4th (response) column to be scored")
            return [
                {"question_id": f"{r['task']}/{r['image']}", "prompt": r["question"], "text": r["response"],
                 "category": r["task"], "__line__": r["__line__"]}
                for r in rows
            ]
        return super().read_answers(path)

    def answer_key(self, record: dict) -> str:
        qid = str(record["question_id"])
        task = str(record.get("category") or qid.split("/")[0])
        prompt = record.get("prompt")
        if prompt is None:
            raise GraceError(f"mme: answer {qid!r} has no 'prompt'; MME answers are matched by question text")
        return mme_key(task, qid, prompt)

    def score(self, items: Sequence[Item], answers: dict[str, dict]) -> dict:
        groups: dict[str, dict[str, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
        for it in items:
            if it.target is None:
                continue
            rec = answers.get(it.key)
            pred = mme_parse(rec["text"]) if rec else "other"
            groups[it.target["task"]][it.target["group"]].append((it.target["gt"], pred))
        tasks = {t: mme_subtask_score(list(g.values())) for t, g in groups.items()}
        perception = sum(tasks[t]["score"] for t in PERCEPTION if t in tasks)
        cognition = sum(tasks[t]["score"] for t in COGNITION if t in tasks)
        metrics: dict = {"perception": perception, "cognition": cognition, "total": perception + cognition}
        for t in [*PERCEPTION, *COGNITION, *sorted(set(tasks) - set(TASKS))]:
            if t in tasks:
                metrics[f"{t}/score"] = tasks[t]["score"]
                metrics[f"{t}/acc"] = tasks[t]["acc"]
                metrics[f"{t}/acc_plus"] = tasks[t]["acc_plus"]
        return result(self.name, "perception", perception, metrics, subtasks=tasks)
