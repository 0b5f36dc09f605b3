"""ScienceQA (test) with the IMG subset as headline: LLaVA's ``eval_science_qa.py`` rules.

Invariant: the letter is the whole output if it is one of A-E; else the first character of an
output that starts with "X. "; else the single match of ``The answer is ([A-Z]).`` (the dot is a
regex wildcard, so a character must follow the letter); else FAILED. A letter beyond the
question's choices is wrong. A question counts towards IMG iff the *saved prompt* of its answer
contains ``<image>`` -- so, as upstream, a question without an answer leaves the IMG denominator
(the missing count is reported).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from grace.errors import GraceError
from grace.eval.base import MC_SUFFIX, Benchmark, Item, as_key, hf_image, pct, result
from grace.eval.readers import DataFiles, ImageRef, read_json, read_rows, require, where

OPTIONS = ("A", "B", "C", "D", "E")
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def sqa_parse(text: str) -> str:
    """The option letter LLaVA's evaluator reads from an output, or 'FAILED'.

    ``sqa_parse("The answer is C.") == "C"``; ``sqa_parse("B.") == "FAILED"``
    """
    if text in OPTIONS:
        return text
    if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else "FAILED"


def sqa_pred_index(letter: str, n_choices: int) -> int:
    """Index of ``letter`` among the first ``n_choices`` options, -1 if it is not one of them."""
    return OPTIONS.index(letter) if letter in OPTIONS[:n_choices] else -1


def sqa_prompt(question: str, choices: Sequence[str], hint: str | None) -> str:
    """LLaVA's CQM-A question text: optional 'Context: <hint>', the question, 'A. ...' lines."""
    ctx = f"Context: {hint}\n" if hint and str(hint).strip() else ""
    opts = "\n".join(f"{OPTIONS[i] if i < len(OPTIONS) else chr(65 + i)}. {c}" for i, c in enumerate(choices))
    return f"{ctx}{question}\n{opts}"


def count_options(text: str) -> int:
    """Number of options in a LLaVA SQA question text: the last '\nA. ' marker, then '\nB. ', '\nC. '
    ... in order (option texts may span several lines, so lines cannot be counted)."""
    pos = text.rfind("\nA. ")
    if pos < 0:
        return 0
    n = 1
    for letter in OPTIONS[1:]:
        nxt = text.find(f"\n{letter}. ", pos + 1)
        if nxt < 0:
            break
        n += 1
        pos = nxt
    return n


class ScienceQA(Benchmark):
    name = "scienceqa"
    title = "ScienceQA-IMG (test)"
    max_new_tokens = 1024
    image_mode = None  # model_vqa_science opens the image without .convert('RGB')
    requires_image = False  # about half of the test split is text-only; those run without an image

    def load(self, data: DataFiles) -> list[Item]:
        parquet = data.match("*.parquet")
        if parquet:
            return self._load_hf(parquet)
        problems = data.match("problems.json")
        if problems:
            return self._load_official(problems[0], data)
        llava = [f for f in data.match("*.json") if f.name.startswith("llava_test") or "cqm" in f.name.lower()]
        if not llava:
            raise GraceError(
                "scienceqa: --data needs LLaVA's llava_test_CQM-A.json, or the official problems.json + "
                "pid_splits.json, or the lmms-lab/ScienceQA (ScienceQA-IMG) parquet files"
            )
        return self._load_llava(llava[0])

    def _load_llava(self, path: Path) -> list[Item]:
        doc = read_json(path)
        if not isinstance(doc, list):
            raise GraceError(f"{path}: expected a JSON list of LLaVA conversation items")
        items = []
        for i, row in enumerate(doc):
            w = f"{path}: item {i}"
            if not isinstance(row, dict):
                raise GraceError(f"{w}: not an object")
            require(row, ("id", "conversations"), w)
            conv = row["conversations"]
            if not isinstance(conv, list) or not conv or "value" not in conv[0]:
                raise GraceError(f"{w}: 'conversations' lacks the human turn")
            text = conv[0]["value"].replace("<image>", "").strip()
            gold = conv[1].get("value", "").strip() if len(conv) > 1 else None
            n = count_options(text)
            target = None
            if gold:
                if gold not in OPTIONS:
                    raise GraceError(f"{w}: answer {gold!r} is not an option letter")
                target = {"answer": OPTIONS.index(gold), "n_choices": n}
            img = ImageRef(name=str(row["image"])) if row.get("image") else None
            items.append(Item(as_key(row["id"]), str(row["id"]), text + MC_SUFFIX, img, target,
                              {"has_image": img is not None}))
        return items

    def _load_official(self, problems_path: Path, data: DataFiles) -> list[Item]:
        problems = read_json(problems_path)
        splits = data.match("pid_splits.json")
        if splits:
            pids = read_json(splits[0]).get("test")
            if pids is None:
                raise GraceError(f"{splits[0]}: no 'test' split")
        else:
            pids = [p for p, v in problems.items() if v.get("split") == "test"]
        roots = [r for d in data.dirs for r in (d / "images" / "test", d / "test")] + data.image_roots()
        items = []
        for pid in pids:
            if pid not in problems:
                raise GraceError(f"{problems_path}: problem {pid!r} of the test split is missing")
            p = problems[pid]
            require(p, ("question", "choices", "answer"), f"{problems_path}: problem {pid}")
            img = ImageRef(name=f"{pid}/{p['image']}", roots=roots) if p.get("image") else None
            text = sqa_prompt(p["question"], p["choices"], p.get("hint"))
            target = {"answer": int(p["answer"]), "n_choices": len(p["choices"])}
            items.append(Item(as_key(pid), str(pid), text + MC_SUFFIX, img, target, {"has_image": img is not None}))
        return items

    def _load_hf(self, files: list[Path]) -> list[Item]:
        items = []
        n = 0
        for f in files:
            for r in read_rows(f):
                require(r, ("question", "choices"), where(f, r))
                img = hf_image(r.get("image"))
                target = None
                if r.get("answer") is not None:
                    target = {"answer": int(r["answer"]), "n_choices": len(r["choices"])}
                text = sqa_prompt(r["question"], r["choices"], r.get("hint"))
                items.append(Item(str(n), str(n), text + MC_SUFFIX, img, target, {"has_image": img is not None}))
                n += 1
        return items

    def saved_prompt(self, item: Item) -> str:
        return ("<image>\n" + item.prompt) if item.image is not None else item.prompt

    def score(self, items: Sequence[Item], answers: dict[str, dict]) -> dict:
        correct = total = img_correct = img_total = failed = 0
        for it in items:
            t = it.target
            if t is None:
                continue
            rec = answers.get(it.key)
            if rec is None:
                text, prompt = "FAILED", "Unknown"
            else:
                text = rec["text"]
                prompt = rec.get("prompt")
                if prompt is None:  # answer formats without the saved prompt: use what the data says
                    prompt = "<image>" if it.meta.get("has_image") else ""
            letter = sqa_parse(text)
            failed += letter == "FAILED"
            ok = sqa_pred_index(letter, t["n_choices"]) == t["answer"]
            total += 1
            correct += ok
            if "<image>" in prompt:
                img_total += 1
                img_correct += ok
        img_acc = pct(img_correct, img_total)
        metrics = {"img_accuracy": img_acc, "accuracy": pct(correct, total)}
        return result(
            self.name, "IMG accuracy", img_acc, metrics,
            counts={"img_correct": img_correct, "img_total": img_total, "correct": correct, "total": total,
                    "unparsed": failed},
        )
