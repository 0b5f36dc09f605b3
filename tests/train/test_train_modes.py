"""Every mode runs a few steps on tiny LLaVA (and GRACE / QAT on tiny Qwen3-VL) and writes its checkpoint."""

import json

import pytest
import torch
from grace_train_tiny import llava_setup, qwen_setup, simple_saver

from grace.formats.qat_sidecar import load_sidecar
from grace.quant.api import qat_modules
from grace.train import TrainConfig, train


def _cfg(tmp_path, mode, **kw):
    base = dict(mode=mode, output_dir=str(tmp_path / "run"), micro_batch_size=2, grad_accum=2, max_steps=3,
                save_every=2, rcka_warmup_steps=1, lr=1e-3, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _log(result):
    return [json.loads(line) for line in result.log_path.read_text().splitlines()]


@pytest.mark.parametrize("mode", ["sft", "qat", "kd", "grace"])
def test_mode_runs_and_writes_checkpoint(tmp_path, mode):
    student, teacher, ds, collate, tok, proc = llava_setup(tmp_path)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    res = train(_cfg(tmp_path, mode), student=student, teacher=teacher, dataset=ds, collate_fn=collate,
                tokenizer=tok, processor=proc, save_fn=simple_saver)
    log = _log(res)
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["ce"])) for r in log)
    distill, rcka = mode in ("kd", "grace"), mode == "grace"
    assert all((r["gdkd"] is not None) == distill and (r["beta"] is not None) == distill for r in log)
    assert all((r["rcka"] is not None) == rcka for r in log)
    if distill:
        assert all(0.0 < r["gdkd"] and 1 / 2.72 < r["gate"] <= 1.0 for r in log)
        assert log[0]["beta"] == 0.5 and res.beta == pytest.approx(log[-1]["beta_next"])
        # GDKD (~0.2) is far below tau = 3, so the controller lowers beta.
        assert log[-1]["beta_next"] < log[0]["beta"]
    if rcka:
        assert log[0]["s_rcka"] == 0.0 and log[1]["s_rcka"] == 1.0
    # The teacher is frozen and untouched.
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    if distill:
        assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    # A checkpoint at step 2 and the final model.
    assert (res.output_dir / "checkpoints" / "step-00000002" / "trainer_state.json").is_file()
    assert (res.model_dir / "model.safetensors").is_file()
    from safetensors.torch import load_file

    saved = load_file(res.model_dir / "model.safetensors")
    assert not any(k.endswith("log_scale") for k in saved)
    if mode in ("qat", "grace"):
        side = load_sidecar(res.model_dir)
        mods = qat_modules(res.model)
        assert set(side) == set(mods) and len(mods) == 3 * 7
        for name, m in mods.items():
            # Baked: the weight lies exactly on its grid, and the sidecar holds it.
            w = m.weight.detach()
            torch.testing.assert_close(m.quantized_weight().detach(), w, rtol=0, atol=0)
            torch.testing.assert_close(side[name]["weight"], w, rtol=0, atol=0)
    else:
        assert not qat_modules(res.model)


def test_log_scales_are_trained(tmp_path):
    student, teacher, ds, collate, tok, proc = llava_setup(tmp_path)
    from grace.config import QuantSpec
    from grace.quant.api import quantize

    quantize(student, QuantSpec(bits=4, group_size=128))  # already quantized: train() keeps it
    before = {n: m.log_scale.detach().clone() for n, m in qat_modules(student).items()}
    res = train(_cfg(tmp_path, "qat", max_steps=2, save_every=0, warmup_ratio=0.0), student=student,
                dataset=ds, collate_fn=collate, tokenizer=tok, save_fn=simple_saver)
    moved = [not torch.equal(before[n], m.log_scale.detach()) for n, m in qat_modules(res.model).items()]
    assert all(moved)


