"""`grace train --recipe ... --set ...` end to end on tiny saved models, `--resume`, and `grace plot`."""

import json
from pathlib import Path

import pytest
from grace_train_tiny import llava_setup, simple_saver
from typer.testing import CliRunner

import grace.io
from grace.cli.main import app
from grace.errors import GraceError

RECIPES = Path(__file__).parents[2] / "recipes"


@pytest.fixture
def saved_models(tmp_path):
    student, teacher, ds, _, tok, proc = llava_setup(tmp_path / "data", bad=True)
    for name, model in (("student", student), ("teacher", teacher)):
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
        proc.save_pretrained(tmp_path / name)
    return tmp_path


def _args(root, *extra):
    sets = [f"student={root / 'student'}", f"teacher={root / 'teacher'}", f"data=[{root / 'data' / 'train.json'}]",
            f"image_root={root / 'data'}", f"output_dir={root / 'run'}", *extra]
    return ["train", "--recipe", str(RECIPES / "tiny_cpu.yaml"), *[a for s in sets for a in ("--set", s)]]


def test_cli_train_resume_and_plot(saved_models, monkeypatch):
    root = saved_models
    monkeypatch.setattr(grace.io, "save_checkpoint", simple_saver, raising=False)
    runner = CliRunner()
    res = runner.invoke(app, _args(root))
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "done: 4 steps" in res.output
    log = [json.loads(x) for x in (root / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["rcka"] is not None for r in log)
    assert (root / "run" / "model" / "qat_quantized_weights.safetensors").is_file()
    cfg = json.loads((root / "run" / "config.json").read_text())
    assert cfg["mode"] == "grace" and cfg["micro_batch_size"] == 2

    # Running again needs --resume; with it, the finished run only re-saves the model.
    res = runner.invoke(app, _args(root))
    assert isinstance(res.exception, GraceError)
    res = runner.invoke(app, [*_args(root), "--resume"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert len((root / "run" / "log.jsonl").read_text().splitlines()) == 4

    res = runner.invoke(app, ["plot", str(root / "run")])
    assert res.exit_code == 0, repr(res.exception)
    png = root / "run" / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_cli_errors_are_grace_errors(saved_models, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--recipe", str(tmp_path / "missing.yaml")])
    assert isinstance(res.exception, GraceError) and "missing.yaml" in str(res.exception)
    res = runner.invoke(app, [*_args(saved_models, "learning_rate=1")])
    assert isinstance(res.exception, GraceError) and "learning_rate" in str(res.exception)
    res = runner.invoke(app, ["plot", str(tmp_path / "nowhere")])
    assert isinstance(res.exception, GraceError)
