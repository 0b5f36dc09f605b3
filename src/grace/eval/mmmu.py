"""MMMU (validation): the MMMU repository's LLaVA-1.5 prompt and its official parsers.

Invariant: multiple-choice outputs go through ``parse_multi_choice_response`` (``(X)`` markers,
then `` X `` tokens, then option texts for outputs of more than 5 tokens, rightmost wins); open
outputs through ``parse_open_response`` (indicator tails, numbers, normalisation, substring match).
Where upstream picks a *random* letter for an unparseable answer (its result depends on call
order), we pick one with a generator seeded by the question id, so scores are reproducible; the
number of such picks is reported as ``counts.random_fallback``. When only predictions and
``answer_dict_val.json`` are given (no option texts) the predictions are taken as already parsed,
exactly as ``main_eval_only.py`` does. Overall = correct / questions (instance level).
"""

from __future__ import annotations

import ast
import random
import re
import zlib
from collections import defaultdict
from collections.abc import Sequence

from grace.errors import GraceError
from grace.eval.base import MC_SUFFIX_TEXT, SHORT_SUFFIX, Benchmark, Item, hf_image, pct, result
from grace.eval.readers import DataFiles, read_json, read_rows, require, where

DISCIPLINES = {
    "Art & Design": ("Art", "Art_Theory", "Design", "Music"),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Health & Medicine": ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                          "Pharmacy", "Public_Health"),
    "Humanities & Social Science": ("History", "Literature", "Sociology", "Psychology"),
    "Tech & Engineering": ("Agriculture", "Architecture_and_Engineering", "Computer_Science", "Electronics",
                           "Energy_and_Power", "Materials", "Mechanical_Engineering"),
}  # fmt: skip
SUBJECT_TO_DISCIPLINE = {s: d for d, subs in DISCIPLINES.items() for s in subs}

_TRIVIAL = (":", ",", ".", "!", "?", ";", "'")
_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_NUM_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUM_SCI = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUM_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")


def subject_of(qid: str) -> str:
    """'validation_Art_Theory_12' -> 'Art_Theory'."""
    return "_".join(str(qid).split("_")[1:-1])


def parse_mc(response: str, options: dict[str, str], rng: random.Random | None = None) -> tuple[str, bool]:
    """(letter, was_random) by the official multiple-choice parser.

    ``parse_mc("The answer is C.", {"A": "dog", "B": "cat", "C": "bird", "D": "fish"})[0] == "C"``
    """
    r = response
    for ch in (",", ".", "!", "?", ";", ":", "'"):
        r = r.strip(ch)
    r = f" {r} "
    letters = list(options)
    cands = [c for c in letters if f"({c})" in r]
    mode = "bracket" if cands else "plain"
    if not cands:
        cands = [c for c in letters if f" {c} " in r]
    if not cands and len(r.split()) > 5:
        cands = [c for c in letters if options[c].lower() in r.lower()]
        mode = "text"
    if not cands:
        return (rng or random.Random(0)).choice(letters), True
    if len(cands) == 1:
        return cands[0], False
    if mode == "bracket":
        pos = [r.rfind(f"({c})") for c in cands]
    elif mode == "plain":
        pos = [r.rfind(f" {c} ") for c in cands]
    else:
        pos = [r.lower().rfind(options[c].lower()) for c in cands]
    return cands[pos.index(max(pos))], False


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
    except ValueError:
        return False
    return True


def normalize_open(s: str) -> list:
    """A number -> [float rounded to 2]; a string -> [lower]; one character x -> [' x', 'x '].

    ``normalize_open("1,000") == [1000.0]``
    """
    s = s.strip()
    if _is_number(s):
        return [round(float(s.replace(",", "")), 2)]
    s = s.lower()
    return [" " + s, s + " "] if len(s) == 1 else [s]


def extract_numbers(s: str) -> list[str]:
    """Comma-grouped, scientific and plain numbers in ``s`` (in that order, as upstream)."""
    return _NUM_COMMAS.findall(s) + _NUM_SCI.findall(s) + _NUM_SIMPLE.findall(s)


def _key_responses(response: str) -> list[str]:
    resp = response.strip().strip(".").lower()
    parts = re.split(r"\.\s(?=[A-Z])|\n", resp)
    indicators = list(_INDICATORS)
    keys = []
    for i, part in enumerate(parts):
        if i == len(parts) - 1:
            indicators.append("=")  # the last sentence may be a bare equation
        shortest = None
        for ind in indicators:
            if ind in part:
                tail = part.split(ind)[-1].strip()
                # An empty tail is falsy upstream, so a later indicator replaces it.
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _TRIVIAL:
            keys.append(shortest)
    return keys or [resp]


def parse_open(response: str) -> list:
    """Candidate answers (strings and floats) by the official open-question parser."""
    keys = _key_responses(response)
    cands = list(keys)
    for k in keys:
        cands.extend(extract_numbers(k))
    out = []
    for c in cands:
        out.extend(normalize_open(c))
    return list(dict.fromkeys(out))


