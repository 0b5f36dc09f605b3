"""Every family x layout x form round-trips through save -> grace.load with the stated logit equality.

* dense: equal (max |diff| == 0);
* QAT loaded as fake (QATLinear): equal to the in-memory QAT model;
* QAT loaded packed (fp32 checkpoint): equal to the in-memory fake-quant model;
* packed directory loaded in fp32: equal (torch.equal) to the fake-quant model whose
  non-quantized tensors are rounded to fp16 as the packed file stores them (the codes are exact
  and the fp16 scales are the ones the fake-quant forward uses), and within 2e-3 absolute of the
  fp32 fake-quant model (logits of magnitude ~1.5; seen <= 6e-4);
* packed directory loaded in fp16 (the default): within 1e-2 of the fp32 fake-quant model
  (seen <= 1.6e-3).
"""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

import grace
from grace.io import save_checkpoint, save_packed
from grace.models.tiny import make_tiny
from grace.quant.api import packed_modules, qat_modules
from grace.quant.modules import PackedLinear, QATLinear

IMG = Image.new("RGB", (40, 30), (200, 30, 10))
CASES = [("llava", "original"), ("llava", "hf"), ("qwen3vl", "hf")]


def _logits(vlm, inputs):
    with torch.no_grad():
        return vlm.model(**inputs).logits.float()


@pytest.fixture(scope="module")
def dense():
    return {f: make_tiny(f) for f in ("llava", "qwen3vl")}


@pytest.fixture(scope="module")
def qat():
    out = {}
    for f in ("llava", "qwen3vl"):
        for spec in (grace.W4G128, grace.W8G128):
            v = make_tiny(f)
            grace.quantize(v.model, spec)
            # move the weights a little so fake-quant differs from plain rounding of the init
            with torch.no_grad():
                for m in qat_modules(v.model).values():
                    m.log_scale.add_(0.05)
            grace.bake(v.model)
            out[f, spec.bits] = v
    return out


@pytest.mark.parametrize("family, layout", CASES)
def test_dense_roundtrip_is_exact(tmp_path, dense, family, layout):
    v = dense[family]
    p = save_checkpoint(v, None, None, tmp_path / "ck", layout=layout)
    w = grace.load(p)
    assert (w.family, w.layout, w.quant) == (family, layout, None)
    inp = v.prepare(IMG, "What is the color of the circle?")
    assert torch.equal(_logits(v, inp), _logits(w, inp))
    inp = v.prepare(None, "How many?")
    assert torch.equal(_logits(v, inp), _logits(w, inp))


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("family, layout", CASES)
def test_qat_roundtrip_fake_and_packed(tmp_path, qat, family, layout, bits):
    v = qat[family, bits]
    inp = v.prepare(IMG, "What is the color of the circle?")
    ref = _logits(v, inp)
    p = save_checkpoint(v, None, None, tmp_path / "ck", layout=layout)
    assert (p / "qat_quantized_weights.safetensors").is_file() and (p / "qat_quantized_weights.bin").is_file()
    assert (p / "grace_quant.json").is_file()
    fake = grace.load(p, qat_as="fake")
    assert all(isinstance(m, QATLinear) for m in qat_modules(fake.model).values())
    assert len(qat_modules(fake.model)) == len(qat_modules(v.model))
    assert torch.equal(_logits(fake, inp), ref)
    packed = grace.load(p)  # qat_as="packed" by default
    assert packed.quant["bits"] == bits and packed.quant["loaded_as"] == "packed"
    mods = packed_modules(packed.model)
    assert len(mods) == len(qat_modules(v.model)) and all(isinstance(m, PackedLinear) for m in mods.values())
    # codes exact: the packed model's dequantized weights equal the fake-quant weights
    for name, m in qat_modules(v.model).items():
        assert torch.equal(mods[name].dequantized_weight(), m.quantized_weight().float())
    assert torch.equal(_logits(packed, inp), ref)  # fp32 checkpoint: the dense parts are exact too


def _fp16_dense_parts(v):
    """The fake-quant model with every non-quantized float tensor rounded to fp16 (what packed files store)."""
    r = copy.deepcopy(v.model)
    qnames = set(qat_modules(r))
    with torch.no_grad():
        for name, p in r.named_parameters():
            if name.endswith(".log_scale") or name.rsplit(".", 1)[0] in qnames:
                continue
            p.copy_(p.half().float())
    return r


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("family, layout", CASES)
def test_packed_dir_roundtrip(tmp_path, qat, family, layout, bits):
    v = qat[family, bits]
    inp = v.prepare(IMG, "What is the color of the circle?")
    ref = _logits(v, inp)
    p = save_packed(v, None, None, tmp_path / "pk", layout=layout)
    assert (p / "awq_quantized_modules.json").is_file()
    w32 = grace.load(p, dtype="float32")
    assert w32.quant["bits"] == bits and w32.quant["format"] == ("awq-gemm" if bits == 4 else "w8-rowmajor")
    with torch.no_grad():
        ref16 = _fp16_dense_parts(v)(**inp).logits.float()
    got = _logits(w32, inp)
    assert torch.equal(got, ref16)  # exact: same codes, same fp16 scales, same fp16-stored dense parts
    assert (got - ref).abs().max().item() <= 2e-3  # fp16 storage of the dense parts (seen: <= 6e-4)
    w16 = grace.load(p)
    assert next(w16.model.model.language_model.norm.parameters()).dtype == torch.float16
    assert (_logits(w16, inp) - ref).abs().max().item() <= 1e-2  # fp16 compute (seen: <= 1.6e-3)
    lm_dense = v.footprint()["language_model"]
    assert w16.footprint()["language_model"] < lm_dense / 2


