"""MMStar, AI2D and HallusionBench (rule-based): tables and aggregates of BENCHMARKS.md §12-§14."""

from __future__ import annotations

import pytest

from grace.eval import get_benchmark
from grace.eval.ai2d import ai2d_correct
from grace.eval.base import Item
from grace.eval.hallusion import hallusion_metrics
from grace.eval.mmstar import mmstar_correct
from grace.eval.yesno import yes_no


@pytest.mark.parametrize(
    "pred,gt,ok",
    [("A", "A", True), ("(B) cat", "B", True), ("Option C", "C", True), ("The answer is D.", "D", True),
     ("The correct answer is B", "B", False), ("Answer: B", "A", True), ("Answer: B", "B", False), ("", "A", False)],
)
def test_mmstar_table(pred, gt, ok):
    assert mmstar_correct(pred, gt) is ok


def test_mmstar_aggregate_micro():
    items, ans = [], {}
    for c in range(6):
        for i in range(250):
            k = f"{c}-{i}"
            items.append(Item(k, k, "q", None, {"answer": "A", "category": f"cat{c}", "l2": f"l2{c}"}))
            ans[k] = {"text": "A" if (c < 3 or i < 0) else "B"}
    res = get_benchmark("mmstar").score(items, ans)
    assert res["headline"]["value"] == 50.0
    assert res["metrics"]["category/cat0"] == 100.0 and res["metrics"]["category/cat5"] == 0.0


@pytest.mark.parametrize(
    "resp,ok", [("B", True), ("B. 4", True), ("(B)", True), ("b", True), (" B.", True), ("The answer is B", False),
                ("B) 4", False)]
)
def test_ai2d_table(resp, ok):
    assert ai2d_correct(resp, "B") is ok


def test_ai2d_aggregate():
    items = [Item(str(i), i, "q", None, {"answer": "B", "choices": {"A": "x", "B": "y"}}) for i in range(4)]
    res = get_benchmark("ai2d").score(items, {str(i): {"text": "B" if i < 3 else "A"} for i in range(4)})
    assert res["headline"]["value"] == 75.0


@pytest.mark.parametrize(
    "out,ex",
    [("Yes, the circles are the same size.", "Yes"), ("No.", "No"), ("YES!", "Yes"), ("There is no cat", "No"),
     ("I cannot tell.", "Unknown"), ("Yes and no", "Unknown"), ("Not really", "Unknown"), ("Nope", "Unknown"),
     ("No, it is not. Yes it is.", "Unknown")],
)
def test_yes_no_table(out, ex):
    assert yes_no(out) == ex


def test_hallusion_toy1():
    rows = [(True, "VD_illusion", "0", "0", "0"), (True, "VD_illusion", "0", "0", "1"),
            (False, "VD_illusion", "0", "1", "0"), (True, "VD_illusion", "0", "1", "1")]
    m = hallusion_metrics(rows)
    assert (m["aAcc"], m["fAcc"], m["qAcc"]) == (75.0, 50.0, 50.0)


def test_hallusion_toy2_aacc_qacc():
    # Toy 2 with the unclear no-image answer counted as correct, as the official judge does.
    rows = [(True, "VS_chart", "0", "0", "0"), (True, "VS_chart", "0", "1", "0"), (False, "VS_chart", "0", "2", "0")]
    m = hallusion_metrics(rows)
    assert m["aAcc"] == pytest.approx(66.667, abs=1e-3) and m["qAcc"] == 0.0
    # fAcc over the two image figures only (figure 0 excluded upstream)
    assert hallusion_metrics(rows[1:])["fAcc"] == 50.0


def test_hallusion_official_json_skips_text_only(tmp_path):
    import json

    rows = [
        {"category": "VD", "subcategory": "illusion", "visual_input": "1", "set_id": "0", "figure_id": "0",
         "question_id": "0", "question": "Is A longer?", "gt_answer": "1", "filename": "./hallusion_bench/VD/a.png"},
        {"category": "VD", "subcategory": "illusion", "visual_input": "0", "set_id": "0", "figure_id": "0",
         "question_id": "1", "question": "Is B longer?", "gt_answer": "0", "filename": None},
    ]  # fmt: skip
    (tmp_path / "HallusionBench.json").write_text(json.dumps(rows))
    ans = tmp_path / "a.jsonl"
    ans.write_text(json.dumps({"question_id": "VD_illusion_0_0_0", "prompt": "Is A longer?", "text": "Yes."}) + "\n")
    from grace.eval import score_files

    res = score_files("hallusionbench", ans, [tmp_path / "HallusionBench.json"])
    assert res["counts"]["questions"] == 1
    assert res["metrics"]["aAcc"] == 100.0
    assert "rule-based" in res["protocol"]
