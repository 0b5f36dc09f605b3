"""TextVQA and GQA answer files of LLaVA-1.5-13B: no annotation files ship with the fixtures (too
large), so these check the joins that would feed the scorer: every prompt yields its question key."""

from __future__ import annotations

import json

from grace.eval import get_benchmark, score_files
from grace.eval.base import read_answer_records
from grace.eval.textvqa import question_from_prompt


def test_textvqa_fixture_prompts_give_join_keys(fixtures13b):
    recs = read_answer_records(fixtures13b / "textvqa" / "answers" / "llava-v1.5-13b.jsonl")
    assert len(recs) == 5000
    b = get_benchmark("textvqa")
    keys = {b.answer_key(r) for r in recs}
    assert len(keys) == 5000  # (image id, question) is unique across the val answers
    assert question_from_prompt(recs[0]["prompt"]) == "what is the brand of this camera?"


def test_textvqa_scores_against_a_toy_annotation(fixtures13b, tmp_path):
    recs = read_answer_records(fixtures13b / "textvqa" / "answers" / "llava-v1.5-13b.jsonl")[:2]
    data = []
    for r in recs:
        q = question_from_prompt(r["prompt"])
        data.append({"image_id": r["question_id"], "question": q, "question_id": 0,
                     "answers": [r["text"].lower()] * 3 + ["zzz"] * 7})
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": data}))
    res = score_files("textvqa", fixtures13b / "textvqa" / "answers" / "llava-v1.5-13b.jsonl",
                      [tmp_path / "TextVQA_0.5.1_val.json"])
    # 2 annotated questions, both matched by 3 humans -> 0.9 each; the other 4,998 answers are unmatched
    assert res["counts"]["questions"] == 2 and res["counts"]["unmatched_answers"] == 4998
    assert abs(res["headline"]["value"] - 90.0) < 1e-9


def test_gqa_fixture_answers_read(fixtures13b):
    recs = read_answer_records(fixtures13b / "gqa" / "answers" / "llava_gqa_testdev_balanced" / "llava-v1.5-13b.jsonl")
    assert len(recs) == 12578 and isinstance(recs[0]["question_id"], str)
