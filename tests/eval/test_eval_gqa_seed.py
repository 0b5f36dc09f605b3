"""GQA and SEED-Bench: the hand-worked rules and aggregates of BENCHMARKS.md §3 and §8."""

from __future__ import annotations

import json

import pytest

from grace.eval import score_files
from grace.eval.gqa import gqa_correct, gqa_metrics
from grace.eval.seed import seed_correct, seed_metrics


@pytest.mark.parametrize(
    "pred,gt,ok",
    [("Yes.", "yes", True), ("Left", "left", True), ("The cat.", "cat", False), ("t-shirt", "t-shirt", True),
     ("T shirt", "t-shirt", False)],
)
def test_gqa_table(pred, gt, ok):
    assert gqa_correct(pred, gt) is ok


def test_gqa_aggregate():
    m = gqa_metrics([(True, "verify", "attr"), (True, "query", "rel"), (True, "query", "rel"), (False, "choose", "obj")])
    assert m["accuracy"] == 75.0
    assert m["open"] == 100.0 and m["binary"] == 50.0


def test_gqa_end_to_end_only_balanced_count(tmp_path):
    gt = {
        "1": {"answer": "yes", "isBalanced": True, "types": {"structural": "verify", "semantic": "attr"},
              "question": "Is it?", "imageId": "n1"},
        "2": {"answer": "left", "isBalanced": True, "types": {"structural": "query", "semantic": "rel"},
              "question": "Which side?", "imageId": "n1"},
        "3": {"answer": "cat", "isBalanced": False, "types": {"structural": "query", "semantic": "obj"},
              "question": "What?", "imageId": "n2"},
    }  # fmt: skip
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps(gt))
    ans = tmp_path / "a.jsonl"
    ans.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question_id": "1", "prompt": "Is it?", "text": "Yes."},
        {"question_id": "2", "prompt": "Which side?", "text": "Right"},
        {"question_id": "3", "prompt": "What?", "text": "cat"}]))
    res = score_files("gqa", ans, [tmp_path / "testdev_balanced_questions.json"])
    assert res["headline"]["value"] == 50.0
    assert res["counts"]["scored"] == 2


@pytest.mark.parametrize("out,ok", [("A", True), ("A.", False), ("a", False), ("The answer is A", False)])
def test_seed_table(out, ok):
    assert seed_correct(out, "A") is ok


def test_seed_aggregate_is_micro():
    m = seed_metrics([(True, 1, False), (True, 1, False), (False, 1, False), (True, 5, False)])
    assert m["image_accuracy"] == 75.0
    assert m["1. Scene Understanding"] == pytest.approx(66.6667, abs=1e-4)
    assert m["5. Instances Counting"] == 100.0


def test_seed_upload_jsonl_against_official_json(tmp_path):
    seed = {"questions": [
        {"question_id": "101", "question_type_id": 1, "data_type": "image", "data_id": "1.jpg", "answer": "A",
         "question": "q", "choice_a": "a", "choice_b": "b", "choice_c": "c", "choice_d": "d"},
        {"question_id": "102", "question_type_id": 10, "data_type": "video", "data_id": "v.mp4", "answer": "B",
         "question": "q", "choice_a": "a", "choice_b": "b", "choice_c": "c", "choice_d": "d"}]}
    (tmp_path / "SEED-Bench.json").write_text(json.dumps(seed))
    up = tmp_path / "upload.jsonl"
    up.write_text(json.dumps({"question_id": "101", "prediction": "A"}) + "\n"
                  + json.dumps({"question_id": "102", "prediction": "A"}) + "\n")
    res = score_files("seed", up, [tmp_path / "SEED-Bench.json"])
    assert res["headline"]["value"] == 100.0
    assert res["metrics"]["video_accuracy"] == 0.0 and res["metrics"]["all_accuracy"] == 50.0


def test_seed_fixture_answers_parse(fixtures13b):
    # No SEED-Bench.json in the fixtures (too large); check LLaVA's upload file reads and ids join.
    from grace.eval.base import read_answer_records

    recs = read_answer_records(fixtures13b / "seed_bench" / "answers_upload" / "llava-v1.5-13b.jsonl")
    assert len(recs) == 19242
    assert {r["text"] for r in recs} <= {"A", "B", "C", "D"}
