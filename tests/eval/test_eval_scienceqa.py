"""ScienceQA-IMG: LLaVA's letter rule, the IMG-denominator quirk and the real fixture (71.641)."""

from __future__ import annotations

import json

import pytest

from grace.eval import score_files
from grace.eval.scienceqa import count_options, sqa_parse, sqa_pred_index


@pytest.mark.parametrize(
    "out,n,letter,index",
    [
        ("B", 3, "B", 1), ("B. apostrophe", 2, "B", 1), ("The answer is C.", 4, "C", 2),
        ("The answer is C", 4, "FAILED", -1), ("C", 2, "C", -1), ("E", 5, "E", 4), ("b", 2, "FAILED", -1),
        ("B.", 2, "FAILED", -1), ("A) foo", 2, "FAILED", -1), ("The answer is A. The answer is B.", 3, "FAILED", -1),
    ],
)  # fmt: skip
def test_sqa_parse_table(out, n, letter, index):
    assert sqa_parse(out) == letter
    assert sqa_pred_index(letter, n) == index


def test_count_options_multiline():
    text = "Select the desert ecosystem.\nA. This ecosystem has:\nlittle rain\nB. This ecosystem has:\nwater"
    assert count_options(text) == 2
    assert count_options("Which?\nA. x\nB. y\nC. z") == 3


def _cqm(tmp_path, items):
    p = tmp_path / "llava_test_CQM-A.json"
    p.write_text(json.dumps(items))
    return p


def test_sqa_aggregate_toy(tmp_path):
    items = []
    for i, has_img in enumerate([True, True, False, False]):
        v = ("<image>\n" if has_img else "") + f"Q{i}?\nA. x\nB. y"
        it = {"id": str(i), "conversations": [{"from": "human", "value": v}, {"from": "gpt", "value": "A"}]}
        if has_img:
            it["image"] = f"{i}/image.png"
        items.append(it)
    q = _cqm(tmp_path, items)
    suffix = "\nAnswer with the option's letter from the given choices directly."
    answers = tmp_path / "answers.jsonl"
    rows = [
        {"question_id": "0", "prompt": "<image>\nQ0?\nA. x\nB. y" + suffix, "text": "A"},
        {"question_id": "1", "prompt": "<image>\nQ1?\nA. x\nB. y" + suffix, "text": "B"},
        {"question_id": "2", "prompt": "Q2?\nA. x\nB. y" + suffix, "text": "A"},
        {"question_id": "3", "prompt": "Q3?\nA. x\nB. y" + suffix, "text": "A. x"},
    ]
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = score_files("scienceqa", answers, [q])
    assert res["metrics"]["accuracy"] == 75.0
    assert res["headline"]["value"] == 50.0


def test_missing_answer_leaves_img_denominator_like_upstream(tmp_path):
    items = [{"id": "0", "image": "0/image.png",
              "conversations": [{"from": "human", "value": "<image>\nQ?\nA. x\nB. y"}, {"from": "gpt", "value": "A"}]},
             {"id": "1", "image": "1/image.png",
              "conversations": [{"from": "human", "value": "<image>\nQ?\nA. x\nB. y"}, {"from": "gpt", "value": "A"}]}]
    q = _cqm(tmp_path, items)
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"question_id": "0", "prompt": "<image>\nQ?", "text": "A"}) + "\n")
    res = score_files("scienceqa", answers, [q])
    assert res["counts"]["img_total"] == 1 and res["headline"]["value"] == 100.0
    assert res["metrics"]["accuracy"] == 50.0
    assert res["counts"]["missing"] == 1


def test_sqa_fixture_llava13b(fixtures13b):
    d = fixtures13b / "scienceqa"
    res = score_files("scienceqa", d / "answers" / "llava-v1.5-13b_output.jsonl", [d / "llava_test_CQM-A.json"])
    assert round(res["headline"]["value"], 3) == 71.641
    assert (res["counts"]["img_correct"], res["counts"]["img_total"]) == (1445, 2017)
    assert (res["counts"]["correct"], res["counts"]["total"]) == (3155, 4241)
    assert round(res["metrics"]["accuracy"], 3) == 74.393
