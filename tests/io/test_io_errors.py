"""Bad input: one GraceError naming the file / tensor / field at fault."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import grace
from grace.errors import GraceError
from grace.formats.safetensors import SafetensorsFile, write_safetensors
from grace.io import save_checkpoint, save_packed
from grace.models.tiny import make_tiny, write_tiny


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("err")
    orig = write_tiny("llava", root / "orig", layout="original")
    v = make_tiny("llava")
    grace.quantize(v.model, grace.W4G128)
    qat = save_checkpoint(v, None, None, root / "qat", layout="original")
    packed = save_packed(v, None, None, root / "packed", layout="original")
    return {"root": root, "orig": orig, "qat": qat, "packed": packed}


def _copy(dirs, name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(dirs[name], dst)
    return dst


def _edit_json(p, **changes):
    d = json.loads(p.read_text())
    d.update(changes)
    p.write_text(json.dumps(d))


def test_missing_vision_tower(dirs, tmp_path):
    d = _copy(dirs, "orig", tmp_path)
    _edit_json(d / "config.json", mm_vision_tower="openai/clip-vit-large-patch14-336")
    with pytest.raises(GraceError, match=r"config.json: field mm_vision_tower='openai/clip-vit-large-patch14-336'.*vision_tower"):
        grace.load(d)
    # ... and the explicit argument fixes it
    vlm = grace.load(d, vision_tower=dirs["orig"] / "clip")
    assert vlm.family == "llava"
    with pytest.raises(GraceError, match="does not exist"):
        grace.load(d, vision_tower=tmp_path / "nowhere")


def test_clip_dir_missing_a_tensor(dirs, tmp_path):
    d = _copy(dirs, "orig", tmp_path)
    f = SafetensorsFile(d / "clip" / "model.safetensors")
    t = {k: f.read(k) for k in f.keys() if k != "vision_model.post_layernorm.bias"}
    write_safetensors(d / "clip" / "model.safetensors", t)
    with pytest.raises(GraceError, match=r"clip: tensor 'vision_model.post_layernorm.bias' is missing"):
        grace.load(d)


def test_unknown_layout_and_bad_config(dirs, tmp_path):
    d = _copy(dirs, "orig", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["mm_vision_tower"]
    cfg["model_type"] = "mistral"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GraceError, match=r"config.json: unknown layout \(field model_type='mistral'"):
        grace.load(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(GraceError, match="config.json: not valid JSON"):
        grace.load(d)
    with pytest.raises(GraceError, match="not a checkpoint directory"):
        grace.load(tmp_path / "absent")


def test_qat_missing_sidecar(dirs, tmp_path):
    d = _copy(dirs, "qat", tmp_path)
    (d / "qat_quantized_weights.safetensors").unlink()
    (d / "qat_quantized_weights.bin").unlink()
    with pytest.raises(GraceError, match=r"grace_quant.json: says QAT checkpoint, but the sidecar"):
        grace.load(d)


def test_qat_sidecar_from_another_checkpoint(dirs, tmp_path):
    d = _copy(dirs, "qat", tmp_path)
    other = make_tiny("llava", seed=7)
    grace.quantize(other.model, grace.W4G128)
    save_checkpoint(other, None, None, tmp_path / "other", layout="original")
    for f in ("qat_quantized_weights.safetensors", "qat_quantized_weights.bin"):
        shutil.copy(tmp_path / "other" / f, d / f)
    with pytest.raises(GraceError, match=r"disagrees with the QAT sidecar"):
        grace.load(d)
    with pytest.raises(GraceError, match=r"disagrees with the checkpoint weights"):
        grace.load(d, qat_as="fake")


def test_qat_sidecar_names_absent_module(dirs, tmp_path):
    d = _copy(dirs, "qat", tmp_path)
    (d / "qat_quantized_weights.bin").unlink()
    f = SafetensorsFile(d / "qat_quantized_weights.safetensors")
    t = {k.replace("model.layers.1.", "model.layers.9."): f.read(k) for k in f.keys()}
    write_safetensors(d / "qat_quantized_weights.safetensors", t)
    with pytest.raises(GraceError, match=r"qat_quantized_weights.safetensors: module 'model.layers.9\.[a-z_.]+' is listed but is not a linear"):
        grace.load(d)


def test_qat_sidecar_shape_mismatch(dirs, tmp_path):
    d = _copy(dirs, "qat", tmp_path)
    (d / "qat_quantized_weights.bin").unlink()
    f = SafetensorsFile(d / "qat_quantized_weights.safetensors")
    t = {k: f.read(k) for k in f.keys()}
    k = "model.layers.0.mlp.up_proj"
    t[k + ".weight"] = t[k + ".weight"][:, :128].contiguous()
    t[k + ".log_scale"] = t[k + ".log_scale"].reshape(512, 2)[:, :1].reshape(-1).contiguous()
    write_safetensors(d / "qat_quantized_weights.safetensors", t)
    with pytest.raises(GraceError, match=r"model.layers.0.mlp.up_proj.weight has shape \(512, 128\)"):
        grace.load(d)


def test_packed_module_listed_but_absent(dirs, tmp_path):
    d = _copy(dirs, "packed", tmp_path)
    meta = json.loads((d / "awq_quantized_modules.json").read_text())
    meta["modules"].append("model.layers.5.mlp.up_proj")
    (d / "awq_quantized_modules.json").write_text(json.dumps(meta))
    with pytest.raises(GraceError, match=r"awq_quantized_modules.json: module 'model.layers.5.mlp.up_proj' is listed"):
        grace.load(d)


def test_packed_tensors_missing_or_wrong(dirs, tmp_path):
    d = _copy(dirs, "packed", tmp_path)
    f = SafetensorsFile(d / "model.safetensors")
    full = {k: f.read(k) for k in f.keys()}
    t = {k: v for k, v in full.items() if k != "model.layers.1.mlp.down_proj.qweight"}
    write_safetensors(d / "model.safetensors", t)
    with pytest.raises(GraceError, match=r"module 'model.layers.1.mlp.down_proj' is listed but its tensor "
                                         r"model.layers.1.mlp.down_proj.qweight is absent"):
        grace.load(d)
    t = dict(full)
    t["model.layers.1.mlp.down_proj.scales"] = t["model.layers.1.mlp.down_proj.scales"].float()
    write_safetensors(d / "model.safetensors", t)
    with pytest.raises(GraceError, match=r"tensor 'model.layers.1.mlp.down_proj.scales' has dtype torch.float32"):
        grace.load(d)
    t["model.layers.1.mlp.down_proj.scales"] = t["model.layers.1.mlp.down_proj.scales"][:1].half()
    write_safetensors(d / "model.safetensors", t)
    with pytest.raises(GraceError, match=r"tensor 'model.layers.1.mlp.down_proj.scales' has shape \[1, 256\]"):
        grace.load(d)


def test_packed_metadata_inconsistent(dirs, tmp_path):
    d = _copy(dirs, "packed", tmp_path)
    _edit_json(d / "awq_quantized_modules.json", bits=3)
    with pytest.raises(GraceError, match=r"awq_quantized_modules.json: field 'bits' must be 4 or 8"):
        grace.load(d)
    _edit_json(d / "awq_quantized_modules.json", bits=8, version="int8-rowmajor")
    with pytest.raises(GraceError, match=r"field awq_packing .* disagrees"):
        grace.load(d)
    _edit_json(d / "awq_quantized_modules.json", bits=4, group_size=96, version="gemm")
    _edit_json(d / "config.json", awq_packing={"bits": 4, "group_size": 96, "zero_point": 8, "version": "gemm"})
    with pytest.raises(GraceError, match=r"group_size 96 does not divide in_features 256"):
        grace.load(d)
    (d / "awq_quantized_modules.json").unlink()
    with pytest.raises(GraceError, match=r"awq_packing says packed, but awq_quantized_modules.json is missing"):
        grace.load(d)


def test_corrupt_safetensors(dirs, tmp_path):
    d = _copy(dirs, "orig", tmp_path)
    p = d / "model.safetensors"
    raw = p.read_bytes()
    p.write_bytes(raw[:8] + b"{garbage" + raw[16:])
    with pytest.raises(GraceError, match=r"model.safetensors: corrupt safetensors header"):
        grace.load(d)
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(GraceError, match=r"model.safetensors: tensor .* run past the end of the file"):
        grace.load(d)


def test_unexpected_and_missing_tensors(dirs, tmp_path):
    d = _copy(dirs, "orig", tmp_path)
    f = SafetensorsFile(d / "model.safetensors")
    t = {k: f.read(k) for k in f.keys()}
    t["model.extra.weight"] = torch.zeros(2)
    write_safetensors(d / "model.safetensors", t)
    with pytest.raises(GraceError, match=r"tensors not part of this llava model: \['model.extra.weight'\]"):
        grace.load(d)
    del t["model.extra.weight"], t["model.norm.weight"]
    write_safetensors(d / "model.safetensors", t)
    with pytest.raises(GraceError, match=r"tensor 'model.norm.weight' is missing"):
        grace.load(d)


def test_pickle_sidecar_refused(dirs, tmp_path):
    import pickle

    d = _copy(dirs, "qat", tmp_path)
    (d / "qat_quantized_weights.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(d / "qat_quantized_weights.bin", "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    with pytest.raises(GraceError, match="refused|not a readable torch file"):
        grace.load(d)


def test_save_is_atomic(tmp_path):
    v = make_tiny("llava")

    class Broken:
        def save_pretrained(self, d):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(v.model, v.tokenizer, Broken(), tmp_path / "ck", layout="hf", family="llava")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(GraceError, match="layout='original' exists for LLaVA-1.5 only"):
        save_checkpoint(make_tiny("qwen3vl"), None, None, tmp_path / "q", layout="original")
