"""``grace eval run`` end to end on a real (tiny, random) LLaVA through the CLI: POPE and synthvqa.

A random model answers gibberish, so these tests check what the runner must guarantee whatever the
answers are: one answer record per question with the LLaVA answer fields, a results JSON whose
counts match, scores in range, and a rerun that resumes from the answer file (no new generation;
a larger ``--limit`` generates only the new questions).
"""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from grace.cli.main import app

SHORT = "\nAnswer the question using a single word or phrase."
OBJECTS = ["dog", "cat", "car", "cup"]


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    d = tmp_path_factory.mktemp("model") / "tiny-llava"
    r = CliRunner().invoke(app, ["init-tiny", "--family", "llava", "--out", str(d)])
    assert r.exit_code == 0, r.output
    return d


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _pope_data(root, n=4):
    """LLaVA's POPE layout: llava_pope_test.jsonl (ids 10^7 * split + n) + coco_pope_<split>.json labels."""
    d = root / "pope"
    labels, questions = [], []
    for i in range(1, n + 1):
        img = f"COCO_val2014_{i:012d}.jpg"
        (d / "images").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (48, 40), (40 * i, 200 - 30 * i, 90)).save(d / "images" / img, format="PNG")
        q = f"Is there a {OBJECTS[(i - 1) % len(OBJECTS)]} in the image?"
        labels.append({"question_id": i, "image": img, "text": q, "label": "yes" if i % 2 else "no"})
        questions.append({"question_id": 10_000_000 + i, "image": img, "text": q + SHORT, "category": "random"})
    _jsonl(d / "coco_pope_random.json", labels)
    _jsonl(d / "llava_pope_test.jsonl", questions)
    return d


def _run(model, bench, data, out, limit):
    data_args = [a for p in (data if isinstance(data, list) else [data]) for a in ("--data", str(p))]
    r = CliRunner().invoke(app, ["eval", "run", "--model", str(model), "--bench", bench, *data_args,
                                 "--out", str(out), "--limit", str(limit), "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    answers = [json.loads(x) for x in (out / f"{bench}_answers.jsonl").read_text().splitlines()]
    results = json.loads((out / f"{bench}_results.json").read_text())
    return answers, results


def test_pope_on_a_real_tiny_llava_and_resume(tiny_llava, tmp_path):
    data, out = _pope_data(tmp_path), tmp_path / "out"
    answers, res = _run(tiny_llava, "pope", data, out, 2)
    assert [a["question_id"] for a in answers] == [10_000_001, 10_000_002]
    for a in answers:
        assert set(a) >= {"question_id", "prompt", "text", "model_id", "category"}
        assert isinstance(a["text"], str) and a["prompt"].endswith(SHORT) and a["category"] == "random"
    run = res["run"]
    assert (run["questions"], run["resumed"], run["generated"], run["missing_images"]) == (2, 0, 2, 0)
    assert run["family"] == "llava" and run["limit"] == 2 and run["max_new_tokens"] == 128
    s = res["splits"]["random"]
    assert s["n"] == 2 and s["tp"] + s["fp"] + s["tn"] + s["fn"] == 2 and 0.0 <= s["f1"] <= 100.0
    assert res["benchmark"] == "pope" and 0.0 <= res["headline"]["value"] <= 100.0

    # the answers are the model's own greedy output for those prompts (same batch of two)
    import grace

    vlm = grace.load(tiny_llava)
    rows = [json.loads(x) for x in (data / "llava_pope_test.jsonl").read_text().splitlines()[:2]]
    images = [Image.open(data / "images" / r["image"]).convert("RGB") for r in rows]
    direct = vlm.generate_batch(images, [r["text"] for r in rows], max_new_tokens=128)
    assert [a["text"] for a in answers] == [t.strip() for t in direct]

    # same run again: everything comes from the answer file
    again, res2 = _run(tiny_llava, "pope", data, out, 2)
    assert again == answers
    assert (res2["run"]["resumed"], res2["run"]["generated"]) == (2, 0)
    assert res2["headline"] == res["headline"]
    # a larger limit generates only the new question
    more, res3 = _run(tiny_llava, "pope", data, out, 3)
    assert more[:2] == answers and [a["question_id"] for a in more[2:]] == [10_000_003]
    assert (res3["run"]["questions"], res3["run"]["resumed"], res3["run"]["generated"]) == (3, 2, 1)
    assert res3["splits"]["random"]["n"] == 3


def test_synthvqa_on_a_real_tiny_llava(tiny_llava, tmp_path):
    from grace.data.synthetic import WorldConfig, generate_world

    cfg = WorldConfig(seed=3, n_train_images=1, n_val_images=1, n_test_images=2, questions_per_image=2)
    info = generate_world(cfg, tmp_path / "world", progress=False)
    test = [info["test"]["questions"], info["test"]["annotations"]]  # the test split only
    assert len(open(test[0]).read().splitlines()) == 4
    out = tmp_path / "out"
    answers, res = _run(tiny_llava, "synthvqa", test, out, 3)
    assert len(answers) == 3 and len({a["question_id"] for a in answers}) == 3
    assert all(isinstance(a["text"], str) and a["prompt"] for a in answers)
    run = res["run"]
    assert (run["questions"], run["resumed"], run["generated"], run["missing_images"]) == (3, 0, 3, 0)
    assert 0.0 <= res["headline"]["value"] <= 100.0
    again, res2 = _run(tiny_llava, "synthvqa", test, out, 3)
    assert again == answers and (res2["run"]["resumed"], res2["run"]["generated"]) == (3, 0)
