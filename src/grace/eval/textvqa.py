"""TextVQA (val) as LLaVA-1.5 evaluates it: OCR-token prompt, EvalAI processor on both sides.

Invariant: LLaVA's question file stores the TextVQA *image* id as ``question_id`` and several
questions can share an image, so an answer is joined to its annotation by (image id, lower-cased
question recovered from the saved prompt), exactly like ``eval_textvqa.py``.
"""

from __future__ import annotations

import re
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
from grace.eval.vqa_norm import textvqa_accuracy

OCR_PREFIX = "Reference OCR token: "


def question_from_prompt(prompt: str) -> str:
    """The lower-cased question inside a saved TextVQA prompt (LLaVA's ``prompt_processor``).

    ``question_from_prompt("What is it?\\nReference OCR token: a, b\\nAnswer ...") == "what is it?"``
    """
    if prompt.startswith("OCR tokens: "):
        m = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        if m is None:
            raise ValueError("OCR-tokens prompt without 'Question: ... Short answer:'")
        q = m.group(1)
    else:
        lines = prompt.split("\n")
        if OCR_PREFIX in prompt and len(lines) == 3:
            q = lines[1] if prompt.startswith(OCR_PREFIX.strip()) else lines[0]
        elif len(lines) == 2:
            q = lines[0]
        else:
            raise ValueError(f"cannot find the question in a {len(lines)}-line prompt")
    return q.lower()


def textvqa_prompt(question: str, ocr_tokens: Sequence[str] | None) -> str:
    """LLaVA-1.5's TextVQA prompt: question, the OCR line (when tokens are known), the short suffix."""
    # LLaVA's file capitalises the first letter of the (lower-case) TextVQA question.
    q = question[:1].upper() + question[1:]
    if ocr_tokens is None:
        return q + SHORT_SUFFIX
    return q + "\n" + OCR_PREFIX + ", ".join(ocr_tokens) + SHORT_SUFFIX


def _key(image_id: str, question_lower: str) -> str:
    return f"{image_id}|{question_lower}"


class TextVQA(Benchmark):
    name = "textvqa"
    title = "TextVQA (val)"
    max_new_tokens = 128

    def load(self, data: DataFiles) -> list[Item]:
        parquet = data.match("*.parquet")
        if parquet:
            return self._load_hf(parquet)
        ann_files = data.match("textvqa*.json")
        llava = find_llava_question_files(data, "textvqa")
        if not ann_files and not llava:
            raise GraceError(
                "textvqa: --data needs TextVQA_0.5.1_val.json (and optionally LLaVA's "
                "llava_textvqa_val_v051_ocr.jsonl) or lmms-lab/textvqa parquet files"
            )
        anns: dict[str, dict] = {}
        for f in ann_files:
            _, records = read_json_records(f, "data", "a TextVQA annotation file", ("image_id", "question"))
            for a in records:
                anns[_key(str(a["image_id"]), a["question"].lower())] = a
        items: list[Item] = []
        if llava:
            path = llava[0]
            for r in load_llava_questions(path):
                try:
                    q = question_from_prompt(r["text"])
                except ValueError as e:
                    raise GraceError(f"{where(path, r)}: {e}") from e
                k = _key(as_key(r["question_id"]), q)
                a = anns.get(k)
                items.append(
                    Item(k, r["question_id"], with_suffix(r["text"], SHORT_SUFFIX), llava_image(r), _target(a))
                )
            return items
        for a in anns.values():
            k = _key(str(a["image_id"]), a["question"].lower())
            prompt = textvqa_prompt(a["question"], a.get("ocr_tokens"))
            items.append(Item(k, a["image_id"], prompt, ImageRef(name=f"{a['image_id']}.jpg"), _target(a)))
        return items

    def _load_hf(self, files: list[Path]) -> list[Item]:
        items = []
        seen = set()
        for f in files:
            for r in read_rows(f):
                require(r, ("image_id", "question"), where(f, r))
                k = _key(str(r["image_id"]), r["question"].lower())
                if k in seen:  # same image and question twice: LLaVA's join keeps one
                    continue
                seen.add(k)
                prompt = textvqa_prompt(r["question"], r.get("ocr_tokens"))
                items.append(Item(k, r["image_id"], prompt, hf_image(r.get("image")), _target(r)))
        return items

    def answer_key(self, record: dict) -> str:
        prompt = record.get("prompt")
        if not prompt:
            raise GraceError(
                f"textvqa: answer {record.get('question_id')!r} has no 'prompt'; TextVQA answers are "
                "joined on (image id, question) and need LLaVA's answer layout"
            )
        try:
            return _key(as_key(record["question_id"]), question_from_prompt(prompt))
        except ValueError as e:
            raise GraceError(f"textvqa: answer line {record.get('__line__', '?')}: {e}") from e

    def score(self, items: Sequence[Item], answers: dict[str, dict]) -> dict:
        scores = []
        for it in items:
            if it.target is None:
                continue
            rec = answers.get(it.key)
            scores.append(textvqa_accuracy(rec["text"], it.target) if rec else 0.0)
        acc = pct(sum(scores), len(scores))
        return result(self.name, "accuracy", acc, {"accuracy": acc}, counts={"scored": len(scores)})


def _target(a: dict | None) -> list[str] | None:
    if a is None or a.get("answers") is None:
        return None
    answers = [str(x) for x in a["answers"]]
    if len(answers) != 10:
        raise GraceError(f"textvqa: question {a.get('question_id')} has {len(answers)} answers, expected 10")
    return answers
