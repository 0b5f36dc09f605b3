"""compressed-tensors pack-quantized and AWQ-with-config: golden words, round trips, configs, names."""

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grace import numerics
from grace.errors import GraceError
from grace.export import names as N
from grace.formats import awq_hf
from grace.formats import compressed_tensors as CT
from grace.formats.metadata import FormatError

U32 = 1 << 32


# ---------------------------------------------------------------------------------------------
# pack-quantized: hand-worked words
# ---------------------------------------------------------------------------------------------


def test_int4_golden_word():
    # codes -8,-7,-1,0,1,2,6,7 -> unsigned u = code + 8 = 0,1,7,8,9,10,14,15; column j sits in
    # bits 4j..4j+3 (least significant first): nibbles from the top F,E,A,9,8,7,1,0 -> 0xFEA98710,
    # stored as the signed int32 with the same bits.
    codes = torch.tensor([[-8, -7, -1, 0, 1, 2, 6, 7]], dtype=torch.int8)
    w = CT.pack_codes(codes, 4)
    assert w.dtype == torch.int32 and w.shape == (1, 1)
    assert w.item() == 0xFEA98710 - U32
    assert torch.equal(CT.unpack_codes(w, 4), codes)


def test_int8_golden_word():
    # codes -128,-1,0,127 -> u = 0,127,128,255 -> bytes (LSB first) 00 7F 80 FF -> 0xFF807F00
    codes = torch.tensor([[-128, -1, 0, 127]], dtype=torch.int8)
    w = CT.pack_codes(codes, 8)
    assert w.item() == 0xFF807F00 - U32
    assert torch.equal(CT.unpack_codes(w, 8), codes)


def test_int4_two_words_and_rows():
    # row 0: columns 0..15 = codes 0..7 then -1 x 8 -> word 0 = 0xFEDCBA98, word 1 = 0x77777777
    # row 1: all zero codes -> u = 8 everywhere -> 0x88888888 twice
    codes = torch.tensor([list(range(8)) + [-1] * 8, [0] * 16], dtype=torch.int8)
    w = CT.pack_codes(codes, 4)
    assert w.shape == (2, 2)
    assert w.tolist() == [[0xFEDCBA98 - U32, 0x77777777], [0x88888888 - U32, 0x88888888 - U32]]


def test_pack_tensors_and_dequant_formula():
    codes = torch.tensor([[3, -2, 0, 7, -8, 1, 1, 1], [5, 5, 5, 5, -1, -1, -1, -1]], dtype=torch.int8)
    scales = torch.tensor([[0.5, 0.25], [2.0, 1.0]])  # g = 4
    t = CT.pack(codes, scales, 4, torch.float16, "m")
    assert set(t) == {"weight_packed", "weight_scale", "weight_shape"}
    assert t["weight_packed"].shape == (2, 1) and t["weight_scale"].dtype == torch.float16
    assert t["weight_shape"].dtype == torch.int64 and t["weight_shape"].tolist() == [2, 8]
    c, s, g = CT.unpack(t["weight_packed"], t["weight_scale"], t["weight_shape"], 4, "m")
    assert g == 4 and torch.equal(c, codes) and torch.equal(s, scales.half())
    w = numerics.dequantize(c, s, g)
    assert w[0].tolist() == [1.5, -1.0, 0.0, 3.5, -2.0, 0.25, 0.25, 0.25]
    assert w[1].tolist() == [10.0, 10.0, 10.0, 10.0, -1.0, -1.0, -1.0, -1.0]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([4, 8]), st.integers(1, 6), st.integers(1, 3), st.sampled_from([8, 32, 128]),
       st.sampled_from([torch.float16, torch.bfloat16, torch.float32]), st.integers(0, 2**16))
def test_round_trip_identity(bits, out_f, n_groups, g, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    codes = torch.randint(lo, hi, (out_f, n_groups * g), generator=gen).to(torch.int8)
    scales = (torch.rand(out_f, n_groups, generator=gen) + 1e-3).to(dtype)
    t = CT.pack(codes, scales, bits, dtype)
    assert t["weight_packed"].shape == (out_f, n_groups * g * bits // 32)
    c, s, g2 = CT.unpack(**t, bits=bits)
    assert g2 == g and torch.equal(c, codes) and torch.equal(s, scales)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([4, 8]), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**16))
def test_matches_the_compressed_tensors_packer(bits, out_f, words, seed):
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    gen = torch.Generator().manual_seed(seed)
    in_f = words * 32 // bits
    codes = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (out_f, in_f), generator=gen).to(torch.int8)
    theirs = helpers.pack_to_int32(codes, bits)
    assert torch.equal(CT.pack_codes(codes, bits), theirs)
    assert torch.equal(CT.unpack_codes(theirs, bits), codes)