def test_packed_written_from_packed_model_is_identical(tmp_path, qat):
    from grace.formats.safetensors import SafetensorsFile

    v = qat["llava", 4]
    a = save_packed(v, None, None, tmp_path / "a", layout="original")
    b = save_packed(grace.load(a), None, None, tmp_path / "b", layout="original")
    fa, fb = SafetensorsFile(a / "model.safetensors"), SafetensorsFile(b / "model.safetensors")
    assert fa.keys() == fb.keys()
    for k in fa.keys():
        assert torch.equal(fa.read(k), fb.read(k)), k
    assert (a / "awq_quantized_modules.json").read_text() == (b / "awq_quantized_modules.json").read_text()


def test_packed_layout_is_what_the_lead_reads(tmp_path, qat):
    import json

    v = qat["llava", 4]
    p = save_packed(v, None, None, tmp_path / "pk", layout="original")
    meta = json.loads((p / "awq_quantized_modules.json").read_text())
    assert meta["bits"] == 4 and meta["group_size"] == 128
    assert "model.layers.0.self_attn.q_proj" in meta["modules"] and len(meta["modules"]) == 14
    cfg = json.loads((p / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["awq_packing"] == {"bits": 4, "group_size": 128, "zero_point": 8, "version": "gemm"}
    from grace.formats.safetensors import SafetensorsFile

    f = SafetensorsFile(p / "model.safetensors")
    q = f.infos["model.layers.0.self_attn.q_proj.qweight"]
    assert q.dtype == torch.int32 and q.shape == (256, 256 // 8)
    assert f.infos["model.layers.0.self_attn.q_proj.scales"].dtype == torch.float16
    assert f.infos["model.layers.0.self_attn.q_proj.qzeros"].shape == (2, 32)
    assert "model.layers.0.self_attn.q_proj.weight" not in f.infos
    assert f.infos["model.embed_tokens.weight"].dtype == torch.float16


def test_bin_shards_and_bin_only_sidecar(tmp_path, qat):
    """Older LLaVA releases ship pytorch_model-*.bin shards; the published sidecar is .bin only."""
    import json

    from grace.formats.safetensors import SafetensorsFile, write_sharded

    v = qat["llava", 4]
    inp = v.prepare(IMG, "What?")
    ref = _logits(v, inp)
    p = save_checkpoint(v, None, None, tmp_path / "ck", layout="original")
    (p / "qat_quantized_weights.safetensors").unlink()  # the published form: .bin sidecar only
    f = SafetensorsFile(p / "model.safetensors")
    sd = {k: f.read(k) for k in f.keys()}
    (p / "model.safetensors").unlink()
    names = sorted(sd)
    halves = [dict((k, sd[k]) for k in names[: len(names) // 2]), dict((k, sd[k]) for k in names[len(names) // 2 :])]
    wm = {}
    for i, h in enumerate(halves):
        fn = f"pytorch_model-0000{i + 1}-of-00002.bin"
        torch.save(h, p / fn)
        wm.update({k: fn for k in h})
    (p / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": wm}))
    assert torch.equal(_logits(grace.load(p), inp), ref)
    # sharded safetensors + index, as transformers writes large checkpoints
    for fn in list(p.glob("pytorch_model*")):
        fn.unlink()
    write_sharded(p, sd, max_shard_bytes=1 << 20)
    assert (p / "model.safetensors.index.json").is_file() and len(list(p.glob("model-*.safetensors"))) > 1
    assert torch.equal(_logits(grace.load(p, qat_as="fake"), inp), ref)


def test_llava_hf_style_in_vocab_image_token(tmp_path):
    """llava-hf conversions add '<image>' to the tokenizer and pad the vocabulary; that works too."""
    from grace.models import families as F

    v = make_tiny("llava")
    v.tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_id = v.tokenizer.convert_tokens_to_ids("<image>")
    assert image_id == 512
    v.model.resize_token_embeddings(512 + 64)
    v.model.config.image_token_id = image_id
    inp = v.prepare(IMG, "What is it?")
    assert int((inp["input_ids"] == image_id).sum()) == 16
    ref = _logits(v, inp)
    w = grace.load(save_checkpoint(v, None, None, tmp_path / "hf", layout="hf"))
    assert w.image_token_id == image_id
    assert type(w.model.get_input_embeddings()) is not F.PlaceholderEmbedding
    assert torch.equal(_logits(w, w.prepare(IMG, "What is it?")), ref)


def test_vision_tower_argument_accepts_a_transformers_clip_dir(tmp_path, dense):
    """``vision_tower=`` may point to a 5.x ``CLIPVisionModel.save_pretrained`` dir (no vision_model. prefix)."""
    import json

    from transformers import CLIPVisionModel

    v = dense["llava"]
    p = save_checkpoint(v, None, None, tmp_path / "ck", layout="original")
    cfg = json.loads((p / "config.json").read_text())
    cfg["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"  # as published: a hub name
    (p / "config.json").write_text(json.dumps(cfg))
    tower = CLIPVisionModel(v.model.config.vision_config)
    tower.load_state_dict(v.model.model.vision_tower.state_dict())
    tower.save_pretrained(tmp_path / "clip-hf")
    w = grace.load(p, vision_tower=tmp_path / "clip-hf")
    inp = v.prepare(IMG, "What?")
    assert torch.equal(_logits(w, inp), _logits(v, inp))
    torch.manual_seed(0)
    assert isinstance(w.generate(IMG, "What?", max_new_tokens=3, temperature=0.8), str)  # sampling path
