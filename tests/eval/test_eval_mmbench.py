"""MMBench: VLMEvalKit exact-matching extraction, circular groups and the real fixture (67.687)."""

from __future__ import annotations

import pytest

from grace.eval import get_benchmark, score_files
from grace.eval.base import Item
from grace.eval.mcq import can_infer

CHOICES = {"A": "teddy bear", "B": "rabbit", "C": "cat", "D": "dog"}


@pytest.mark.parametrize(
    "out,letter",
    [
        ("B", "B"), ("B.", "B"), ("The answer is B", "B"), ("(C)", "C"), ("C. cat", "C"), ("Answer: D", "D"),
        ("a cute teddy bear", "A"), ("I think it is a rabbit or a cat", None), ("b", None),
        ("The answer is b", "B"), ("B is correct because the image clearly shows a rabbit", None),
        ("Cannot determine the answer", "Z"),
    ],
)  # fmt: skip
def test_can_infer_table(out, letter):
    assert can_infer(out, CHOICES) == letter


def _item(index, answer, n):
    letters = "ABCD"[:n]
    return Item(str(index), index, "q", None, {
        "answer": answer, "choices": {L: f"opt{L}" for L in letters}, "group": str(index % 1_000_000),
        "main": index < 1_000_000, "category": "c", "l2": "l"})


def test_circular_toy():
    items = [_item(5, "A", 2), _item(1000005, "B", 2),
             _item(7, "C", 3), _item(1000007, "A", 3), _item(2000007, "B", 3),
             _item(9, "B", 2), _item(1000009, "A", 2)]
    outs = {"5": "A", "1000005": "B", "7": "C", "1000007": "A", "2000007": "C", "9": "B", "1000009": "I cannot tell"}
    res = get_benchmark("mmbench").score(items, {k: {"text": v} for k, v in outs.items()})
    assert round(res["headline"]["value"], 2) == 33.33
    assert res["metrics"]["vanilla_main_rows"] == 100.0


def test_mmbench_fixture_upload_xlsx(fixtures13b):
    res = score_files("mmbench", fixtures13b / "mmbench" / "upload.xlsx")
    assert (res["counts"]["groups_passed"], res["counts"]["groups"]) == (796, 1176)
    assert round(res["headline"]["value"], 3) == 67.687
    assert round(res["metrics"]["vanilla_main_rows"], 2) == 75.43


def test_mmbench_fixture_llava_jsonl_against_xlsx_answers(fixtures13b):
    d = fixtures13b / "mmbench"
    res = score_files("mmbench", d / "answers" / "mmbench_dev_20230712" / "llava-v1.5-13b.jsonl", [d / "upload.xlsx"])
    assert round(res["headline"]["value"], 3) == 67.687
    assert res["counts"]["missing"] == 0
