"""POPE: LLaVA parsing table, metric arithmetic and the real LLaVA-1.5-13B fixture (85.947)."""

from __future__ import annotations

import json

import pytest

from grace.eval import score_files
from grace.eval.pope import binary_metrics, pope_parse


@pytest.mark.parametrize(
    "out,parsed",
    [
        ("Yes", "yes"), ("No", "no"), ("No.", "no"), ("There is no dog.", "no"), ("Yes, there is a dog.", "yes"),
        ("NO", "yes"), ("Not sure", "yes"), ("no.", "no"), ("I don't know", "yes"), ("Nope", "yes"),
        ("Yes. No.", "yes"), ("There is not a dog", "no"), ("no, there isn't", "no"),
    ],
)  # fmt: skip
def test_pope_parse_table(out, parsed):
    assert pope_parse(out) == parsed


def test_binary_metrics_toy():
    m = binary_metrics(["yes", "yes", "yes", "no", "no"], ["yes", "yes", "no", "yes", "no"])
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 1)
    assert m["precision"] == pytest.approx(66.6667, abs=1e-4)
    assert m["recall"] == pytest.approx(66.6667, abs=1e-4)
    assert m["f1"] == pytest.approx(66.6667, abs=1e-4)
    assert m["accuracy"] == pytest.approx(60.0)
    assert m["yes_ratio"] == pytest.approx(60.0)


def test_no_yes_predictions_does_not_divide_by_zero():
    m = binary_metrics(["yes", "no"], ["no", "no"])
    assert m["precision"] == 0.0 and m["f1"] == 0.0 and m["accuracy"] == 50.0


def test_pope_fixture_llava13b(fixtures13b):
    d = fixtures13b / "pope"
    res = score_files("pope", d / "answers" / "llava-v1.5-13b.jsonl", [d / "llava_pope_test.jsonl", d / "coco"])
    assert round(res["headline"]["value"], 3) == 85.947
    expect = {
        "adversarial": (1182, 117, 1383, 318, 0.844587, 0.855000, 0.909931, 0.7880, 0.433000),
        "popular": (1182, 59, 1441, 318, 0.862459, 0.874333, 0.952458, 0.7880, 0.413667),
        "random": (1182, 31, 1379, 318, 0.871360, 0.880069, 0.974444, 0.7880, 0.416838),
    }
    for split, (tp, fp, tn, fn, f1, acc, p, r, yes) in expect.items():
        s = res["splits"][split]
        assert (s["tp"], s["fp"], s["tn"], s["fn"]) == (tp, fp, tn, fn)
        for key, want in (("f1", f1), ("accuracy", acc), ("precision", p), ("recall", r), ("yes_ratio", yes)):
            assert s[key] / 100 == pytest.approx(want, abs=5e-7), (split, key)
    assert res["counts"]["missing"] == 0


def test_pope_join_is_by_id_not_position(fixtures13b, tmp_path):
    d = fixtures13b / "pope"
    lines = (d / "answers" / "llava-v1.5-13b.jsonl").read_text().splitlines()
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join(reversed(lines)) + "\n")
    res = score_files("pope", shuffled, [d / "llava_pope_test.jsonl", d / "coco"])
    assert round(res["headline"]["value"], 3) == 85.947


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_pope_missing_answer_counts_as_wrong(tmp_path):
    _write_jsonl(tmp_path / "coco_pope_random.json", [
        {"question_id": 1, "image": "a.jpg", "text": "Is there a dog in the image?", "label": "yes"},
        {"question_id": 2, "image": "a.jpg", "text": "Is there a cat in the image?", "label": "no"},
    ])
    _write_jsonl(tmp_path / "llava_pope_test.jsonl", [
        {"question_id": 10000001, "image": "a.jpg", "text": "Is there a dog in the image?", "category": "random"},
        {"question_id": 10000002, "image": "a.jpg", "text": "Is there a cat in the image?", "category": "random"},
    ])
    answers = tmp_path / "answers.jsonl"
    _write_jsonl(answers, [{"question_id": 10000002, "prompt": "x", "text": "No"}])
    res = score_files("pope", answers, [tmp_path])
    assert res["counts"]["missing"] == 1
    s = res["splits"]["random"]
    assert (s["tp"], s["fp"], s["tn"], s["fn"]) == (0, 0, 1, 1)
