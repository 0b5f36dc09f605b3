"""The contract every benchmark follows: questions in, one answer per question, metrics out.

Invariant: a benchmark turns the user's files into a list of :class:`Item` (one per scored
question, each with a unique ``key``) and scores a mapping ``key -> raw model output`` with pure
functions. The runner and ``grace eval score`` both go through :meth:`Benchmark.score_answers`, so a
number printed after a run is the number a later re-score of the saved answer file prints.

Missing answers are never silently dropped: each benchmark scores them the way its official
evaluator treats an unusable answer (wrong) unless the official tool has a documented quirk, and
the count is always reported under ``counts``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grace.errors import GraceError
from grace.eval.readers import DataFiles, ImageRef, read_json, read_jsonl, read_table_text, read_xlsx

SHORT_SUFFIX = "\nAnswer the question using a single word or phrase."
MC_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
SHORT_SUFFIX_TEXT = SHORT_SUFFIX.strip()
MC_SUFFIX_TEXT = MC_SUFFIX.strip()


@dataclass
class Item:
    """One scored question.

    ``key`` is unique within the benchmark and is how answers are matched; ``qid`` is the id written
    to the answer file (the LLaVA ``question_id``); ``prompt`` is the user text without the image
    token but with the benchmark's suffix; ``target`` is whatever the scorer needs (None if the
    data has no ground truth, e.g. a test split).
    """

    key: str
    qid: Any
    prompt: str
    image: ImageRef | None
    target: Any = None
    meta: dict = field(default_factory=dict)


def pct(num: float, den: float) -> float:
    """100 * num / den, 0.0 for an empty denominator (reported counts show when that happened)."""
    return 100.0 * num / den if den else 0.0


def as_key(value: Any) -> str:
    """Question ids come as int in one file and str in another (GQA, SEED); compare them as text."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


class Benchmark:
    """Base class: subclasses set ``name``/``max_new_tokens`` and implement ``load`` and ``score``."""

    name: str = ""
    title: str = ""
    max_new_tokens: int = 128
    #: keep the file's image mode (LLaVA's MMBench/SQA runners skip ``.convert('RGB')``).
    image_mode: str | None = "RGB"
    #: a question without an image is a missing image (False only where text-only questions exist).
    requires_image: bool = True

    # -- inputs -------------------------------------------------------------------------------
    def load(self, data: DataFiles) -> list[Item]:
        raise NotImplementedError

    def load_paths(self, paths: str | Path | Iterable[str | Path]) -> tuple[list[Item], DataFiles]:
        files = DataFiles.from_paths(paths)
        items = self.load(files)
        keys = set()
        for it in items:
            if it.key in keys:
                raise GraceError(
                    f"{self.name}: two questions share the id {it.key!r} in the data files "
                    "(pass one copy / one split of the benchmark's files)"
                )
            keys.add(it.key)
        for it in items:
            if it.image is not None and not it.image.roots:
                it.image.roots = files.image_roots()
        return items, files

    def saved_prompt(self, item: Item) -> str:
        """The ``prompt`` field written to the answer file (LLaVA's runners write the question text)."""
        return item.prompt

    # -- answers ------------------------------------------------------------------------------
    def read_answers(self, path: Path) -> list[dict]:
        """Answer records ``{question_id, prompt, text}`` from any supported answer file."""
        return read_answer_records(path)

    def answer_key(self, record: dict) -> str:
        """The item key an answer record belongs to (default: its question id)."""
        return as_key(record["question_id"])

    def match_answers(
        self, items: Sequence[Item], records: Sequence[dict], source: str
    ) -> tuple[dict[str, dict], int]:
        """(item key -> answer record, number of duplicate answers); a later duplicate wins, as in
        LLaVA's conversion scripts, which build a dict keyed by question id."""
        keys = {it.key for it in items}
        out: dict[str, dict] = {}
        dups = 0
        for rec in records:
            try:
                k = self.answer_key(rec)
            except KeyError as e:
                raise GraceError(f"{source}:{rec.get('__line__', '?')}: answer has no field {e}") from e
            if k in keys:
                dups += k in out
                out[k] = rec
        if records and not out:
            raise GraceError(
                f"{source}: none of its {len(records)} answers matches a question of {self.name} "
                f"in the data files (wrong --bench or --data?)"
            )
        return out, dups

    # -- scoring ------------------------------------------------------------------------------
    def score(self, items: Sequence[Item], answers: dict[str, dict]) -> dict:
        """Metrics for ``answers`` (item key -> answer record with 'text', and 'prompt' if known)."""
        raise NotImplementedError

    def score_answers(self, items: Sequence[Item], records: Sequence[dict], source: str = "answers") -> dict:
        """Match ``records`` to ``items`` and score them; adds the answer bookkeeping to ``counts``."""
        if not items:
            raise GraceError(f"{self.name}: the data files contain no questions")
        if all(it.target is None for it in items):
            raise GraceError(f"{self.name}: the data files have no ground-truth answers to score against")
        matched, dups = self.match_answers(items, records, source)
        result = self.score(items, matched)
        counts = result.setdefault("counts", {})
        counts.setdefault("questions", len(items))
        counts.setdefault("answered", len(matched))
        counts.setdefault("missing", len(items) - len(matched))
        counts.setdefault("unmatched_answers", max(0, len(records) - len(matched) - dups))
        if dups:
            counts["duplicate_answers"] = dups
        result.setdefault("benchmark", self.name)
        return result

    def score_files(self, answers: str | Path, data: Sequence[str | Path] | None = None) -> dict:
        """Score an answer file against the benchmark files (``data`` defaults to the answer file).

        ``res = get_benchmark("pope").score_files("answers.jsonl", ["pope/"])``
        """
        answers = Path(answers)
        if not answers.exists():
            raise GraceError(f"{answers}: no such answer file")
        items, _ = self.load_paths(list(data) if data else [answers])
        records = self.read_answers(answers)
        return self.score_answers(items, records, str(answers))