def test_vision_tower_frozen_projector_trained(tmp_path):
    student, _, ds, collate, tok, _ = llava_setup(tmp_path)
    vt = {k: v.clone() for k, v in student.model.vision_tower.state_dict().items()}
    proj = student.model.multi_modal_projector.linear_1.weight.detach().clone()
    train(_cfg(tmp_path, "sft", max_steps=2, save_every=0, warmup_ratio=0.0, save_final=False), student=student,
          dataset=ds, collate_fn=collate, tokenizer=tok)
    assert all(torch.equal(vt[k], v) for k, v in student.model.vision_tower.state_dict().items())
    assert not torch.equal(proj, student.model.multi_modal_projector.linear_1.weight.detach())


@pytest.mark.parametrize("mode", ["sft", "qat", "kd", "grace"])
def test_qwen3vl_modes(tmp_path, mode):
    student, teacher, ds, collate, tok, proc = qwen_setup(tmp_path)
    res = train(_cfg(tmp_path, mode, max_steps=2, grad_accum=1), student=student, teacher=teacher, dataset=ds,
                collate_fn=collate, tokenizer=tok, processor=proc, save_fn=simple_saver)
    log = _log(res)
    assert len(log) == 2 and all(torch.isfinite(torch.tensor(r["ce"])) for r in log)
    assert all((r["gdkd"] is not None) == (mode in ("kd", "grace")) for r in log)
    if mode == "grace":
        assert all(r["rcka"] is not None and 0.0 <= r["rcka"] <= 1.0 for r in log)
    assert (res.model_dir / "model.safetensors").is_file()
    if mode in ("qat", "grace"):
        side = load_sidecar(res.model_dir)
        assert any("language_model.layers.0.mlp.down_proj" in k for k in side)
        assert not any("visual" in k for k in side)


def test_grace_with_bf16_autocast_and_gradient_checkpointing(tmp_path):
    student, teacher, ds, collate, tok, proc = llava_setup(tmp_path)
    res = train(_cfg(tmp_path, "grace", max_steps=2, grad_accum=1, mixed_precision="bf16",
                     gradient_checkpointing=True, save_final=False), student=student, teacher=teacher, dataset=ds,
                collate_fn=collate, tokenizer=tok)
    log = _log(res)
    assert all(r["gdkd"] is not None and r["rcka"] is not None and r["nonfinite_gdkd"] == 0 for r in log)
    assert all(p.dtype == torch.float32 for p in res.model.parameters())  # master weights stay fp32


def test_grace_run_saves_with_grace_io_packs_and_loads(tmp_path):
    """The full path: train (grace mode) -> grace.io.save_checkpoint -> pack -> grace.load, same logits."""
    import grace

    student, teacher, ds, collate, tok, proc = llava_setup(tmp_path)
    res = train(_cfg(tmp_path, "grace", pack=True), student=student, teacher=teacher, dataset=ds,
                collate_fn=collate, tokenizer=tok, processor=proc)
    packed = res.model_dir.parent / f"{res.model_dir.name}-packed"
    assert (packed / "awq_quantized_modules.json").is_file()
    trained = res.model.eval()
    batch = collate([ds[0]])
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        ref = trained(**inputs).logits
        for path, kw in ((res.model_dir, {"qat_as": "fake"}), (res.model_dir, {}), (packed, {})):
            vlm = grace.load(path, dtype=torch.float32, **kw)
            out = vlm.model(**inputs).logits
            # fp32 everywhere except the packed dir's fp16 storage of non-quantized tensors
            tol = 0.0 if path == res.model_dir and kw else 2e-3
            assert (out - ref).abs().max().item() <= tol, (path, kw)


def test_pack_option_needs_a_deployable_quantized_mode():
    from grace.train.config import ConfigError

    with pytest.raises(ConfigError, match="pack"):
        TrainConfig(mode="sft", pack=True)
    with pytest.raises(ConfigError, match="pack"):
        TrainConfig(mode="qat", bits=3, pack=True)
