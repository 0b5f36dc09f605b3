"""MMMU: the official MC and open parsers, the aggregate rule and the real fixture (36.667)."""

from __future__ import annotations

import json
import random

import pytest

from grace.eval import get_benchmark, score_files
from grace.eval.base import Item
from grace.eval.mmmu import eval_open, mmmu_prompt, normalize_open, parse_mc, parse_open

OPTS = {"A": "dog", "B": "cat", "C": "bird", "D": "fish"}


@pytest.mark.parametrize(
    "out,letter",
    [
        ("(B)", "B"), ("B", "B"), ("The answer is C.", "C"), ("C.", "C"), ("Answer: D", "D"),
        ("A and B are both plausible, but B is right", "B"), ("(A) dog (B) cat", "B"),
        ("I think the picture shows a cat sitting on a sofa", "B"),
    ],
)  # fmt: skip
def test_parse_mc_table(out, letter):
    assert parse_mc(out, OPTS) == (letter, False)


def test_parse_mc_random_fallback_is_seeded():
    a = parse_mc("no idea", OPTS, random.Random(7))
    b = parse_mc("no idea", OPTS, random.Random(7))
    assert a == b and a[1] is True and a[0] in OPTS


@pytest.mark.parametrize(
    "resp,gt,ok",
    [
        ("The answer is 3.50", "3.5", True), ("1000", "1,000", True), ("It is paris.", "Paris", True),
        ("The value is 2.", "2", True), ("x = 12", "12", True), ("So the final answer is 25%", "25%", True),
        ("12 apples", "12", True), ("The answer is A", "A", True), ("approximately 0.333", "1/3", False),
    ],
)  # fmt: skip
def test_open_table(resp, gt, ok):
    assert eval_open(gt, parse_open(resp)) is ok


def test_open_list_ground_truth():
    assert eval_open(["24/7", "3.43"], parse_open("It is 3.43"))


def test_normalize_open():
    assert normalize_open("1,000") == [1000.0]
    assert normalize_open("3.456") == [3.46]
    assert normalize_open("A") == [" a", "a "]


def test_prompt_has_blank_line_before_instruction():
    p = mmmu_prompt("Q?", ["x", "y"], "multiple-choice")
    assert p == "Q?\n(A) x\n(B) y\n\nAnswer with the option's letter from the given choices directly."
    assert mmmu_prompt("Q?", None, "open") == "Q?\nAnswer the question using a single word or phrase."


def test_aggregate_is_instance_level():
    items, answers = [], {}
    for subject, n_right in (("Art", 15), ("Math", 6)):
        for i in range(30):
            k = f"validation_{subject}_{i + 1}"
            items.append(Item(k, k, "", None, {"type": "multiple-choice", "gold": "A", "options": {}}))
            answers[k] = {"text": "A" if i < n_right else "B"}
    res = get_benchmark("mmmu").score(items, answers)
    assert res["headline"]["value"] == pytest.approx(35.0)
    assert res["metrics"]["subject/Art"] == 50.0
    assert res["metrics"]["discipline/Science"] == 20.0


def test_mmmu_fixture_llava13b(fixtures13b):
    d = fixtures13b / "mmmu"
    res = score_files("mmmu", d / "total_val_output.json", [d / "answer_dict_val.json"])
    assert (res["counts"]["correct"], res["counts"]["scored"]) == (330, 900)
    assert round(res["headline"]["value"], 3) == 36.667
    want = {"Art & Design": 0.525, "Business": 0.227, "Science": 0.293, "Health & Medicine": 0.387,
            "Humanities & Social Science": 0.55, "Tech & Engineering": 0.31}
    for disc, v in want.items():
        assert round(res["metrics"][f"discipline/{disc}"] / 100, 3) == v, disc


def test_mmmu_open_answers_are_parsed_from_raw_responses(tmp_path):
    ans = tmp_path / "answer_dict_val.json"
    ans.write_text(json.dumps({"validation_Math_1": {"question_type": "short-answer", "ground_truth": "12"},
                               "validation_Math_2": {"question_type": "multiple-choice", "ground_truth": "B"}}))
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"validation_Math_1": "x = 12", "validation_Math_2": "B"}))
    res = score_files("mmmu", preds, [ans])
    assert res["headline"]["value"] == 100.0