def result(name: str, headline_name: str, headline: float, metrics: dict, **extra) -> dict:
    """The common result layout: a headline number plus an ordered flat ``metrics`` mapping."""
    out = {
        "benchmark": name,
        "headline": {"metric": headline_name, "value": headline},
        "metrics": metrics,
    }
    out.update(extra)
    return out


# ----------------------------------------------------------------------------- answer files

_TEXT_FIELDS = ("text", "prediction", "pred", "response", "answer", "output")
_ID_FIELDS = ("question_id", "questionId", "index", "id", "qid")


def _record_from_row(row: dict, where: str) -> dict:
    qid = next((row[f] for f in _ID_FIELDS if f in row and row[f] is not None), None)
    if qid is None:
        raise GraceError(f"{where}: answer has none of the id fields {', '.join(_ID_FIELDS)}")
    field_name = next((f for f in _TEXT_FIELDS if f in row), None)
    if field_name is None:
        raise GraceError(f"{where}: answer has none of the text fields {', '.join(_TEXT_FIELDS)}")
    text = row[field_name]
    rec = dict(row)
    rec["question_id"] = qid
    # An empty spreadsheet cell is an empty answer, not a missing one.
    rec["text"] = "" if text is None else text if isinstance(text, str) else str(text)
    rec.setdefault("prompt", row.get("prompt"))
    return rec


