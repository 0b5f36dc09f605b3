"""MME: the official parsing table, acc/acc+ arithmetic and both real fixtures."""

from __future__ import annotations

import json

import pytest

from grace.eval import get_benchmark, score_files
from grace.eval.mme import PERCEPTION, mme_parse, mme_subtask_score


@pytest.mark.parametrize(
    "resp,parsed",
    [
        ("yes", "yes"), ("no", "no"), ("yes, it is", "yes"), ("not really", "no"), ("none", "no"), ("nope", "no"),
        ("there is a dog", "other"), ("i think yes", "other"), ("sure", "other"), ("y", "other"),
        ("Yes", "yes"), ("NO.", "no"),
    ],
)  # fmt: skip
def test_mme_parse_table(resp, parsed):
    assert mme_parse(resp) == parsed


def test_subtask_125():
    s = mme_subtask_score([[("yes", "yes"), ("no", "no")], [("yes", "yes"), ("no", "yes")]])
    assert (s["acc"], s["acc_plus"], s["score"]) == (75.0, 50.0, 125.0)


def test_perception_1925(tmp_path):
    # One subtask 125, the other nine perfect -> 1925 (checked upstream with calculation.py).
    lines = {}
    for t in PERCEPTION:
        rows = [(f"{t}_a.jpg", "Q1? Please answer yes or no.", "Yes", "yes"),
                (f"{t}_a.jpg", "Q2? Please answer yes or no.", "No", "no"),
                (f"{t}_b.jpg", "Q1? Please answer yes or no.", "Yes", "yes"),
                (f"{t}_b.jpg", "Q2? Please answer yes or no.", "No", "no")]
        if t == "count":
            rows[3] = rows[3][:3] + ("yes",)
        lines[t] = rows
    d = tmp_path / "results"
    d.mkdir()
    for t, rows in lines.items():
        (d / f"{t}.txt").write_text("".join("\t".join(r) + "\n" for r in rows))
    res = score_files("mme", d)
    assert res["metrics"]["count/score"] == 125.0
    assert res["headline"]["value"] == 1925.0
    assert res["metrics"]["cognition"] == 0.0


def test_mme_fixture_llava13b(fixtures13b):
    d = fixtures13b / "MME"
    res = score_files("mme", d / "answers" / "llava-v1.5-13b.jsonl", [d / "llava_mme.jsonl", d / "gt_templates"])
    assert round(res["metrics"]["perception"], 3) == 1531.319
    assert round(res["metrics"]["cognition"], 3) == 295.357
    table = {
        "existence": 185.0, "count": 155.0, "position": 133.33, "color": 170.0, "posters": 160.54,
        "celebrity": 152.94, "scene": 161.25, "landmark": 170.5, "artwork": 117.75, "OCR": 125.0,
        "commonsense_reasoning": 127.86, "numerical_calculation": 42.5, "text_translation": 77.5,
        "code_reasoning": 47.5,
    }  # fmt: skip
    for t, v in table.items():
        assert round(res["metrics"][f"{t}/score"], 2) == v, t
    assert res["counts"]["missing"] == 0 and res["counts"]["unmatched_answers"] == 0


def test_mme_fixture_answers_alone_with_templates(fixtures13b):
    # Without the question file the items come from the GT templates; the score is the same.
    d = fixtures13b / "MME"
    res = score_files("mme", d / "answers" / "llava-v1.5-13b.jsonl", [d / "gt_templates"])
    assert round(res["metrics"]["perception"], 3) == 1531.319
    assert round(res["metrics"]["cognition"], 3) == 295.357


def test_mme_fixture_lavin_tool_sample(fixtures13b):
    res = score_files("mme", fixtures13b / "MME" / "lavin_sample")
    assert round(res["metrics"]["perception"], 3) == 963.611
    assert round(res["metrics"]["cognition"], 3) == 249.643


def test_mme_reordered_answers_score_the_same(fixtures13b, tmp_path):
    d = fixtures13b / "MME"
    lines = (d / "answers" / "llava-v1.5-13b.jsonl").read_text().splitlines()
    p = tmp_path / "rev.jsonl"
    p.write_text("\n".join(reversed(lines)) + "\n")
    res = score_files("mme", p, [d / "llava_mme.jsonl", d / "gt_templates"])
    assert round(res["metrics"]["perception"], 3) == 1531.319


def test_mme_key_ignores_two_space_please(tmp_path):
    b = get_benchmark("mme")
    rec = {"question_id": "color/000000012120.jpg",
           "prompt": "Is there a red coat in the image?\nAnswer the question using a single word or phrase."}
    assert b.answer_key(rec) == b.answer_key(
        {"question_id": "color/000000012120.jpg", "prompt": "Is there a red coat in the image?  Please answer yes or no."}
    )
    assert json.dumps(rec)  # records stay JSON-serialisable
