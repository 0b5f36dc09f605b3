"""`grace quickstart` through the CLI: the test preset end to end, the table printed, errors as one line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from grace.cli.main import app


def test_cli_runs_the_test_preset_and_prints_the_table(tmp_path):
    r = CliRunner().invoke(app, ["quickstart", "--preset", "test", "--out", str(tmp_path / "q"), "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "GRACE W2G128" in r.output and "QAT-only W4G128" in r.output and "answer prior" in r.output
    res = json.loads((tmp_path / "q" / "results.json").read_text())
    assert res["seeds"] == [1] and len(res["rows"]) == 11


def test_cli_bad_preset_is_a_grace_error(tmp_path):
    from grace.errors import GraceError

    r = CliRunner().invoke(app, ["quickstart", "--preset", "nope", "--out", str(tmp_path / "q")])
    assert r.exit_code != 0 and isinstance(r.exception, GraceError)
