"""The `--fast` preset end to end (~2.5 min on 2 cores): the world is learnt, not just run.

The test preset only proves every stage runs; this one checks the science is alive: the teacher
reads the images (well above the blind answer prior on the test split) and quantization to W4
keeps the student's accuracy. Thresholds are far below what the preset reaches (teacher 75%,
prior 46%, W4 rows within 3 points of the student on seed 0), so they test learning, not luck.
"""

from __future__ import annotations

from grace.quickstart import QuickConfig, run


def test_fast_preset_learns_the_world(tmp_path):
    res = run(tmp_path / "fast", config=QuickConfig.preset("fast"), quiet=True)
    rows = {r["name"]: r for r in res["rows"]}
    prior = 100.0 * res["answer_prior"]["overall"]
    assert rows["teacher"]["accuracy"] > prior + 15.0, (rows["teacher"]["accuracy"], prior)
    assert rows["student"]["accuracy"] > prior + 5.0, (rows["student"]["accuracy"], prior)
    for method in ("rtn", "qat", "grace"):
        w4 = rows[f"{method}_w4"]
        assert w4["form"] == "packed" and w4["retention"] > 90.0, (method, w4["retention"])
