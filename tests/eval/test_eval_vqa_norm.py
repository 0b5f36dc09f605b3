"""VQA normalisation and soft scores: the hand-worked cases of BENCHMARKS.md §2 and §4."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grace.eval.vqa_norm import (
    evalai_normalize,
    leave_one_out_score,
    official_normalize,
    textvqa_accuracy,
    vqa_official_accuracy,
)
from grace.eval.vqav2 import vqav2_question_score


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Two.", "2"), ("The cat", "cat"), ("dont", "don't"), ("1,000", "1000"), ("3.5", "3.5"),
        ("yes!", "yes"), ("black-and-white", "black and white"), ("t-shirt", "t shirt"),
        ("t-shirt - red", "tshirt red"), ("man's", "man 's"), ("Coca-Cola.", "coca cola"), ("A dog.", "dog"),
        ("Ten", "10"), ("none", "0"), ("a/b", "b"), ("U.S.", "us"), ("1.", "1"), ("(left)", "left"),
        ("50%", "50%"),
    ],
)  # fmt: skip
def test_evalai_normalize_table(text, expected):
    assert evalai_normalize(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [("t-shirt - red", "tshirt red"), ("1,000", "1000"), ("U.S.", "us"), ("a/b", "b"), ("1,000.5", "1000.5")],
)
def test_official_normalize_agrees_where_documented(text, expected):
    assert official_normalize(text) == expected


def test_period_removal_is_capped_at_32_like_upstream():
    # upstream passes re.UNICODE (32) as the count argument of re.sub
    s = "." * 40
    assert evalai_normalize(s) == "." * 8


GT_23 = ["2", "2", "two", "3", "3", "3", "3", "3", "3", "3"]


@pytest.mark.parametrize("pred,score", [("2", 0.9), ("Two", 0.9), ("3", 1.0), ("4", 0.0)])
def test_vqav2_counts(pred, score):
    assert vqav2_question_score(pred, GT_23) == pytest.approx(score)
    # same under the official rule alone
    assert vqa_official_accuracy(evalai_normalize(pred), GT_23) == pytest.approx(score)


@pytest.mark.parametrize("pred", ["Yes", "yes."])
def test_all_agree_gt_is_not_normalised_by_official_rule(pred):
    gts = ["yes"] * 10
    assert vqa_official_accuracy(pred, gts) == 0.0  # official raw: no normalisation when GT agree
    assert vqav2_question_score(pred, gts) == 1.0  # LLaVA flow: EvalAI first


@pytest.mark.parametrize("k,score", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0)])
def test_k_matching_humans(k, score):
    gts = ["x"] * k + [f"other{i}" for i in range(10 - k)]
    assert vqav2_question_score("x", gts) == pytest.approx(score)


def test_comma_grouped_number():
    gts = ["1000", "1000", "1000", "1,000", "1,000"] + ["10"] * 5
    assert vqav2_question_score("1,000", gts) == pytest.approx(1.0)


TEXTVQA_GT = ["coca cola", "coca cola", "coke", "pepsi", "pepsi", "pepsi", "pepsi", "sprite", "fanta", "water"]


@pytest.mark.parametrize(
    "pred,score",
    [("Coca-Cola.", 0.6), ("coke", 0.3), ("Pepsi", 1.0), ("PEPSI!", 1.0), ("sprite", 0.3), ("dr pepper", 0.0)],
)
def test_textvqa_table(pred, score):
    assert textvqa_accuracy(pred, TEXTVQA_GT) == pytest.approx(score)


def test_textvqa_mean():
    preds = ["Coca-Cola.", "Pepsi", "dr pepper"]
    mean = sum(textvqa_accuracy(p, TEXTVQA_GT) for p in preds) / 3
    assert mean == pytest.approx(0.53333, abs=1e-5)


def test_textvqa_normalises_gt_too():
    assert textvqa_accuracy("man's", ["man's"] * 10) == 1.0


def _brute_leave_one_out(pred, gts):
    accs = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1 :]
        accs.append(min(1.0, sum(1 for g in others if g == pred) / 3))
    return sum(accs) / len(accs)


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=10, max_size=10), st.sampled_from(["a", "b", "d"]))
def test_closed_form_equals_leave_one_out(gts, pred):
    assert leave_one_out_score(pred, gts) == pytest.approx(_brute_leave_one_out(pred, gts))
