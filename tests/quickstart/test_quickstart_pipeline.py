"""End to end: the quickstart's test preset runs every stage, writes sane results, and resumes."""

from __future__ import annotations

import json
import math

import pytest

from grace.quickstart import QuickConfig, run
from grace.quickstart.pipeline import METHODS


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs")
    res = run(out, config=QuickConfig.preset("test"), seed=3)
    return out, res


def test_every_stage_runs_and_every_row_is_sane(first_run):
    out, res = first_run
    assert not any(s["reused"] for s in res["stages"])
    labels = " | ".join(s["stage"] for s in res["stages"])
    for part in ("world", "tokenizer", "teacher", "student", "RTN W2", "QAT-only W3", "GRACE W4", "pack GRACE W4",
                 "evaluate grace_w4", "decode speed"):
        assert part in labels
    disk = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in disk["rows"]]
    assert names == ["teacher", "student"] + [f"{m}_w{b}" for b in (4, 3, 2) for m in METHODS]
    for r in disk["rows"]:
        assert 0.0 <= r["accuracy"] <= 100.0 and r["test_questions"] == 24
        assert set(r["categories"]) <= {"colour", "shape", "count", "position", "existence"}
        assert math.isfinite(r["retention"])
        if r["bits"] == 4:
            assert r["form"] == "packed" and r["footprint_bytes"] > 0 and r["tokens_per_s"] > 0
        elif r["bits"] == 16:
            assert r["form"] == "dense" and "val_accuracy" in r
        else:
            assert r["form"] == "fake" and r["footprint_bytes"] is None
    student = next(r for r in disk["rows"] if r["name"] == "student")
    packed = next(r for r in disk["rows"] if r["name"] == "grace_w4")
    assert packed["lm_bytes"] < student["lm_bytes"]  # INT4 codes + fp16 scales vs bf16
    assert 0.0 < disk["answer_prior"]["overall"] < 1.0
    assert disk["world"]["seed"] == 3 and disk["seeds"] == [3]
    assert (out / "results.md").read_text().count("\n| ") == len(names) + 2  # header + prior + rows
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_second_run_resumes_and_a_changed_knob_reruns_only_its_dependents(first_run, capsys):
    out, first = first_run
    res = run(out, config=QuickConfig.preset("test"), seed=3)
    assert all(s["reused"] for s in res["stages"])
    assert [r["accuracy"] for r in res["rows"]] == [r["accuracy"] for r in first["rows"]]
    printed = capsys.readouterr().out
    assert "GRACE W4G128" in printed and "answer prior" in printed  # the table was printed

    res = run(out, config=QuickConfig.preset("test").replace(quant_steps=1), seed=3)
    rerun = {s["stage"] for s in res["stages"] if not s["reused"]}
    assert not any(k in " ".join(rerun) for k in ("world", "tokenizer", "teacher", "student (kd", "RTN W"))
    assert any("QAT-only W2" in s for s in rerun) and any("GRACE W4" in s for s in rerun)


def test_bad_config_is_one_clear_error():
    from grace.errors import GraceError

    with pytest.raises(GraceError, match="bits"):
        QuickConfig(bits=(3, 2))
    with pytest.raises(GraceError, match="preset"):
        QuickConfig.preset("huge")
