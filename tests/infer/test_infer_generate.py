"""Generation (single, batched, multi-turn), footprint, and the CLI end to end on tiny models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import grace
from grace.cli.main import app
from grace.errors import GraceError
from grace.infer.generate import ContextLengthError, generate, generate_batch_ids
from grace.io import save_packed
from grace.models.tiny import make_tiny, write_tiny

IMG = Image.new("RGB", (40, 30), (200, 30, 10))
IMG2 = Image.new("RGB", (70, 50), (0, 0, 250))


@pytest.fixture(scope="module", params=["llava", "qwen3vl"])
def vlm(request):
    return make_tiny(request.param)


def test_generate_matches_manual_greedy(vlm):
    g = generate(vlm, IMG, "What is the color of the circle?", max_new_tokens=5)
    assert isinstance(g.text, str) and 1 <= g.n_new_tokens <= 5 and g.ttft_s > 0
    # greedy by hand with the same inputs gives the same tokens
    inp = vlm.prepare(IMG, "What is the color of the circle?")
    ids = inp["input_ids"]
    extra = {k: v for k, v in inp.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    want = []
    with torch.no_grad():
        for _ in range(g.n_new_tokens):
            kw = dict(extra)
            if "mm_token_type_ids" in inp:
                kw["mm_token_type_ids"] = torch.cat(
                    [inp["mm_token_type_ids"], torch.zeros(1, ids.shape[1] - inp["input_ids"].shape[1],
                                                           dtype=inp["mm_token_type_ids"].dtype)], 1)
            nxt = vlm.model(input_ids=ids, attention_mask=torch.ones_like(ids), **kw).logits[0, -1].argmax()
            want.append(int(nxt))
            ids = torch.cat([ids, nxt.view(1, 1)], 1)
    assert g.token_ids == want


def test_batch_equals_single(vlm):
    qs = ["What is the color of the circle?", "How many squares?", "Is there a star?"]
    ims = [IMG, IMG2, None]
    singles = [generate(vlm, i, q, max_new_tokens=6).token_ids for i, q in zip(ims, qs, strict=True)]
    assert generate_batch_ids(vlm, ims, qs, max_new_tokens=6) == singles
    assert len(vlm.generate_batch(ims, qs, max_new_tokens=2)) == 3


def test_chat_keeps_history(vlm):
    s = vlm.chat(IMG, max_new_tokens=3)
    a1 = s.ask("What is it?")
    s.ask("Are you sure?")
    assert s.history[0] == ("What is it?", a1) and len(s.history) == 2
    from grace.models import render_prompt

    p = render_prompt(vlm, "Are you sure?", history=[("What is it?", a1)])
    assert p.count("What is it?") == 1 and p.rstrip().endswith(("ASSISTANT:", "assistant"))


def test_text_only_and_context_limit(vlm):
    assert isinstance(vlm.generate(None, "How many?", max_new_tokens=2), str)
    with pytest.raises(ContextLengthError, match="max_position_embeddings"):
        vlm.generate(IMG, "word " * 1200, max_new_tokens=2)


def test_footprint_packed_smaller(tmp_path):
    v = make_tiny("llava")
    dense = v.footprint()
    grace.quantize(v.model, grace.W4G128)
    p = save_packed(v, None, None, tmp_path / "pk", layout="hf")
    w = grace.load(p)
    fp = w.footprint()
    assert fp["total"] == fp["language_model"] + fp["vision"] + fp["other"]
    assert fp["language_model"] < dense["language_model"] / 2.5
    assert w.kernel_name != "dense" and isinstance(w.generate(IMG, "What?", max_new_tokens=2), str)


@pytest.mark.parametrize("family, layout", [("llava", "original"), ("qwen3vl", "hf")])
def test_cli_init_tiny_pack_generate(tmp_path, family, layout):
    runner = CliRunner()
    out = tmp_path / "m"
    r = runner.invoke(app, ["init-tiny", "--family", family, "--out", str(out), "--layout", layout])
    assert r.exit_code == 0, r.output
    img = tmp_path / "i.png"
    IMG.save(img)
    r = runner.invoke(app, ["generate", "--model", str(out), "--image", str(img), "--query", "What colour?",
                            "--max-new-tokens", "4"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[-1].startswith("[ttft ") and "tok/s" in lines[-1] and "kernel dense" in lines[-1]
    # quantize + pack, then generate from the packed directory
    v = grace.load(out)
    grace.quantize(v.model, grace.W4G128)
    save_packed(v, None, None, tmp_path / "pk", layout=layout)
    r = runner.invoke(app, ["generate", "--model", str(tmp_path / "pk"), "--text-only", "--query", "Hi",
                            "--max-new-tokens", "3"])
    assert r.exit_code == 0, r.output
    assert "kernel " in r.output and "kernel dense" not in r.output
    r = runner.invoke(app, ["chat", "--model", str(out), "--image", str(img), "--max-new-tokens", "2"],
                      input="What?\nWhy?\nexit\nnever asked\n")
    assert r.exit_code == 0, r.output
    assert r.output.count("[ttft") == 2


def test_cli_errors_are_one_line(tmp_path):
    d = write_tiny("llava", tmp_path / "m", layout="hf")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    env = dict(os.environ, PYTHONPATH=str(Path(grace.__file__).parents[1]))
    cmd = [sys.executable, "-c", "from grace.cli.main import main; main()", "generate", "--model", str(d),
           "--image", str(bad), "--query", "Q"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "bad.png: not a readable image" in r.stderr
    runner = CliRunner()
    r = runner.invoke(app, ["generate", "--model", str(d), "--query", "Q"])
    assert isinstance(r.exception, GraceError) and "--image" in str(r.exception)


def test_image_paths_are_accepted(tmp_path, vlm):
    p = tmp_path / "i.png"
    IMG.save(p)
    assert generate(vlm, p, "What?", max_new_tokens=2).token_ids == generate(vlm, IMG, "What?", max_new_tokens=2).token_ids
    with pytest.raises(GraceError, match="missing.png: image file not found"):
        vlm.generate(tmp_path / "missing.png", "What?")
