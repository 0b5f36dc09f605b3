"""The runner over the official JSON layouts (VQAv2, GQA, TextVQA, SEED, HallusionBench, MME release
folder) and a Parquet POPE: prompts, image lookup and scores with a fake VLM."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from grace.eval import run_benchmark

SHORT = "\nAnswer the question using a single word or phrase."
MC = "\nAnswer with the option's letter from the given choices directly."


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (5, 5), (0, 120, 0)).save(path)


def _answer_from(table):
    def answer(image, query):
        assert image is not None
        for needle, out in table.items():
            if needle in query:
                return out
        return "???"

    return answer


def test_vqav2_official_files(tmp_path, fake_vlm):
    d = tmp_path / "vqav2"
    _png(d / "val2014" / "COCO_val2014_000000000042.jpg")
    qs = {"data_subtype": "val2014", "questions": [
        {"question_id": 1, "image_id": 42, "question": "How many dogs?"},
        {"question_id": 2, "image_id": 42, "question": "What color?"}]}
    anns = {"annotations": [
        {"question_id": 1, "image_id": 42, "answer_type": "number", "question_type": "how many",
         "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(["2"] * 3 + ["3"] * 7)]},
        {"question_id": 2, "image_id": 42, "answer_type": "other", "question_type": "what color",
         "answers": [{"answer": "green", "answer_id": i + 1} for i in range(10)]}]}
    d.mkdir(exist_ok=True)
    (d / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps(qs))
    (d / "v2_mscoco_val2014_annotations.json").write_text(json.dumps(anns))
    vlm = fake_vlm(_answer_from({"dogs": "Two", "color": "Green."}))
    res = run_benchmark(vlm, "vqav2", d, tmp_path / "out", progress=False)
    assert vlm.calls[0][1] == "How many dogs?" + SHORT
    assert res["headline"]["value"] == pytest.approx(95.0)  # 0.9 and 1.0
    assert res["metrics"]["answer_type/number"] == pytest.approx(90.0)


def test_gqa_official_files(tmp_path, fake_vlm):
    d = tmp_path / "gqa"
    _png(d / "images" / "n1.jpg")
    gt = {"201": {"question": "Is it sunny?", "imageId": "n1", "answer": "yes", "isBalanced": True,
                  "types": {"structural": "verify", "semantic": "global"}}}
    d.mkdir(exist_ok=True)
    (d / "testdev_balanced_questions.json").write_text(json.dumps(gt))
    res = run_benchmark(fake_vlm(_answer_from({"sunny": "Yes."})), "gqa", d, tmp_path / "out", progress=False)
    assert res["headline"]["value"] == 100.0 and res["run"]["missing_images"] == 0


def test_textvqa_annotation_file(tmp_path, fake_vlm):
    d = tmp_path / "textvqa"
    _png(d / "train_images" / "abc123.jpg")
    data = {"data": [{"image_id": "abc123", "question": "what brand is this?", "question_id": 7,
                      "answers": ["nikon"] * 4 + ["canon"] * 6, "ocr_tokens": ["NIKON", "F3"]}]}
    d.mkdir(exist_ok=True)
    (d / "TextVQA_0.5.1_val.json").write_text(json.dumps(data))
    vlm = fake_vlm(_answer_from({"brand": "Nikon"}))
    res = run_benchmark(vlm, "textvqa", d, tmp_path / "out", progress=False, image_dir=d / "train_images")
    assert vlm.calls[0][1] == "What brand is this?\nReference OCR token: NIKON, F3" + SHORT
    assert res["headline"]["value"] == 100.0


def test_seed_official_json(tmp_path, fake_vlm):
    d = tmp_path / "seed"
    _png(d / "SEED-Bench-image" / "img1.jpg")
    seed = {"questions": [{"question_id": "11", "question_type_id": 2, "data_type": "image", "data_id": "img1.jpg",
                           "question": "Who is it?", "choice_a": "a cat", "choice_b": "a dog", "choice_c": "x",
                           "choice_d": "y", "answer": "B"}]}
    d.mkdir(exist_ok=True)
    (d / "SEED-Bench.json").write_text(json.dumps(seed))
    vlm = fake_vlm(_answer_from({"Who": "B"}))
    res = run_benchmark(vlm, "seed", d, tmp_path / "out", progress=False)
    assert vlm.calls[0][1] == "Who is it?\nA. a cat\nB. a dog\nC. x\nD. y" + MC
    assert res["headline"]["value"] == 100.0 and res["metrics"]["2. Instance Identity"] == 100.0


def test_hallusionbench_official_json(tmp_path, fake_vlm):
    d = tmp_path / "hb"
    _png(d / "hallusion_bench" / "VD" / "illusion" / "0_0.png")
    _png(d / "hallusion_bench" / "VD" / "illusion" / "0_1.png")
    rows = []
    for fig in ("0", "1"):
        for q in ("0", "1"):
            rows.append({"category": "VD", "subcategory": "illusion", "visual_input": "1" if fig == "0" else "2",
                         "set_id": "0", "figure_id": fig, "question_id": q, "question": f"Q{q} on fig {fig}?",
                         "gt_answer": "1", "filename": f"./hallusion_bench/VD/illusion/0_{fig}.png"})
    d.mkdir(exist_ok=True)
    (d / "HallusionBench.json").write_text(json.dumps(rows))
    vlm = fake_vlm(lambda im, q: "No" if q == "Q0 on fig 1?" else "Yes, it is.")
    res = run_benchmark(vlm, "hallusionbench", d, tmp_path / "out", progress=False)
    m = res["metrics"]
    assert (m["aAcc"], m["fAcc"], m["qAcc"]) == (75.0, 50.0, 50.0)
    assert vlm.calls[0][1] == "Q0 on fig 0?"  # no suffix


def test_mme_release_folder_with_llava_questions(tmp_path, fake_vlm):
    root = tmp_path / "MME_Benchmark_release_version"
    _png(root / "count" / "0001.png")
    (root / "count" / "0001.txt").write_text("Are there two cats? Please answer yes or no.\tYes\n"
                                             "Are there three cats? Please answer yes or no.\tNo\n")
    _png(root / "scene" / "images" / "a1.jpg")
    (root / "scene" / "questions_answers_YN").mkdir(parents=True)
    (root / "scene" / "questions_answers_YN" / "a1.txt").write_text(
        "Is this a beach?  Please answer yes or no.\tYes\nIs this a forest? Please answer yes or no.\tNo\n")
    q = tmp_path / "llava_mme.jsonl"
    q.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question_id": "count/0001.png", "image": "count/0001.png", "text": "Are there two cats?" + SHORT,
         "category": "count"},
        {"question_id": "count/0001.png", "image": "count/0001.png", "text": "Are there three cats?" + SHORT,
         "category": "count"},
        {"question_id": "scene/images/a1.jpg", "image": "scene/images/a1.jpg", "text": "Is this a beach?" + SHORT,
         "category": "scene"},
        {"question_id": "scene/images/a1.jpg", "image": "scene/images/a1.jpg", "text": "Is this a forest?" + SHORT,
         "category": "scene"}]))
    vlm = fake_vlm(lambda im, qq: "Yes" if ("two" in qq or "beach" in qq) else "No")
    res = run_benchmark(vlm, "mme", [q, root], tmp_path / "out", progress=False)
    assert res["run"]["missing_images"] == 0
    assert res["metrics"]["count/score"] == 200.0 and res["metrics"]["scene/score"] == 200.0
    assert res["headline"]["value"] == 400.0


def test_pope_parquet(tmp_path, fake_batch_vlm):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    buf = io.BytesIO()
    Image.new("RGB", (3, 3)).save(buf, format="PNG")
    img_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    t = pa.table({
        "question_id": ["1", "2", "1", "2"],
        "question": ["Is there a dog in the image?", "Is there a cat in the image?"] * 2,
        "answer": ["yes", "no", "yes", "no"],
        "category": ["adversarial", "adversarial", "random", "random"],
        "image": pa.array([{"bytes": buf.getvalue(), "path": None}] * 4, type=img_t),
    })
    pq.write_table(t, tmp_path / "test-00000-of-00001.parquet")
    vlm = fake_batch_vlm(lambda im, q: "Yes" if "dog" in q else "No")
    res = run_benchmark(vlm, "pope", tmp_path, tmp_path / "out", batch_size=4, progress=False)
    assert res["headline"]["value"] == 100.0 and set(res["splits"]) == {"adversarial", "random"}
