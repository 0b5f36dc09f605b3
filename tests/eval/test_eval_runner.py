"""The runner end to end with a fake VLM: every input layout, resume, bad lines, missing images, CLI."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from grace.errors import GraceError
from grace.eval import get_benchmark, run_benchmark, score_files

SHORT = "\nAnswer the question using a single word or phrase."
MC = "\nAnswer with the option's letter from the given choices directly."


def _png(path=None, color=(200, 30, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (6, 4), color if mode == "RGB" else 0).save(buf, format="PNG")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ----------------------------------------------------------------------------- POPE (LLaVA jsonl)

OBJECTS = ["dog", "cat", "car", "tree", "cup", "bike"]


def _pope_dir(tmp_path, n=6, missing_image: int | None = None):
    d = tmp_path / "pope"
    labels, questions = [], []
    for i in range(1, n + 1):
        img = f"COCO_val2014_{i:012d}.jpg"
        if i != missing_image:
            _png(d / "images" / img)
        q = f"Is there a {OBJECTS[(i - 1) % len(OBJECTS)]} in the image?"
        labels.append({"question_id": i, "image": img, "text": q, "label": "yes" if i % 2 else "no"})
        questions.append({"question_id": 10_000_000 + i, "image": img, "text": q + SHORT, "category": "random"})
    _jsonl(d / "coco" / "coco_pope_random.json", labels)
    _jsonl(d / "llava_pope_test.jsonl", questions)
    return d


def _pope_oracle(image, query):
    # Right for dog/cat/car, wrong ("Yes") otherwise: odd ids are "yes" labels.
    obj = query.split("Is there a ")[1].split(" ")[0]
    idx = OBJECTS.index(obj) + 1
    if obj in ("dog", "cat", "car"):
        return "Yes" if idx % 2 else "No"
    return "Yes"


def test_pope_run_scores_like_rescore(tmp_path, fake_batch_vlm):
    d = _pope_dir(tmp_path)
    vlm = fake_batch_vlm(_pope_oracle)
    res = run_benchmark(vlm, "pope", d, tmp_path / "out", batch_size=4, progress=False)
    # labels: 1 yes,2 no,3 yes,4 no,5 yes,6 no; preds: Y,N,Y,Y,Y,Y -> TP 3, FP 2, TN 1, FN 0
    s = res["splits"]["random"]
    assert (s["tp"], s["fp"], s["tn"], s["fn"]) == (3, 2, 1, 0)
    assert res["headline"]["value"] == pytest.approx(75.0)
    assert vlm.batches == [4, 2]
    assert all(mnt == 128 for _, _, mnt in vlm.calls)
    assert all(q.endswith(SHORT) and isinstance(im, Image.Image) for im, q, _ in vlm.calls)
    ans = tmp_path / "out" / "pope_answers.jsonl"
    rows = [json.loads(x) for x in ans.read_text().splitlines()]
    assert rows[0]["question_id"] == 10_000_001 and rows[0]["text"] == "Yes"  # stripped
    assert rows[0]["prompt"].endswith(SHORT) and rows[0]["model_id"] == "fake-vlm"
    again = score_files("pope", ans, [d])
    assert again["headline"]["value"] == res["headline"]["value"]
    saved = json.loads((tmp_path / "out" / "pope_results.json").read_text())
    assert saved["headline"]["value"] == res["headline"]["value"]
    assert saved["run"]["generated"] == 6 and saved["run"]["family"] == "llava"


def test_resume_after_crash_skips_done_questions(tmp_path, fake_vlm):
    d = _pope_dir(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_benchmark(fake_vlm(_pope_oracle, fail_after=2), "pope", d, out, progress=False)
    ans = out / "pope_answers.jsonl"
    assert len(ans.read_text().splitlines()) == 2
    with ans.open("a") as fh:  # a half-written line from the crash
        fh.write('{"question_id": 10000003, "prom')
    vlm = fake_vlm(_pope_oracle)
    res = run_benchmark(vlm, "pope", d, out, progress=False)
    assert res["run"]["resumed"] == 2 and res["run"]["generated"] == 4
    assert res["run"]["dropped_partial_line"] is True
    assert len(vlm.calls) == 4
    assert res["headline"]["value"] == pytest.approx(75.0)
    # a third run has nothing left to do
    vlm3 = fake_vlm(_pope_oracle)
    res3 = run_benchmark(vlm3, "pope", d, out, progress=False)
    assert vlm3.calls == [] and res3["run"]["resumed"] == 6


def test_resume_refuses_answers_for_different_prompts(tmp_path, fake_vlm):
    d = _pope_dir(tmp_path)
    out = tmp_path / "out"
    _jsonl(out / "pope_answers.jsonl", [{"question_id": 10_000_001, "prompt": "something else", "text": "Yes"}])
    with pytest.raises(GraceError, match=r"pope_answers\.jsonl:1: the saved prompt"):
        run_benchmark(fake_vlm(_pope_oracle), "pope", d, out, progress=False)


def test_limit(tmp_path, fake_vlm):
    d = _pope_dir(tmp_path)
    vlm = fake_vlm(_pope_oracle)
    res = run_benchmark(vlm, "pope", d, tmp_path / "out", limit=3, progress=False)
    assert len(vlm.calls) == 3 and res["counts"]["questions"] == 3 and res["counts"]["missing"] == 0


def test_missing_image_is_counted_not_fatal(tmp_path, fake_vlm):
    d = _pope_dir(tmp_path, missing_image=2)
    vlm = fake_vlm(_pope_oracle)
    res = run_benchmark(vlm, "pope", d, tmp_path / "out", progress=False)
    assert len(vlm.calls) == 5
    assert res["run"]["missing_images"] == 1
    assert "COCO_val2014_000000000002.jpg" in res["run"]["missing_image_examples"][0]
    assert res["counts"]["missing"] == 1  # scored as unanswered (wrong)
    s = res["splits"]["random"]
    assert s["n"] == 6 and s["tn"] == 0  # question 2 ("no", answered right otherwise) is now wrong


def test_malformed_question_line(tmp_path, fake_vlm):
    d = _pope_dir(tmp_path)
    q = d / "llava_pope_test.jsonl"
    lines = q.read_text().splitlines()
    lines[3] = lines[3][:-5]
    q.write_text("\n".join(lines) + "\n")
    with pytest.raises(GraceError, match=r"llava_pope_test\.jsonl:4: malformed JSON line"):
        run_benchmark(fake_vlm(_pope_oracle), "pope", d, tmp_path / "out", progress=False)


def test_unreadable_image_counts_as_missing(tmp_path, fake_vlm):
    d = _pope_dir(tmp_path)
    (d / "images" / "COCO_val2014_000000000003.jpg").write_bytes(b"not an image")
    res = run_benchmark(fake_vlm(_pope_oracle), "pope", d, tmp_path / "out", progress=False)
    assert res["run"]["missing_images"] == 1 and "unreadable" in res["run"]["missing_image_examples"][0]


# ----------------------------------------------------------------------------- ScienceQA (LLaVA JSON list)


def test_scienceqa_text_only_and_image_items(tmp_path, fake_vlm):
    d = tmp_path / "sqa"
    items = [
        {"id": "1", "image": "1/image.png",
         "conversations": [{"from": "human", "value": "<image>\nContext: hot\nWhich?\nA. x\nB. y"},
                           {"from": "gpt", "value": "B"}]},
        {"id": "2", "conversations": [{"from": "human", "value": "Which?\nA. x\nB. y\nC. z"},
                                      {"from": "gpt", "value": "C"}]},
    ]  # fmt: skip
    d.mkdir()
    (d / "llava_test_CQM-A.json").write_text(json.dumps(items))
    _png(d / "images" / "test" / "1" / "image.png", mode="P")

    def answer(image, query):
        return "B" if image is not None else "The answer is C."

    vlm = fake_vlm(answer)
    res = run_benchmark(vlm, "scienceqa", d, tmp_path / "out", progress=False, image_dir=d / "images" / "test")
    assert res["headline"]["value"] == 100.0 and res["metrics"]["accuracy"] == 100.0
    (img, q1, mnt), (none_img, q2, _) = vlm.calls
    assert img.mode == "P"  # LLaVA's SQA runner does not convert to RGB
    assert none_img is None and mnt == 1024
    assert q1 == "Context: hot\nWhich?\nA. x\nB. y" + MC
    rows = [json.loads(x) for x in (tmp_path / "out" / "scienceqa_answers.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"].startswith("<image>\n") and not rows[1]["prompt"].startswith("<image>")


# ----------------------------------------------------------------------------- MMBench (VLMEvalKit TSV)


def _mmbench_tsv(path):
    b64 = base64.b64encode(_png()).decode()
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image", "split"]
    rows = [
        [0, "What animal?", "nan", "cat", "dog", "", "", "A", "perception", "attr", b64, "dev"],
        [1000000, "What animal?", "nan", "dog", "cat", "", "", "B", "perception", "attr", "0", "dev"],
        [1, "How many?", "Count carefully.", "one", "two", "three", "", "C", "reasoning", "count", b64, "dev"],
        [1000001, "How many?", "Count carefully.", "three", "one", "two", "", "A", "reasoning", "count", b64, "dev"],
        [2000001, "How many?", "Count carefully.", "two", "three", "one", "", "B", "reasoning", "count", b64, "dev"],
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))


def _mc_oracle(truth):
    def answer(image, query):
        # Pick the letter whose option text is the true answer; "how many" is answered wrongly on purpose.
        lines = query.split("\n")
        for line in lines:
            if len(line) > 3 and line[1:3] == ". " and line[3:] == truth.get(lines[0] if "?" in lines[0] else lines[1]):
                return line[0]
        return "I am not sure"

    return answer


def test_mmbench_tsv_circular(tmp_path, fake_batch_vlm):
    p = tmp_path / "mmb" / "mmbench_dev_20230712.tsv"
    _mmbench_tsv(p)
    vlm = fake_batch_vlm(_mc_oracle({"What animal?": "cat", "How many?": "three"}))
    res = run_benchmark(vlm, "mmbench", p, tmp_path / "out", batch_size=8, progress=False)
    assert res["counts"]["groups"] == 2
    assert res["headline"]["value"] == 100.0
    assert res["metrics"]["category/perception"] == 100.0
    prompts = [q for _, q, _ in vlm.calls]
    assert prompts[0] == "What animal?\nA. cat\nB. dog" + MC
    assert prompts[2] == "Count carefully.\nHow many?\nA. one\nB. two\nC. three" + MC
    assert all(isinstance(im, Image.Image) for im, _, _ in vlm.calls)  # row 1000000 reuses row 0's image
    vlm2 = fake_batch_vlm(_mc_oracle({"What animal?": "cat", "How many?": "two"}))
    res2 = run_benchmark(vlm2, "mmbench", p, tmp_path / "out2", batch_size=8, progress=False)
    assert res2["headline"]["value"] == 50.0


# ----------------------------------------------------------------------------- Parquet (lmms-eval / HF)


def test_mmstar_parquet(tmp_path, fake_vlm):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    img_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    qs = ["Which is red?\nOptions: A: apple, B: sky", "Which is blue?\nOptions: A: apple, B: sky",
          "Which is green?\nOptions: A: grass, B: sky"]
    t = pa.table({
        "index": [0, 1, 2],
        "question": qs,
        "image": pa.array([{"bytes": _png(), "path": None}, {"bytes": _png(), "path": None},
                           {"bytes": None, "path": None}], type=img_t),
        "answer": ["A", "B", "A"],
        "category": ["coarse perception", "coarse perception", "math"],
        "l2_category": ["color", "color", "numeric"],
    })
    d = tmp_path / "mmstar"
    d.mkdir()
    pq.write_table(t, d / "val-00000-of-00001.parquet")
    vlm = fake_vlm(lambda im, q: "A" if "red" in q else "(A) apple")
    res = run_benchmark(vlm, "mmstar", d, tmp_path / "out", progress=False)
    assert len(vlm.calls) == 2 and res["run"]["missing_images"] == 1
    assert vlm.calls[0][1] == qs[0] + MC
    assert res["counts"]["correct"] == 1 and res["headline"]["value"] == pytest.approx(100 / 3)
    assert res["metrics"]["category/math"] == 0.0


def test_mmmu_parquet_prompt_and_parsing(tmp_path, fake_vlm):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    img_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    t = pa.table({
        "id": ["validation_Math_1", "validation_Math_2"],
        "question": ["<image 1> Which shape?", "How many sides?"],
        "options": ["['circle', 'square']", "[]"],
        "answer": ["B", "4"],
        "question_type": ["multiple-choice", "open"],
        "image_1": pa.array([{"bytes": _png(), "path": None}, {"bytes": _png(), "path": None}], type=img_t),
    })
    pq.write_table(t, tmp_path / "validation-00000.parquet")
    vlm = fake_vlm(lambda im, q: "I think it is a square shape here" if "(A)" in q else "It has 4 sides.")
    res = run_benchmark(vlm, "mmmu", tmp_path / "validation-00000.parquet", tmp_path / "out", progress=False)
    assert res["headline"]["value"] == 100.0
    assert vlm.calls[0][1] == "<image 1> Which shape?\n(A) circle\n(B) square\n\n" + MC.strip()
    assert vlm.calls[1][1] == "How many sides?" + SHORT


def test_ai2d_parquet_lmms_layout(tmp_path, fake_vlm):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    img_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    t = pa.table({
        "question": ["Which label is the sun?", "Which is a leaf?"],
        "options": [["A", "B", "C", "D"], ["stem", "leaf"]],
        "answer": ["2", "1"],
        "image": pa.array([{"bytes": _png(), "path": None}] * 2, type=img_t),
    })
    pq.write_table(t, tmp_path / "test-00000.parquet")
    vlm = fake_vlm(lambda im, q: "C." if "sun" in q else "A")
    res = run_benchmark(vlm, "ai2d", tmp_path, tmp_path / "out", progress=False)
    assert res["headline"]["value"] == 50.0
    assert vlm.calls[0][2] == 16
    assert vlm.calls[1][1] == "Which is a leaf?\nA. stem\nB. leaf" + MC


# ----------------------------------------------------------------------------- MME (tool files / templates)


def test_mme_run_from_templates_and_images(tmp_path, fake_vlm):
    root = tmp_path / "MME_Benchmark_release_version"
    _png(root / "existence" / "0001.png")
    _png(root / "artwork" / "images" / "10002.jpg")
    tpl = tmp_path / "templates"
    tpl.mkdir()
    (tpl / "existence.txt").write_text("0001.png\tIs there a dog? Please answer yes or no.\tYes\n"
                                       "0001.png\tIs there a cat? Please answer yes or no.\tNo\n")
    (tpl / "artwork.txt").write_text("10002.jpg\tIs this a painting? Please answer yes or no.\tYes\n"
                                     "10002.jpg\tIs this glassware?  Please answer yes or no.\tNo\n")
    vlm = fake_vlm(lambda im, q: "Yes" if ("dog" in q or "painting" in q or "glass" in q) else "No")
    res = run_benchmark(vlm, "mme", [tpl], tmp_path / "out", image_dir=root, progress=False)
    assert res["run"]["missing_images"] == 0
    assert "Is there a dog?" + SHORT in [q for _, q, _ in vlm.calls]
    assert res["metrics"]["existence/score"] == 200.0
    assert res["metrics"]["artwork/score"] == 50.0  # 1 of 2 right, image not fully right
    assert res["headline"]["value"] == 250.0


# ----------------------------------------------------------------------------- synthvqa


def test_synthvqa_run(tmp_path, fake_vlm):
    d = tmp_path / "synth"
    _png(d / "images" / "0.png")
    _jsonl(d / "questions.jsonl", [
        {"question_id": "q0", "image": "0.png", "text": "What color is the cube?", "category": "color", "kind": "short"},
        {"question_id": "q1", "image": "0.png", "text": "Is the cube red?", "category": "color", "kind": "yesno"},
        {"question_id": "q2", "image": "0.png", "text": "Shape?\nA. cube\nB. ball", "category": "shape", "kind": "mc"},
    ])  # fmt: skip
    _jsonl(d / "annotations.jsonl", [{"question_id": "q0", "answer": "red"}, {"question_id": "q1", "answer": "yes"},
                                     {"question_id": "q2", "answer": "A"}])
    vlm = fake_vlm(lambda im, q: {"W": "Red", "I": "Yes", "S": "A"}[q[0]])
    res = run_benchmark(vlm, "synthvqa", d, tmp_path / "out", progress=False)
    assert res["headline"]["value"] == 100.0
    assert vlm.calls[2][1].endswith(MC) and vlm.calls[0][1].endswith(SHORT)


# ----------------------------------------------------------------------------- CLI


def test_cli_run_and_score(tmp_path, monkeypatch, fake_vlm):
    from typer.testing import CliRunner

    import grace
    from grace.cli.main import app

    d = _pope_dir(tmp_path)
    seen = {}

    def fake_load(path, **kw):
        seen["path"], seen["kw"] = path, kw
        return fake_vlm(_pope_oracle)

    monkeypatch.setattr(grace, "load", fake_load)
    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(app, ["eval", "run", "--model", str(tmp_path / "ckpt"), "--bench", "pope", "--data", str(d),
                            "--out", str(out), "--batch-size", "2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert seen["kw"] == {"device": "cpu"}
    assert "75.000" in r.output
    r2 = runner.invoke(app, ["eval", "score", "--bench", "pope", "--answers", str(out / "pope_answers.jsonl"),
                             "--data", str(d), "--out", str(tmp_path / "res.json")])
    assert r2.exit_code == 0, r2.output
    assert json.loads((tmp_path / "res.json").read_text())["headline"]["value"] == pytest.approx(75.0)
    r3 = runner.invoke(app, ["eval", "list"])
    assert r3.exit_code == 0 and "hallusionbench" in r3.output


def test_cli_bad_input_is_one_graceerror(tmp_path):
    from typer.testing import CliRunner

    from grace.cli.main import app

    bad = tmp_path / "a.jsonl"
    bad.write_text("{not json\n")
    r = CliRunner().invoke(app, ["eval", "score", "--bench", "pope", "--answers", str(bad), "--data", str(tmp_path)])
    assert isinstance(r.exception, GraceError)


def test_every_benchmark_is_registered_with_a_budget():
    names = ["vqav2", "gqa", "textvqa", "pope", "mme", "scienceqa", "seed", "mmbench", "hallusionbench", "ai2d",
             "mmmu", "mmstar", "synthvqa"]
    for n in names:
        b = get_benchmark(n)
        assert b.name == n and b.max_new_tokens > 0
    assert get_benchmark("SQA").name == "scienceqa" and get_benchmark("seed-bench").name == "seed"


def test_nothing_else_in_the_package_imports_grace_eval():
    """Layering: only the top of the stack (the CLI and the quickstart pipeline) may use grace.eval."""
    import re
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src" / "grace"
    pattern = re.compile(r"^\s*(from\s+grace\.eval\b|import\s+grace\.eval\b|from\s+grace\s+import\s+.*\beval\b)", re.M)
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.parent.name not in ("eval", "quickstart") and p.name != "eval_cmds.py" and pattern.search(p.read_text())
    ]
    assert offenders == []
