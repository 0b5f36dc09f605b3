"""synthvqa: short / yes-no / multiple-choice scoring, per kind and per category."""

from __future__ import annotations

import json

import pytest

from grace.eval import score_files
from grace.eval.synthvqa import mc_letter, synth_correct


@pytest.mark.parametrize(
    "kind,out,ans,ok",
    [
        ("short", "Two.", "2", True), ("short", "The red cube", "red cube", True), ("short", "blue", "red", False),
        ("yesno", "Yes, there is.", "yes", True), ("yesno", "No.", "yes", False), ("yesno", "NO", "no", False),
        ("mc", "B", "B", True), ("mc", "(C) sphere", "C", True), ("mc", "The answer is D", "D", True),
        ("mc", "b", "B", False),
    ],
)  # fmt: skip
def test_synth_correct(kind, out, ans, ok):
    assert synth_correct(kind, out, ans) is ok


def test_mc_letter_none():
    assert mc_letter("I do not know") is None


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_synthvqa_metrics(tmp_path):
    qs = [
        {"question_id": 1, "image": "1.png", "text": "What color is the cube?", "category": "color", "kind": "short"},
        {"question_id": 2, "image": "1.png", "text": "Is there a cube?", "category": "exist", "kind": "yesno"},
        {"question_id": 3, "image": "1.png", "text": "Is there a ball?", "category": "exist", "kind": "yesno"},
        {"question_id": 4, "image": "2.png", "text": "Which shape?\nA. cube\nB. ball", "category": "shape", "kind": "mc"},
    ]  # fmt: skip
    _write(tmp_path / "synth_questions.jsonl", qs)
    _write(tmp_path / "synth_annotations.jsonl",
           [{"question_id": 1, "answer": "red"}, {"question_id": 2, "answer": "yes"},
            {"question_id": 3, "answer": "no"}, {"question_id": 4, "answer": "A"}])
    ans = tmp_path / "out" / "answers.jsonl"
    ans.parent.mkdir()
    _write(ans, [{"question_id": 1, "prompt": "", "text": "Red."}, {"question_id": 2, "prompt": "", "text": "Yes"},
                 {"question_id": 3, "prompt": "", "text": "Yes"}, {"question_id": 4, "prompt": "", "text": "B"}])
    res = score_files("synthvqa", ans, [tmp_path / "synth_questions.jsonl", tmp_path / "synth_annotations.jsonl"])
    m = res["metrics"]
    assert res["headline"]["value"] == 50.0
    assert m["kind/short"] == 100.0 and m["kind/yesno"] == 50.0 and m["kind/mc"] == 0.0
    assert m["category/exist"] == 50.0 and m["category/color"] == 100.0
    assert m["yesno/precision"] == 50.0 and m["yesno/recall"] == 100.0 and m["yesno/yes_ratio"] == 100.0


def test_synthvqa_bad_kind(tmp_path):
    from grace.errors import GraceError

    _write(tmp_path / "q.jsonl", [{"question_id": 1, "image": "1.png", "text": "x", "category": "c", "kind": "essay"}])
    with pytest.raises(GraceError, match=r"q\.jsonl:1: kind 'essay'"):
        score_files("synthvqa", tmp_path / "q.jsonl", [tmp_path])
