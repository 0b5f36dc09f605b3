"""grace.quantize and friends on a tiny transformers model."""

import pytest
import torch

import grace
from grace import numerics as N
from grace.config import QuantSpec, SpecError, preset
from grace.quant.api import param_groups, qat_modules, sidecar_tensors
from grace.quant.modules import PackedLinear, QATLinear
from grace_testing import make_tiny_llama


def test_quantize_targets_only_decoder_linears_and_shares_parameters():
    m = make_tiny_llama()
    before = {n: p for n, p in m.named_parameters()}
    names = grace.quantize(m, grace.W4G128)
    assert len(names) == 2 * 7
    assert all(".layers." in n for n in names) and not any("lm_head" in n for n in names)
    for n in names:
        mod = m.get_submodule(n)
        assert isinstance(mod, QATLinear)
        assert mod.weight is before[f"{n}.weight"]  # no copy
    keys = set(m.state_dict())
    assert {k for k in before} <= keys  # original names unchanged
    assert f"{names[0]}.log_scale" in keys


def test_spec_patterns_and_presets():
    assert preset("W8G128") == grace.W8G128
    assert preset("w3g64") == QuantSpec(bits=3, group_size=64)
    s = grace.W4G128
    assert s.matches("model.language_model.layers.3.mlp.down_proj")
    assert s.matches("model.layers.0.self_attn.q_proj")  # original LLaVA naming
    assert not s.matches("model.vision_tower.encoder.layers.0.self_attn.q_proj")
    assert not s.matches("model.visual.blocks.0.attn.qkv")
    assert not s.matches("lm_head")
    assert QuantSpec.from_json(s.to_json()) == s
    with pytest.raises(SpecError):
        QuantSpec(bits=5)


def test_bake_puts_weights_exactly_on_grid_and_is_idempotent():
    m = make_tiny_llama()
    grace.quantize(m, grace.W4G128)
    x = torch.randint(0, 128, (1, 10))
    y0 = m(x).logits
    grace.bake(m)
    for mod in qat_modules(m).values():
        s = mod.scales()
        q = N.quantize_codes(mod.weight, s, 4, mod.group_size)
        assert torch.equal(mod.weight.detach(), N.dequantize(q, s, mod.group_size))
    assert torch.equal(m(x).logits, y0)  # fake quant of a baked weight is itself


def test_dequantize_modules_restores_plain_linears():
    m = make_tiny_llama()
    names = grace.quantize(m, grace.W8G128)
    grace.bake(m)
    side = sidecar_tensors(m)
    grace.dequantize_modules(m)
    assert not qat_modules(m)
    assert torch.equal(m.get_submodule(names[0]).weight, side[f"{names[0]}.weight"])


def test_row_wide_group_when_group_does_not_divide():
    lin = torch.nn.Linear(200, 16)
    q = QATLinear(lin, 4, 128)
    assert q.group_size == 200 and q.log_scale.numel() == 16


def test_param_groups_separate_log_scales_without_decay():
    m = make_tiny_llama()
    grace.quantize(m, grace.W4G128)
    groups = {g["name"]: g for g in param_groups(m, lr=1e-3, weight_decay=0.1, scale_lr=1e-4)}
    assert groups["log_scales"]["weight_decay"] == 0.0 and groups["log_scales"]["lr"] == 1e-4
    n_scales = sum(1 for n, _ in m.named_parameters() if n.endswith("log_scale"))
    assert len(groups["log_scales"]["params"]) == n_scales == 14
    assert groups["weights"]["weight_decay"] == 0.1


def test_packed_linear_reference_matches_fake_quant():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 32)
    for bits in (4, 8):
        q = QATLinear(lin, bits, 128)
        p = PackedLinear.from_codes(q.codes(), q.scales(), bits, 128, bias=lin.bias.detach())
        x = torch.randn(3, 256)
        # reference packed path == fake quant up to the fp16 bias storage
        ref = torch.nn.functional.linear(x, q.quantized_weight(), lin.bias.detach().half().float())
        assert torch.allclose(p(x), ref, atol=1e-5, rtol=1e-5)
        assert torch.equal(p.dequantized_weight(), q.quantized_weight().detach())