def test_pack_refusals_name_the_module():
    with pytest.raises(CT.CompressedTensorsError, match="q_proj: group size 128 does not divide in_features 96"):
        CT.check_expressible("q_proj", 8, 96, 128, 4)
    with pytest.raises(CT.CompressedTensorsError, match="m: pack-quantized export supports 4 or 8 bits; got 3"):
        CT.check_expressible("m", 8, 128, 128, 3)
    with pytest.raises(CT.CompressedTensorsError, match=r"m: 4-bit codes must lie in \[-8, 7\]"):
        CT.pack(torch.full((1, 8), 9, dtype=torch.int8), torch.ones(1, 1), 4, name="m")
    with pytest.raises(GraceError):  # every refusal is a GraceError (one CLI line)
        CT.pack(torch.zeros(2, 8, dtype=torch.int8), torch.ones(3, 1), 4, name="m")


def test_unpack_checks_shapes_against_weight_shape():
    t = CT.pack(torch.zeros(4, 16, dtype=torch.int8), torch.ones(4, 2), 4)
    with pytest.raises(FormatError, match=r"layer\.weight_packed has shape \(4, 2\); expected \(4, 4\)"):
        CT.unpack(t["weight_packed"], t["weight_scale"], [4, 32], 4, "layer")
    with pytest.raises(FormatError, match=r"layer\.weight_scale has shape \(3, 2\)"):
        CT.unpack(t["weight_packed"], torch.ones(3, 2), t["weight_shape"], 4, "layer")
    with pytest.raises(FormatError, match="weight_shape must be"):
        CT.unpack(t["weight_packed"], t["weight_scale"], [4], 4, "layer")


# ---------------------------------------------------------------------------------------------
# pack-quantized: config
# ---------------------------------------------------------------------------------------------


def test_config_block_round_trip():
    qc = CT.config_block(8, 128, ["re:.*vision_tower.*", "re:.*lm_head"])
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    assert qc["quantization_status"] == "compressed"
    w = qc["config_groups"]["group_0"]["weights"]
    assert (w["num_bits"], w["type"], w["symmetric"], w["strategy"], w["group_size"]) == (8, "int", True, "group", 128)
    assert qc["config_groups"]["group_0"]["targets"] == ["Linear"]
    s = CT.parse_config(qc)
    assert (s.bits, s.group_size, s.targets, s.ignore) == (8, 128, ("Linear",), ("re:.*vision_tower.*", "re:.*lm_head"))


@pytest.mark.parametrize("edit, field", [
    (lambda q: q.pop("quantization_status"), "quantization_status"),
    (lambda q: q.update(quantization_status="frozen"), "quantization_status"),
    (lambda q: q["config_groups"]["group_0"].update(format="naive-quantized"), "format"),
    (lambda q: q["config_groups"]["group_0"]["weights"].update(symmetric=False), "symmetric"),
    (lambda q: q["config_groups"]["group_0"]["weights"].update(num_bits=3), "num_bits"),
    (lambda q: q["config_groups"].update(group_1={}), "exactly one group"),
    (lambda q: q.update(quant_method="awq"), "quant_method"),
])
def test_parse_config_refusals(edit, field):
    qc = CT.config_block(4, 128, [])
    edit(qc)
    with pytest.raises(FormatError, match=re.escape(field)):
        CT.parse_config(qc, "d/config.json")


def test_matching_rules():
    # re: patterns use re.match (anchored at the start only); plain strings are exact names or classes
    assert CT.matches("lm_head", ["re:.*lm_head"]) and CT.matches("language_model.lm_head", ["re:.*lm_head"])
    assert not CT.matches("model.vision_tower.encoder.layers.0.mlp.fc1", ["re:vision_tower.*"])
    assert CT.matches("vision_tower.vision_model.encoder.layers.0.mlp.fc1", ["re:.*vision_tower.*"])
    assert CT.matches("lm_head", ["lm_head"]) and not CT.matches("x.lm_head", ["lm_head"])
    assert CT.matches("anything", ["Linear"], ("Linear",))
    s = CT.Scheme(4, 128, ("Linear",), ("re:.*lm_head",))
    assert CT.quantized_by_scheme("model.language_model.layers.0.mlp.up_proj", s)
    assert not CT.quantized_by_scheme("lm_head", s)


# ---------------------------------------------------------------------------------------------
# AWQ with a standard quantization_config
# ---------------------------------------------------------------------------------------------


