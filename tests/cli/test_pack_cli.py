"""`grace pack` and `grace inspect` end to end on a tiny QAT checkpoint, and every error case."""

import json
import sys

import torch
from safetensors.torch import load_file, save_file

from grace.cli.main import main
from grace.formats.checkpoint import CheckpointDir
from grace.formats.metadata import PackedMetadata
from grace.formats.pack_dir import pack_checkpoint
from grace.formats.qat_sidecar import SIDECAR_BIN, SIDECAR_SAFETENSORS
from grace.quant.modules import PackedLinear


def run_cli(monkeypatch, capsys, *args):
    capsys.readouterr()  # drop whatever earlier setup printed
    monkeypatch.setattr(sys, "argv", ["grace", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_pack_then_inspect(tiny_qat_dir, tmp_path, monkeypatch, capsys):
    src, names = tiny_qat_dir
    dst = tmp_path / "packed"
    code, out, err = run_cli(monkeypatch, capsys, "pack", str(src), "--out", str(dst))
    assert code == 0, err
    assert "max int-code error 0" in out and "footprint" in out
    meta = PackedMetadata.load(dst)
    assert meta.bits == 4 and meta.group_size == 128 and sorted(meta.modules) == sorted(names)
    cfg = json.loads((dst / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["awq_packing"]["zero_point"] == 8
    assert (dst / "tokenizer_config.json").is_file()
    assert not (dst / SIDECAR_BIN).exists()
    tensors = load_file(str(dst / "model.safetensors"))
    n = names[0]
    assert tensors[f"{n}.qweight"].dtype == torch.int32 and f"{n}.weight" not in tensors
    # the packed layer reproduces the baked dense weight of the QAT checkpoint exactly
    dense = load_file(str(src / "model.safetensors"))[f"{n}.weight"]
    mod = PackedLinear(dense.shape[1], dense.shape[0], 4, 128, bias=False)
    for k in ("qweight", "qzeros", "scales"):
        getattr(mod, k).copy_(tensors[f"{n}.{k}"])
    assert torch.equal(mod.dequantized_weight(), dense.float())

    code, out, err = run_cli(monkeypatch, capsys, "inspect", str(dst))
    assert code == 0, err
    assert "packed" in out and "14" in out and "footprint.language_model" in out
    code, out, _ = run_cli(monkeypatch, capsys, "inspect", str(src))
    assert code == 0 and "qat" in out


def test_pack_w8_and_sharded_output(tmp_path):
    import grace
    from grace_testing import make_tiny_llama, save_qat_checkpoint

    src = tmp_path / "w8"
    save_qat_checkpoint(make_tiny_llama(1), src, grace.W8G128)
    r = pack_checkpoint(src, tmp_path / "p8", shard_bytes=200_000, progress=False)
    assert r.bits == 8 and r.max_code_error == 0
    ck = CheckpointDir.open(tmp_path / "p8")
    assert len(ck.weight_files) > 1 and (tmp_path / "p8" / "model.safetensors.index.json").is_file()
    assert ck.index()["model.layers.0.mlp.up_proj.qweight"].dtype == "I8"


def _expect_error(monkeypatch, capsys, args, pattern):
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2, (out, err)
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert pattern in lines[0], lines[0]


def test_pack_errors(tiny_qat_dir, tmp_path, monkeypatch, capsys):
    src, names = tiny_qat_dir
    dst = tmp_path / "out"
    # destination exists
    dst.mkdir()
    _expect_error(monkeypatch, capsys, ["pack", str(src), "--out", str(dst)], "already exists")
    dst.rmdir()
    # bits not 4/8
    _expect_error(monkeypatch, capsys, ["pack", str(src), "--out", str(dst), "--bits", "3"], "bits must be 4 or 8")
    assert not dst.exists()
    # wrong bits for the codes (W4 weights are not an 8-bit grid problem, but 8-bit codes don't fit 4)
    src8 = tmp_path / "src8"
    import grace
    from grace_testing import make_tiny_llama, save_qat_checkpoint

    save_qat_checkpoint(make_tiny_llama(2), src8, grace.W8G128)
    _expect_error(monkeypatch, capsys, ["pack", str(src8), "--out", str(dst), "--bits", "4"], "outside the 4-bit range")
    assert not dst.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_pack_errors_in_the_files(tiny_qat_dir, tmp_path, monkeypatch, capsys):
    src, names = tiny_qat_dir
    dst = tmp_path / "out"
    side = load_file(str(src / SIDECAR_SAFETENSORS))
    # a sidecar module absent from the weights
    bad = dict(side)
    bad["model.layers.9.mlp.up_proj.weight"] = side[f"{names[0]}.weight"].clone()
    bad["model.layers.9.mlp.up_proj.log_scale"] = side[f"{names[0]}.log_scale"].clone()
    save_file(bad, str(src / SIDECAR_SAFETENSORS))
    _expect_error(monkeypatch, capsys, ["pack", str(src), "--out", str(dst)], "model.layers.9.mlp.up_proj")
    # a shape mismatch
    bad = dict(side)
    bad[f"{names[0]}.weight"] = side[f"{names[0]}.weight"][:8].clone()
    save_file(bad, str(src / SIDECAR_SAFETENSORS))
    _expect_error(monkeypatch, capsys, ["pack", str(src), "--out", str(dst)], f"{names[0]}.weight: shape")
    save_file(side, str(src / SIDECAR_SAFETENSORS))
    # a corrupt safetensors header
    wf = src / "model.safetensors"
    good = wf.read_bytes()
    wf.write_bytes(b"\xff" * 8 + b"{not json")
    _expect_error(monkeypatch, capsys, ["pack", str(src), "--out", str(dst)], "corrupt safetensors header")
    wf.write_bytes(good)
    # a missing sidecar
    (src / SIDECAR_SAFETENSORS).unlink()
    (src / SIDECAR_BIN).unlink()
    _expect_error(monkeypatch, capsys, ["pack", str(src), "--out", str(dst)], "not a QAT checkpoint")
    assert not dst.exists()


def test_row_wide_groups_are_recorded(tmp_path):
    """A layer whose in_features the group does not divide packs with one row-wide group."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import grace
    from grace_testing import save_qat_checkpoint

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=256, intermediate_size=200, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=4)
    save_qat_checkpoint(LlamaForCausalLM(cfg), tmp_path / "q", grace.W4G128)
    r = pack_checkpoint(tmp_path / "q", tmp_path / "p", progress=False)
    assert r.group_size_overrides == {"model.layers.0.mlp.down_proj": 200}
    assert PackedMetadata.load(tmp_path / "p").group_size_of("model.layers.0.mlp.down_proj") == 200


def test_pack_matches_runtime_sidecar_names_to_legacy_llava_keys(tmp_path):
    """transformers 5 saves Llava as language_model.model.*; a trainer's sidecar may use runtime names."""
    import grace
    from grace.formats.qat_sidecar import save_sidecar, save_spec
    from grace.models.tiny import make_tiny
    from grace.quant.api import sidecar_tensors

    vlm = make_tiny("llava", "student", 0)
    names = grace.quantize(vlm.model, grace.W4G128)
    grace.bake(vlm.model)
    side = sidecar_tensors(vlm.model)
    assert names[0].startswith("model.language_model.")
    grace.dequantize_modules(vlm.model)
    src = tmp_path / "qat"
    vlm.model.save_pretrained(src)
    keys = CheckpointDir.open(src).index()
    assert any(k.startswith("language_model.model.") for k in keys)  # the legacy layout on disk
    save_sidecar(src, side)
    save_spec(src, grace.W4G128.to_dict())
    r = pack_checkpoint(src, tmp_path / "packed", progress=False)
    assert r.max_code_error == 0 and r.n_modules == len(names)
    meta = PackedMetadata.load(tmp_path / "packed")
    assert all(m.startswith("language_model.model.") for m in meta.modules)
