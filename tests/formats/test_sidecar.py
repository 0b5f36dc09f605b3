"""The QAT sidecar: round trips in both files, and refusal of pickles that run code."""

import os

import pytest
import torch

from grace.formats.metadata import FormatError, PackedMetadata
from grace.formats.qat_sidecar import (
    SIDECAR_BIN,
    SIDECAR_SAFETENSORS,
    load_sidecar,
    open_sidecar,
    read_bin,
    save_sidecar,
)


def _tensors():
    torch.manual_seed(0)
    return {
        "model.layers.0.self_attn.q_proj.weight": torch.randn(8, 256),
        "model.layers.0.self_attn.q_proj.log_scale": torch.randn(16),
        "model.layers.0.mlp.up_proj.weight": torch.randn(8, 256),
        "model.layers.0.mlp.up_proj.log_scale": torch.randn(16),
        "model.layers.0.mlp.up_proj.bias": torch.randn(8),
    }


def test_round_trip_both_files(tmp_path):
    t = _tensors()
    save_sidecar(tmp_path, t)
    assert (tmp_path / SIDECAR_BIN).is_file() and (tmp_path / SIDECAR_SAFETENSORS).is_file()
    g = load_sidecar(tmp_path)  # prefers safetensors
    assert set(g) == {"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj"}
    assert torch.equal(g["model.layers.0.mlp.up_proj"]["bias"], t["model.layers.0.mlp.up_proj.bias"])
    (tmp_path / SIDECAR_SAFETENSORS).unlink()
    g2 = load_sidecar(tmp_path)  # the published .bin alone
    for name, parts in g.items():
        for k, v in parts.items():
            assert torch.equal(g2[name][k], v)
    lazy = open_sidecar(tmp_path)
    assert sorted(lazy.module_names()) == sorted(g)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    p = tmp_path / SIDECAR_BIN
    torch.save({"x.weight": torch.zeros(1), "payload": _Evil()}, p)
    with pytest.raises(FormatError, match="refused to load"):
        read_bin(p)
    with pytest.raises(FormatError, match="refused"):
        load_sidecar(tmp_path)


def test_inconsistent_sidecar_is_named(tmp_path):
    save_sidecar(tmp_path, {"a.weight": torch.zeros(8, 256), "a.log_scale": torch.zeros(5)}, write_bin=False)
    with pytest.raises(FormatError, match=r"a\.log_scale has 5 entries"):
        load_sidecar(tmp_path)


def test_metadata_round_trip_and_errors(tmp_path):
    m = PackedMetadata(4, 128, ["model.layers.0.mlp.up_proj"], {"x": 200})
    m.save(tmp_path)
    m2 = PackedMetadata.load(tmp_path)
    assert m2 == m and m2.group_size_of("x") == 200 and m2.group_size_of("y") == 128
    (tmp_path / "awq_quantized_modules.json").write_text('{"bits": 3, "group_size": 128, "modules": []}')
    with pytest.raises(FormatError, match="'bits' must be 4 or 8"):
        PackedMetadata.load(tmp_path)