def read_answer_records(path: str | Path) -> list[dict]:
    """Answer records from the answer formats in the wild, normalised to ``question_id``/``text``.

    Accepted: LLaVA answer JSONL (``text``), upload JSONL (``prediction``), a JSON list of
    ``{questionId, prediction}`` (GQA) or ``{question_id, answer}`` (VQA results), a JSON object
    ``{id: prediction}`` (MMMU), LLaVA's ScienceQA ``*_output.json`` (``correct``/``incorrect``
    lists), and TSV/CSV/XLSX tables with a ``prediction`` column.

    ``records = read_answer_records("llava-v1.5-13b.jsonl")``
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".tsv", ".csv"):
        rows = read_xlsx(path) if suffix == ".xlsx" else read_table_text(path)
        if rows and "prediction" not in rows[0]:
            raise GraceError(f"{path}: the table has no 'prediction' column")
        return [_record_from_row({**r, "text": r.get("prediction")}, f"{path}:{r['__line__']}") for r in rows]
    from grace.eval.readers import looks_like_jsonl

    jsonl = looks_like_jsonl(path)
    if suffix == ".jsonl" and not jsonl:
        # LLaVA's ScienceQA "*_output.jsonl" is really one pretty-printed JSON document.
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            doc = None
        if doc is None:
            read_jsonl(path)  # raises the error naming the bad line
    if jsonl:
        rows = read_jsonl(path)
        # A one-line '.json' file could be a whole document; let the JSON path handle it.
        if not (suffix == ".json" and len(rows) <= 1):
            return [_record_from_row(r, f"{path}:{r['__line__']}") for r in rows]
    doc = read_json(path)
    if isinstance(doc, dict) and "correct" in doc and "incorrect" in doc:
        # LLaVA eval_science_qa.py output: every problem with the raw prediction and the saved prompt.
        recs = []
        for part in ("correct", "incorrect"):
            for i, r in enumerate(doc[part]):
                if not isinstance(r, dict) or "question_id" not in r or "pred" not in r:
                    raise GraceError(f"{path}: {part}[{i}] lacks question_id/pred")
                recs.append({"question_id": r["question_id"], "text": r["pred"], "prompt": r.get("question")})
        return recs
    if isinstance(doc, dict):
        recs = []
        for k, v in doc.items():
            if isinstance(v, dict):
                recs.append(_record_from_row({"question_id": k, **v}, f"{path}: entry {k!r}"))
            else:
                recs.append({"question_id": k, "text": v if isinstance(v, str) else str(v), "prompt": None})
        return recs
    if isinstance(doc, list):
        recs = []
        for i, r in enumerate(doc):
            if not isinstance(r, dict):
                raise GraceError(f"{path}: element {i} is not an object")
            recs.append(_record_from_row(r, f"{path}: element {i}"))
        return recs
    raise GraceError(f"{path}: unrecognised answer file layout ({type(doc).__name__} at top level)")


def with_suffix(text: str, suffix: str) -> str:
    """``text`` + ``suffix`` unless the question file already carries the suffix (LLaVA's do)."""
    return text if suffix.strip() in text else text + suffix


def load_llava_questions(path: Path) -> list[dict]:
    """Rows of a LLaVA evaluation question file (jsonl: question_id, image, text, category).

    ``rows = load_llava_questions(Path("llava_pope_test.jsonl"))``
    """
    from grace.eval.readers import require, where

    rows = read_jsonl(path)
    for r in rows:
        require(r, ("question_id", "text"), where(path, r))
    return rows


def llava_image(row: dict) -> ImageRef | None:
    """The image reference of a LLaVA question row (None for a text-only question)."""
    name = row.get("image")
    return ImageRef(name=str(name)) if name else None


def hf_image(cell: Any) -> ImageRef | None:
    """The image of a Parquet/HF row cell (lazy ImageRef, a list of them, or None)."""
    if isinstance(cell, list):
        cell = next((c for c in cell if c is not None), None)
    return cell if isinstance(cell, ImageRef) else None


def need(found: Sequence[Path], what: str, bench: str) -> None:
    """Raise the one clear error for a benchmark that cannot find an input it needs."""
    if not found:
        raise GraceError(f"{bench}: no {what} among the --data files")


def find_llava_question_files(data: DataFiles, hint: str, exclude: Sequence[Path] = ()) -> list[Path]:
    """LLaVA question files among the data: JSONL whose first row has question_id and text but no
    'prompt' (answer files have one). Files whose name contains ``hint`` come first.
    """
    import json

    found = []
    for f in data.match("*.jsonl"):
        if f in exclude:
            continue
        try:
            with f.open("r", encoding="utf-8") as fh:
                first = next((ln for ln in fh if ln.strip()), "")
            row = json.loads(first) if first else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            # A malformed first line is reported when (if) the file is really read.
            row = {"question_id": None, "text": None} if hint in f.name.lower() else {}
        if isinstance(row, dict) and "question_id" in row and "text" in row and "prompt" not in row:
            found.append(f)
    return sorted(found, key=lambda f: (hint not in f.name.lower(), str(f)))
