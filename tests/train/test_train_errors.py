"""Refusals and the non-finite rules: shared vocabulary, non-finite CE stops, non-finite GDKD/RCKA are zeroed."""

import json

import pytest
import torch
from grace_train_tiny import llava_setup, simple_saver, tiny_llava

from grace.config import W4G128
from grace.distill import hidden_state_module
from grace.errors import GraceError
from grace.quant.api import quantize
from grace.train import ConfigError, TrainConfig, train


def _cfg(tmp_path, mode="grace", **kw):
    base = dict(mode=mode, output_dir=str(tmp_path / "run"), micro_batch_size=2, grad_accum=2, max_steps=2,
                save_every=0, rcka_warmup_steps=0, lr=1e-3, progress=False, save_final=False)
    base.update(kw)
    return TrainConfig(**base)


def test_teacher_with_other_vocabulary_is_refused(tmp_path):
    student, _, ds, collate, tok, _ = llava_setup(tmp_path)
    teacher = tiny_llava(3)
    teacher.resize_token_embeddings(200)
    with pytest.raises(ConfigError, match="vocabulary"):
        train(_cfg(tmp_path), student=student, teacher=teacher, dataset=ds, collate_fn=collate, tokenizer=tok)


def test_distill_mode_without_teacher_is_refused(tmp_path):
    student, _, ds, collate, tok, _ = llava_setup(tmp_path)
    with pytest.raises(ConfigError, match="teacher"):
        train(_cfg(tmp_path, "kd"), student=student, dataset=ds, collate_fn=collate, tokenizer=tok)


def test_float_mode_with_quantized_student_is_refused(tmp_path):
    student, _, ds, collate, tok, _ = llava_setup(tmp_path)
    quantize(student, W4G128)
    with pytest.raises(ConfigError, match="QAT modules"):
        train(_cfg(tmp_path, "sft"), student=student, dataset=ds, collate_fn=collate, tokenizer=tok)


def test_dataset_smaller_than_global_batch_is_refused(tmp_path):
    student, _, ds, collate, tok, _ = llava_setup(tmp_path, n=3)
    with pytest.raises(ConfigError, match="global batch"):
        train(_cfg(tmp_path, "sft"), student=student, dataset=ds, collate_fn=collate, tokenizer=tok)


def test_non_finite_ce_stops_the_run(tmp_path):
    student, _, ds, collate, tok, _ = llava_setup(tmp_path)
    with torch.no_grad():
        student.lm_head.weight[5, 0] = float("nan")
    with pytest.raises(GraceError, match="non-finite cross-entropy"):
        train(_cfg(tmp_path, "sft"), student=student, dataset=ds, collate_fn=collate, tokenizer=tok)


def test_non_finite_gdkd_and_rcka_are_zeroed_and_counted(tmp_path):
    student, teacher, ds, collate, tok, _ = llava_setup(tmp_path)

    def poison(_m, _i, out):
        out = out[0] if isinstance(out, tuple) else out
        out = out.clone()
        out[0, -2] = float("nan")  # one position of the first sample in every micro-batch
        return out

    teacher.lm_head.register_forward_hook(poison)
    hidden_state_module(teacher, -2).register_forward_hook(
        lambda m, i, o: torch.full_like(o[0] if isinstance(o, tuple) else o, float("nan")))
    res = train(_cfg(tmp_path, save_final=True), student=student, teacher=teacher, dataset=ds, collate_fn=collate,
                tokenizer=tok, save_fn=simple_saver)
    log = [json.loads(x) for x in res.log_path.read_text().splitlines()]
    # The poisoned hidden state also reaches the teacher's logits, so every micro-step is non-finite.
    assert [r["nonfinite_gdkd"] for r in log] == [2, 2] and [r["nonfinite_rcka"] for r in log] == [2, 2]
    assert all(r["gdkd"] is None and r["rcka"] is None for r in log)
    assert res.beta == 0.5  # the controller ignored the non-finite steps
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    assert all(r["ce"] < 10 for r in log)


def test_zeroed_gdkd_leaves_exactly_the_ce_update(tmp_path):
    # A KD run whose GDKD is always non-finite must train exactly like SFT (value and gradient zeroed).
    student, teacher, ds, collate, tok, _ = llava_setup(tmp_path / "a")
    teacher.lm_head.register_forward_hook(lambda m, i, o: torch.full_like(o, float("nan")))
    kd = train(_cfg(tmp_path / "a", "kd"), student=student, teacher=teacher, dataset=ds, collate_fn=collate,
               tokenizer=tok)
    student2, _, ds2, collate2, tok2, _ = llava_setup(tmp_path / "b")
    sft = train(_cfg(tmp_path / "b", "sft"), student=student2, dataset=ds2, collate_fn=collate2, tokenizer=tok2)
    a, b = kd.model.state_dict(), sft.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
    before = tiny_llava(1).state_dict()
    assert not torch.equal(before["lm_head.weight"], b["lm_head.weight"])  # it did train