def test_awq_config_and_refusals():
    qc = awq_hf.config_block(128, ["model.vision_tower", "vision_tower"])
    assert qc == {"quant_method": "awq", "version": "gemm", "bits": 4, "group_size": 128, "zero_point": True,
                  "modules_to_not_convert": ["model.vision_tower", "vision_tower"]}
    assert awq_hf.parse_config(qc) == (4, 128, ["model.vision_tower", "vision_tower"])
    with pytest.raises(FormatError, match="bits must be 4"):
        awq_hf.parse_config({**qc, "bits": 8})
    with pytest.raises(FormatError, match="version"):
        awq_hf.parse_config({**qc, "version": "gemv"})
    with pytest.raises(awq_hf.AwqExportError, match="layers.3.mlp.up_proj: AWQ GEMM is 4-bit only"):
        awq_hf.check_expressible("layers.3.mlp.up_proj", 16, 128, 128, 8)
    with pytest.raises(awq_hf.AwqExportError, match="k_proj: out_features 12 is not divisible by 8"):
        awq_hf.check_expressible("k_proj", 12, 128, 128, 4)
    with pytest.raises(awq_hf.AwqExportError, match="o_proj: group size 128 does not divide in_features 96"):
        awq_hf.check_expressible("o_proj", 16, 96, 128, 4)


def test_awq_pack_round_trip_is_the_awq_gemm_layout():
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(-8, 8, (16, 256), generator=gen).to(torch.int8)
    scales = (torch.rand(16, 2, generator=gen) + 0.01).half().float()
    t = awq_hf.pack(codes, scales, "m")
    assert t["qweight"].shape == (256, 2) and t["qzeros"].shape == (2, 2) and t["scales"].shape == (2, 16)
    c, s, g = awq_hf.unpack(**t)
    assert g == 128 and torch.equal(c, codes) and torch.equal(s.float(), scales)


@pytest.mark.parametrize("name", [
    "model.vision_tower.encoder.layers.0.mlp.fc1", "model.multi_modal_projector.linear_1", "lm_head",
    "model.language_model.layers.1.mlp.down_proj", "model.language_model.layers.11.mlp.down_proj",
    "model.visual.blocks.0.attn.qkv",
])
def test_awq_skip_rule_equals_transformers(name):
    from transformers.quantizers.quantizers_utils import should_convert_module

    pats = ["model.vision_tower", "vision_tower", "model.multi_modal_projector", "lm_head",
            "model.language_model.layers.1.mlp.down_proj", "model.visual"]
    assert awq_hf.transformers_skips(name, pats) == (not should_convert_module(name, pats))


# ---------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orig, runtime, written", [
    ("model.layers.3.self_attn.q_proj.weight", "model.language_model.layers.3.self_attn.q_proj.weight",
     "language_model.model.layers.3.self_attn.q_proj.weight"),
    ("model.embed_tokens.weight", "model.language_model.embed_tokens.weight",
     "language_model.model.embed_tokens.weight"),
    ("model.norm.weight", "model.language_model.norm.weight", "language_model.model.norm.weight"),
    ("lm_head.weight", "lm_head.weight", "language_model.lm_head.weight"),
    ("model.mm_projector.0.bias", "model.multi_modal_projector.linear_1.bias", "multi_modal_projector.linear_1.bias"),
    ("model.mm_projector.2.weight", "model.multi_modal_projector.linear_2.weight",
     "multi_modal_projector.linear_2.weight"),
])
def test_original_llava_names(orig, runtime, written):
    assert N.llava_original_to_runtime(orig) == runtime
    assert N.runtime_to_written("llava", runtime) == written
    assert N.llava_hf_to_runtime(written) == runtime  # the written layout reads back


def test_dropped_and_clip_names():
    assert N.llava_original_to_runtime("model.layers.0.self_attn.rotary_emb.inv_freq") is None
    assert N.llava_original_to_runtime("model.vision_tower.vision_tower.vision_model.embeddings.x") is None
    assert N.clip_to_runtime("vision_model.encoder.layers.0.mlp.fc1.weight") == \
        "model.vision_tower.encoder.layers.0.mlp.fc1.weight"
    assert N.clip_to_runtime("encoder.layers.0.mlp.fc1.weight") == "model.vision_tower.encoder.layers.0.mlp.fc1.weight"
    assert N.clip_to_runtime("text_model.encoder.layers.0.mlp.fc1.weight") is None
    assert N.runtime_to_written("llava", "model.vision_tower.post_layernorm.weight") == \
        "vision_tower.vision_model.post_layernorm.weight"
    assert N.runtime_to_written("qwen3vl", "model.visual.merger.linear_fc1.weight") == \
        "model.visual.merger.linear_fc1.weight"


def test_exact_ignore_pattern_matches_transformers_and_vllm_names_only():
    p = N.ct_exact_pattern("model.language_model.layers.1.mlp.down_proj")
    assert CT.matches("model.language_model.layers.1.mlp.down_proj", [p])  # transformers 5.x
    assert CT.matches("language_model.model.layers.1.mlp.down_proj", [p])  # vLLM
    assert not CT.matches("model.language_model.layers.11.mlp.down_proj", [p])
    assert not CT.matches("model.language_model.layers.1.mlp.down_proj_x", [p])
