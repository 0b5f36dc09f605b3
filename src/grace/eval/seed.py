"""SEED-Bench (v1): LLaVA's ``convert_seed_for_submission.py`` scoring; headline = image subset.

Invariant: an answer is right iff the saved output string *equals* the GT letter (no stripping of
"." or case-folding: "A." and "a" are wrong). Accuracies are micro (sum correct / sum count) over
the question-type dimensions: image = dimensions 1-9, video = 10-12; a missing answer is wrong.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from grace.errors import GraceError
from grace.eval.base import (
    MC_SUFFIX,
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

DIMENSIONS = {
    1: "Scene Understanding", 2: "Instance Identity", 3: "Instance Attributes", 4: "Instance Location",
    5: "Instances Counting", 6: "Spatial Relation", 7: "Instance Interaction", 8: "Visual Reasoning",
    9: "Text Understanding", 10: "Action Recognition", 11: "Action Prediction", 12: "Procedure Understanding",
}  # fmt: skip
IMAGE_DIMS = range(1, 10)


def seed_correct(output: str, answer: str) -> bool:
    """LLaVA's rule: exact string equality. ``seed_correct("A.", "A") is False``"""
    return output == answer


def seed_metrics(rows: Sequence[tuple[bool, int | None, bool]]) -> dict:
    """Micro accuracies (image, video, all) and per dimension from (correct, question_type_id, is_video);
    a None dimension (lmms-eval rows carry none) counts only towards the image/video totals."""
    per: dict[int, list[bool]] = defaultdict(list)
    for c, d, _ in rows:
        if d is not None:
            per[d].append(c)
    img = [c for c, _, v in rows if not v]
    vid = [c for c, _, v in rows if v]
    m = {"image_accuracy": pct(sum(img), len(img))}
    if vid:
        m["video_accuracy"] = pct(sum(vid), len(vid))
        m["all_accuracy"] = pct(sum(img) + sum(vid), len(img) + len(vid))
    for d in sorted(per):
        m[f"{d}. {DIMENSIONS.get(d, 'dimension')}"] = pct(sum(per[d]), len(per[d]))
    return m


def seed_prompt(q: dict) -> str:
    """Question, 'A. choice_a' ... 'D. choice_d' lines, then the MC suffix."""
    opts = "".join(f"\n{L}. {q[f'choice_{L.lower()}']}" for L in "ABCD")
    return q["question"] + opts + MC_SUFFIX


class SEEDBench(Benchmark):
    name = "seed"
    title = "SEED-Bench (image)"
    max_new_tokens = 128

    def load(self, data: DataFiles) -> list[Item]:
        parquet = data.match("*.parquet")
        if parquet:
            return self._load_hf(parquet)
        official = data.match("seed-bench*.json", "seed_bench*.json")
        llava = find_llava_question_files(data, "seed")
        if not official and not llava:
            raise GraceError(
                "seed: --data needs SEED-Bench.json (and optionally LLaVA's llava-seed-bench.jsonl) or "
                "lmms-lab/SEED-Bench parquet files"
            )
        qs: dict[str, dict] = {}
        for f in official:
            _, records = read_json_records(f, "questions", "SEED-Bench.json", ("question_id", "question_type_id"))
            for q in records:
                qs[as_key(q["question_id"])] = q
        items = []
        if llava:
            for r in load_llava_questions(llava[0]):
                k = as_key(r["question_id"])
                items.append(Item(k, r["question_id"], with_suffix(r["text"], MC_SUFFIX), llava_image(r),
                                  _target(qs.get(k))))
            return items
        for k, q in qs.items():
            require(q, ("question", "choice_a", "choice_b", "choice_c", "choice_d"), f"{official[0]}: question {k}")
            dim = int(q["question_type_id"])
            if q.get("data_type", "image") == "image":
                img = ImageRef(name=f"SEED-Bench-image/{q['data_id']}")
            else:  # LLaVA feeds one middle frame of each video question
                img = ImageRef(name=f"SEED-Bench-video-image/{dim}_{k}.png")
            items.append(Item(k, k, seed_prompt(q), img, _target(q)))
        return items

    def _load_hf(self, files: list[Path]) -> list[Item]:
        items = []
        for f in files:
            for r in read_rows(f):
                require(r, ("question_id", "question", "choice_a", "choice_b", "choice_c", "choice_d"), where(f, r))
                k = as_key(r["question_id"])
                items.append(Item(k, k, seed_prompt(r), hf_image(r.get("image")), _target(r)))
        return items

    def score(self, items: Sequence[Item], answers: dict[str, dict]) -> dict:
        rows = []
        for it in items:
            if it.target is None:
                continue
            rec = answers.get(it.key)
            ok = bool(rec) and seed_correct(rec["text"], it.target["answer"])
            rows.append((ok, it.target["dim"], it.target["video"]))
        m = seed_metrics(rows)
        return result(self.name, "image accuracy", m["image_accuracy"], m)


def _target(q: dict | None) -> dict | None:
    if q is None or q.get("answer") is None:
        return None
    dim = q.get("question_type_id")
    dim = None if dim is None else int(dim)
    if dim is not None:
        video = dim not in IMAGE_DIMS
    else:  # lmms-eval rows may lack the dimension; data_type still says image or video
        video = str(q.get("data_type", "image")) != "image"
    return {"answer": str(q["answer"]), "dim": dim, "video": video}