def eval_open(gold, preds: Sequence) -> bool:
    """Official open-question check: equal float, or a GT string contained in a string candidate."""
    golds = gold if isinstance(gold, list) else [gold]
    norm = [n for g in golds for n in normalize_open(str(g))]
    for p in preds:
        if isinstance(p, str):
            if any(isinstance(n, str) and n in p for n in norm):
                return True
        elif p in norm:
            return True
    return False


def eval_mc(gold, pred: str) -> bool:
    """Exact letter equality (any element of a list GT)."""
    return pred in gold if isinstance(gold, list) else pred == gold


def mmmu_prompt(question: str, options: Sequence[str] | None, question_type: str) -> str:
    """The MMMU repo's llava1.5 prompt: '(A) opt' lines (ending in a newline) then the MC sentence."""
    if question_type == "multiple-choice":
        block = "".join(f"({chr(65 + i)}) {o}\n" for i, o in enumerate(options or []))
        return f"{question}\n{block}\n{MC_SUFFIX_TEXT}"
    return question + SHORT_SUFFIX


def _parse_options(value) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    try:
        parsed = ast.literal_eval(str(value))  # the HF column is a Python list literal, never code
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"options {str(value)[:60]!r} are not a list literal") from e
    return [str(v) for v in parsed]


def _parse_gold(value):
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            v = ast.literal_eval(value)
            if isinstance(v, list):
                return [str(x) for x in v]
        except (ValueError, SyntaxError):
            pass
    return value


class MMMU(Benchmark):
    name = "mmmu"
    title = "MMMU (val)"
    max_new_tokens = 128

    def load(self, data: DataFiles) -> list[Item]:
        answer_dicts = data.match("answer_dict*.json")
        parquet = data.match("*.parquet")
        if not answer_dicts and not parquet:
            raise GraceError("mmmu: --data needs MMMU validation parquet files or MMMU's answer_dict_val.json")
        items: dict[str, Item] = {}
        for f in parquet:
            for r in read_rows(f):
                require(r, ("id", "question", "question_type"), where(f, r))
                qtype = str(r["question_type"])
                try:
                    opts = _parse_options(r.get("options") or "[]")
                except ValueError as e:
                    raise GraceError(f"{where(f, r)}: {e}") from e
                letters = {chr(65 + i): o for i, o in enumerate(opts)}
                target = None
                if r.get("answer") not in (None, "", "?"):
                    target = {"type": qtype, "gold": _parse_gold(r["answer"]), "options": letters}
                k = str(r["id"])
                items[k] = Item(k, k, mmmu_prompt(r["question"], opts, qtype), hf_image(r.get("image_1")), target)
        for f in answer_dicts:
            doc = read_json(f)
            if not isinstance(doc, dict):
                raise GraceError(f"{f}: expected an object keyed by question id")
            for k, v in doc.items():
                if not isinstance(v, dict) or "ground_truth" not in v or "question_type" not in v:
                    raise GraceError(f"{f}: entry {k!r} lacks question_type/ground_truth")
                qtype = "multiple-choice" if v["question_type"] == "multiple-choice" else "open"
                if k in items:
                    if items[k].target is None:
                        items[k].target = {"type": qtype, "gold": v["ground_truth"], "options": {}}
                    items[k].target["gold"] = v["ground_truth"]
                else:
                    items[k] = Item(k, k, "", None, {"type": qtype, "gold": v["ground_truth"], "options": {}})
        return list(items.values())

    def score(self, items: Sequence[Item], answers: dict[str, dict]) -> dict:
        per_subject: dict[str, list[bool]] = defaultdict(list)
        n_random = 0
        for it in items:
            t = it.target
            if t is None:
                continue
            rec = answers.get(it.key)
            if rec is None:  # no answer: wrong (not a random guess)
                per_subject[subject_of(it.key)].append(False)
                continue
            text = rec["text"]
            if t["type"] == "multiple-choice":
                if t["options"]:
                    rng = random.Random(zlib.crc32(it.key.encode()))
                    pred, was_random = parse_mc(text, t["options"], rng)
                    n_random += was_random
                else:  # answers are already parsed letters (main_eval_only.py input)
                    pred = text
                ok = eval_mc(t["gold"], pred)
            else:
                ok = eval_open(t["gold"], parse_open(text))
            per_subject[subject_of(it.key)].append(bool(ok))
        allv = [c for v in per_subject.values() for c in v]
        acc = pct(sum(allv), len(allv))
        metrics = {"accuracy": acc}
        for disc, subs in DISCIPLINES.items():
            vals = [c for s in subs for c in per_subject.get(s, [])]
            if vals:
                metrics[f"discipline/{disc}"] = pct(sum(vals), len(vals))
        for s in sorted(per_subject):
            metrics[f"subject/{s}"] = pct(sum(per_subject[s]), len(per_subject[s]))
        return result(self.name, "accuracy", acc, metrics,
                      counts={"correct": sum(allv), "scored": len(allv), "random_fallback": n_random})
