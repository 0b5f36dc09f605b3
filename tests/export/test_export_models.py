"""End to end: tiny LLaVA / Qwen3-VL -> QAT checkpoint -> grace export -> plain transformers load.

The reference is the fake-quant model as grace holds it: the QAT checkpoint loaded with
``from_pretrained`` in the export dtype and its quantized linears wrapped back in ``QATLinear``
with the sidecar's log-scales (so both sides are built the same way; a model cast with
``.to(dtype)`` after construction also casts the rotary buffers and differs for that reason
alone). With ``--dtype float16`` the export must reproduce it bit for bit (compressed-tensors
dequantises ``code * fp16 scale`` in fp16, which equals fp16(code * scale) since the fp32
product is exact). bf16 stores the fp16-learned scales rounded to bf16, so a tolerance applies.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import grace
from grace.errors import GraceError
from grace.export import export_checkpoint
from grace.export.names import LM_PREFIX
from grace.formats import awq_hf
from grace.formats import compressed_tensors as CT
from grace.formats.qat_sidecar import load_sidecar, save_sidecar, save_spec
from grace.quant.api import _set_module, sidecar_tensors
from grace.quant.modules import QATLinear

VOCAB = 300
LLAVA_IMAGE_ID = VOCAB - 1  # the hf-layout tiny model keeps its image token inside the vocabulary
MEASURED: dict[str, float] = {}  # max |delta logits| per case, printed after the module's tests (-s)


@pytest.fixture(scope="module", autouse=True)
def _print_measured():
    yield
    for k, v in MEASURED.items():
        print(f"\nmax|dlogits| {k}: {v:.3e}")


# ---------------------------------------------------------------------------------------------
# tiny models
# ---------------------------------------------------------------------------------------------


def tiny_llava(seed: int = 0, **text_overrides):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=64)
    kw = dict(vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    text = LlamaConfig(**{**kw, **text_overrides})
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=LLAVA_IMAGE_ID, image_seq_length=16)
    return LlavaForConditionalGeneration(cfg).eval()


def tiny_qwen3vl(seed: int = 0):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Qwen3VLConfig(
        text_config=dict(vocab_size=320, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=256,
                         rope_scaling={"rope_type": "default", "mrope_section": [8, 12, 12], "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=256,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                           deepstack_visual_indexes=[0]),
        image_token_id=300, video_token_id=301, vision_start_token_id=302, vision_end_token_id=303,
        tie_word_embeddings=False)
    return Qwen3VLForConditionalGeneration(cfg).eval()


def save_qat(model, out, spec, prefix_map=None) -> list[str]:
    """Quantize + bake in memory, then save as a QAT checkpoint (dense grid weights + sidecar)."""
    names = grace.quantize(model, spec)
    grace.bake(model)
    side = sidecar_tensors(model, prefix_map)
    grace.dequantize_modules(model)
    model.save_pretrained(out)
    save_sidecar(out, side, write_bin=False)
    save_spec(out, spec.to_dict())
    return names


def llava_inputs(image_id: int, dtype, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, VOCAB - 2, (9,), generator=g)
    ids = torch.cat([torch.tensor([1]), text[:3], torch.full((16,), image_id), text[3:]]).unsqueeze(0)
    return {"input_ids": ids, "pixel_values": torch.randn(1, 3, 32, 32, generator=g).to(dtype)}


def qwen_inputs(dtype, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, 290, (8,), generator=g)
    ids = torch.cat([text[:2], torch.tensor([302, 300, 300, 300, 300, 303]), text[2:]]).unsqueeze(0)
    return {"input_ids": ids, "pixel_values": torch.randn(16, 1536, generator=g).to(dtype),
            "image_grid_thw": torch.tensor([[1, 4, 4]]), "mm_token_type_ids": (ids == 300).long()}


def load_plain(path, dtype):
    """What a user without grace does."""
    from transformers import AutoModelForImageTextToText

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).eval()


def reference_model(qat_dir, dtype, bits: int):
    """The QAT checkpoint loaded like any checkpoint, its quantized linears made fake-quant again."""
    m = load_plain(qat_dir, dtype)
    for name, parts in load_sidecar(qat_dir).items():
        lin = m.get_submodule(name)
        g = lin.in_features // (parts["log_scale"].numel() // lin.out_features)
        q = QATLinear(lin, bits, g, torch.float16, init_scales=False)
        q.log_scale.data.copy_(parts["log_scale"])
        _set_module(m, name, q)
    return m


@torch.no_grad()
def logits(model, inputs):
    return model(**inputs).logits.float()


def max_diff(a, b) -> float:
    return float((a - b).abs().max())


# One QAT checkpoint per (family, bits), shared by the tests of this file (keeps it fast).
_BUILDERS = {"llava": tiny_llava, "qwen3vl": tiny_qwen3vl}


@pytest.fixture(scope="module")
def qat_dirs(tmp_path_factory):
    made: dict[tuple[str, str], tuple] = {}

    def get(family: str, spec_name: str):
        if (family, spec_name) not in made:
            d = tmp_path_factory.mktemp(f"qat-{family}-{spec_name}")
            names = save_qat(_BUILDERS[family](), d, getattr(grace, spec_name))
            made[family, spec_name] = (d, names)
        return made[family, spec_name]

    return get


# ---------------------------------------------------------------------------------------------
# compressed-tensors, transformers layout sources
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec_name", ["W4G128", "W8G128"])
def test_llava_hf_qat_to_compressed_tensors_is_bit_exact(tmp_path, qat_dirs, spec_name):
    spec = getattr(grace, spec_name)
    qat, names = qat_dirs("llava", spec_name)
    dst = tmp_path / "ct"
    r = export_checkpoint(qat, dst, "compressed-tensors", progress=False)
    assert r.n_modules == len(names) == 14 and r.exact and r.bits == spec.bits and r.group_size == 128

    cfg = json.loads((dst / "config.json").read_text())
    scheme = CT.parse_config(cfg["quantization_config"])
    assert (scheme.bits, scheme.group_size) == (spec.bits, 128)
    assert cfg["quantization_config"]["quantization_status"] == "compressed"

    inputs = llava_inputs(LLAVA_IMAGE_ID, torch.float16)
    out = load_plain(dst, torch.float16)
    ref = reference_model(qat, torch.float16, spec.bits)
    # the loaded export is a plain Linear with packed parameters (compressed on load)
    q = out.get_submodule(names[0])
    assert type(q) is torch.nn.Linear and q.weight_packed.dtype == torch.int32
    a, b = logits(out, inputs), logits(ref, inputs)
    MEASURED[f"llava hf {spec_name} ct fp16"] = max_diff(a, b)
    assert torch.equal(a, b), max_diff(a, b)  # bit-exact
    # every quantized weight decompressed equals the fake-quantized weight exactly
    for n in names:
        assert torch.equal(out.get_submodule(n).weight, ref.get_submodule(n).quantized_weight())
    # the vision tower and projector stayed dense and equal
    assert torch.equal(out.model.vision_tower.encoder.layers[0].mlp.fc1.weight,
                       ref.model.vision_tower.encoder.layers[0].mlp.fc1.weight)


def test_llava_bf16_export_rounds_scales_only(tmp_path, qat_dirs):
    qat, _ = qat_dirs("llava", "W4G128")
    r = export_checkpoint(qat, tmp_path / "ct", "compressed-tensors", dtype="bfloat16", progress=False)
    assert r.max_code_error == 0 and 0 < r.scale_max_rel_change <= 2 ** -8  # bf16 unit roundoff
    inputs = llava_inputs(LLAVA_IMAGE_ID, torch.bfloat16)
    a = logits(load_plain(tmp_path / "ct", torch.bfloat16), inputs)
    b = logits(reference_model(qat, torch.bfloat16, 4), inputs)
    d = max_diff(a, b)
    scale = float(b.abs().max())
    MEASURED[f"llava hf W4G128 ct bf16 (max|logit| {scale:.2f})"] = d
    assert d <= 0.05 * scale, (d, scale)


@pytest.mark.parametrize("spec_name", ["W4G128", "W8G128"])
def test_qwen3vl_qat_to_compressed_tensors_is_bit_exact(tmp_path, qat_dirs, spec_name):
    spec = getattr(grace, spec_name)
    qat, names = qat_dirs("qwen3vl", spec_name)
    dst = tmp_path / "ct"
    r = export_checkpoint(qat, dst, "compressed-tensors", progress=False)
    assert r.exact and r.n_modules == len(names) == 14
    assert r.ignore == ["re:.*visual.*", "re:.*lm_head"]
    inputs = qwen_inputs(torch.float16)
    a = logits(load_plain(dst, torch.float16), inputs)
    b = logits(reference_model(qat, torch.float16, spec.bits), inputs)
    MEASURED[f"qwen3vl {spec_name} ct fp16"] = max_diff(a, b)
    assert torch.equal(a, b), max_diff(a, b)


# ---------------------------------------------------------------------------------------------
# original LLaVA layout + separate CLIP directory
# ---------------------------------------------------------------------------------------------


def runtime_to_original(name: str) -> str:
    if name.startswith(LM_PREFIX):
        return "model." + name[len(LM_PREFIX):]
    if name.startswith("model.multi_modal_projector.linear_"):
        i = name[len("model.multi_modal_projector.linear_")]
        return f"model.mm_projector.{0 if i == '1' else 2}" + name[len("model.multi_modal_projector.linear_1"):]
    return name


def write_tiny_tokenizer(d):
    """A 300-piece SentencePiece BPE model in the original LLaVA form (tokenizer.model + LlamaTokenizer)."""
    import io
    import random

    import sentencepiece as spm

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(2, 7))) for _ in range(400)]
    lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(2000)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=VOCAB,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   character_coverage=1.0, minloglevel=2)
    (d / "tokenizer.model").write_bytes(buf.getvalue())
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": None, "add_bos_token": True, "add_eos_token": False, "legacy": False, "model_max_length": 2048}))


def write_original_llava(model, d, clip_dir, spec, *, embed_clip: bool = False):
    """The haotian-liu/LLaVA layout: original keys + config fields, no vision weights (CLIP separate)."""
    from safetensors.torch import save_file

    names = grace.quantize(model, spec)
    grace.bake(model)
    side = sidecar_tensors(model, runtime_to_original)
    grace.dequantize_modules(model)
    model.model.vision_tower.save_pretrained(clip_dir)  # a CLIPVisionModel directory
    sd = {}
    for k, v in model.state_dict().items():
        if k.startswith("model.vision_tower."):
            if embed_clip:  # self-trained checkpoints carry a copy; the CLIP dir wins
                sd["model.vision_tower.vision_tower.vision_model." + k[len("model.vision_tower."):]] = v * 0
            continue
        sd[runtime_to_original(k)] = v.contiguous()
    d.mkdir()
    save_file(sd, str(d / "model.safetensors"))
    t = model.config.text_config
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama", "vocab_size": VOCAB,
        "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads, "hidden_act": "silu", "max_position_embeddings": 128,
        "rms_norm_eps": t.rms_norm_eps, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0, "tie_word_embeddings": False, "torch_dtype": "float16",
        "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_hidden_size": 64,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "image_aspect_ratio": "pad", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "tokenizer_model_max_length": 2048,
    }))
    (d / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}))
    write_tiny_tokenizer(d)
    save_sidecar(d, side, write_bin=False)
    save_spec(d, spec.to_dict())
    return names


def test_original_llava_to_compressed_tensors(tmp_path):
    model = tiny_llava(3)
    qat_hf = tmp_path / "qat_hf"  # the same weights in the transformers layout, for the reference
    src, clip = tmp_path / "orig", tmp_path / "clip"
    names = write_original_llava(model, src, clip, grace.W4G128, embed_clip=True)
    save_qat_twin = tiny_llava(3)
    save_qat(save_qat_twin, qat_hf, grace.W4G128)

    dst = tmp_path / "ct"
    r = export_checkpoint(src, dst, "compressed-tensors", vision_tower=clip, progress=False)
    assert r.exact and r.layout == "original" and r.n_modules == len(names) == 14
    assert r.added_token_ids == [VOCAB, VOCAB + 1]
    assert any("embedded CLIP" in n for n in r.notes)
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["model_type"] == "llava" and cfg["image_token_index"] == VOCAB
    assert cfg["text_config"]["vocab_size"] == VOCAB + 2 and cfg["text_config"]["pad_token_id"] == VOCAB + 1
    assert cfg["vision_feature_layer"] == -2 and cfg["vision_feature_select_strategy"] == "default"
    gen = json.loads((dst / "generation_config.json").read_text())
    assert gen["suppress_tokens"] == [VOCAB, VOCAB + 1] and gen["pad_token_id"] == VOCAB + 1

    out = load_plain(dst, torch.float16)
    ref = reference_model(qat_hf, torch.float16, 4)
    a = logits(out, llava_inputs(VOCAB, torch.float16))
    b = logits(ref, llava_inputs(LLAVA_IMAGE_ID, torch.float16))
    MEASURED["llava original W4G128 ct fp16"] = max_diff(a[..., :VOCAB], b)
    assert torch.equal(a[..., :VOCAB], b)  # the text vocabulary is bit-exact
    # the appended rows score the mean logit: never the argmax
    assert (a[..., VOCAB:].max(-1).values < a[..., :VOCAB].max(-1).values).all()

    # tokenizer + processor: plain AutoProcessor expands <image> to the 16 placeholder ids
    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(dst)
    img = Image.fromarray((np.random.default_rng(0).random((20, 40, 3)) * 255).astype("uint8"))
    assert proc.tokenizer.convert_tokens_to_ids(["<image>", "<pad>"]) == [VOCAB, VOCAB + 1]
    assert proc.tokenizer("abc de").input_ids == [1, *proc.tokenizer("abc de", add_special_tokens=False).input_ids]
    prompt = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}],
                                      add_generation_prompt=True)
    assert prompt.startswith("A chat between a curious user") and prompt.endswith(" USER: <image>\nQ? ASSISTANT:")
    enc = proc(images=img, text="abc <image>\nde fg", return_tensors="pt")
    assert int((enc.input_ids == VOCAB).sum()) == 16 and enc.pixel_values.shape == (1, 3, 32, 32)
    with torch.no_grad():
        gen_ids = out.generate(**{k: v.to(torch.float16) if v.is_floating_point() else v for k, v in enc.items()},
                               max_new_tokens=4, do_sample=False)
    assert gen_ids.shape[1] == enc.input_ids.shape[1] + 4


def test_original_llava_needs_a_clip_dir(tmp_path):
    src, clip = tmp_path / "orig", tmp_path / "clip"
    write_original_llava(tiny_llava(4), src, clip, grace.W4G128)
    with pytest.raises(GraceError, match="--vision-tower CLIP_DIR"):
        export_checkpoint(src, tmp_path / "x", "compressed-tensors", progress=False)
    # mm_vision_tower pointing at a local CLIP directory is used without the option
    cfg = json.loads((src / "config.json").read_text())
    cfg["mm_vision_tower"] = str(clip)
    (src / "config.json").write_text(json.dumps(cfg))
    r = export_checkpoint(src, tmp_path / "y", "awq", progress=False)
    assert r.max_code_error == 0 and not (tmp_path / "x").exists()

    # the published deployment form: grace pack of the original layout, exported again
    from safetensors.torch import load_file

    from grace.formats.pack_dir import pack_checkpoint

    pack_checkpoint(src, tmp_path / "packed", dtype=torch.float16, progress=False)
    r2 = export_checkpoint(tmp_path / "packed", tmp_path / "z", "awq", progress=False)
    assert r2.source_form == "packed" and r2.layout == "original" and r2.exact
    a, b = load_file(str(tmp_path / "y" / "model.safetensors")), load_file(str(tmp_path / "z" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------
# packed sources (grace pack output) and AWQ
# ---------------------------------------------------------------------------------------------


def test_packed_source_gives_the_same_export_as_its_qat_source(tmp_path, qat_dirs):
    from safetensors.torch import load_file

    from grace.formats.pack_dir import pack_checkpoint

    qat, _ = qat_dirs("qwen3vl", "W4G128")
    pack_checkpoint(qat, tmp_path / "packed", progress=False)
    export_checkpoint(qat, tmp_path / "a", "compressed-tensors", progress=False)
    r = export_checkpoint(tmp_path / "packed", tmp_path / "b", "compressed-tensors", progress=False)
    assert r.source_form == "packed" and r.exact
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k].to(a[k].dtype)), k


def check_awq_tensors(dst, names, family="llava"):
    """The AWQ export against the format rules, without any AWQ package."""
    from safetensors.torch import load_file

    from grace.export.names import runtime_to_written

    cfg = json.loads((dst / "config.json").read_text())
    bits, g, skip = awq_hf.parse_config(cfg["quantization_config"])
    assert (bits, g) == (4, 128) and cfg["quantization_config"]["zero_point"] is True
    sd = load_file(str(dst / "model.safetensors"))
    for n in names:
        w = runtime_to_written(family, n + ".weight")[: -len(".weight")]
        qw, qz, s = sd[f"{w}.qweight"], sd[f"{w}.qzeros"], sd[f"{w}.scales"]
        assert f"{w}.weight" not in sd
        assert qw.dtype == torch.int32 and qz.dtype == torch.int32 and s.dtype == torch.float16
        assert qw.shape[1] * 8 == s.shape[1] and qw.shape[0] == s.shape[0] * g and qz.shape == (s.shape[0], qw.shape[1])
        assert (qz == -2004318072).all()  # every zero nibble is 8
        # the transformers and vLLM skip rules both convert exactly the quantized modules
        assert not awq_hf.transformers_skips(n, skip) and not awq_hf.vllm_skips(w, skip)
    return sd, skip


def test_awq_export_follows_the_format(tmp_path, qat_dirs):
    qat, names = qat_dirs("llava", "W4G128")
    r = export_checkpoint(qat, tmp_path / "awq", "awq", progress=False)
    assert r.exact and r.format == "awq"
    sd, skip = check_awq_tensors(tmp_path / "awq", names)
    assert awq_hf.transformers_skips("model.vision_tower.encoder.layers.0.mlp.fc1", skip)
    assert awq_hf.vllm_skips("vision_tower.vision_model.encoder.layers.0.mlp.fc1", skip)
    assert awq_hf.transformers_skips("model.multi_modal_projector.linear_1", skip)
    # the packed codes dequantise to exactly the baked grid weights of the QAT checkpoint
    from safetensors.torch import load_file

    from grace import numerics

    dense = load_file(str(qat / "model.safetensors"))
    w = "language_model.model.layers.1.mlp.down_proj"
    codes, s, g = awq_hf.unpack(sd[f"{w}.qweight"], sd[f"{w}.qzeros"], sd[f"{w}.scales"])
    assert torch.equal(numerics.dequantize(codes, s, g), dense[f"{w}.weight"])


@pytest.mark.parametrize("family", ["llava", "qwen3vl"])
def test_awq_loads_with_gptqmodel(tmp_path, qat_dirs, family):
    pytest.importorskip("gptqmodel", reason="gptqmodel not installed (see docs/export.md for the CPU install)")
    from transformers import AutoModelForImageTextToText, AwqConfig

    qat, names = qat_dirs(family, "W4G128")
    export_checkpoint(qat, tmp_path / "awq", "awq", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # torch_awq dequantises then runs a dense matmul; the default CPU kernel (aten int4) is close, not exact
        out = AutoModelForImageTextToText.from_pretrained(
            tmp_path / "awq", dtype=torch.float16, device_map="cpu",
            quantization_config=AwqConfig(bits=4, backend="torch_awq")).eval()
    ref = reference_model(qat, torch.float16, 4)
    assert type(out.get_submodule(names[0])).__name__ != "Linear"  # an AWQ module, not dense
    vision = "model.vision_tower.encoder.layers.0.mlp.fc1" if family == "llava" else "model.visual.blocks.0.attn.qkv"
    assert type(out.get_submodule(vision)) is torch.nn.Linear  # the skip list kept the vision tower dense
    inputs = llava_inputs(LLAVA_IMAGE_ID, torch.float16) if family == "llava" else qwen_inputs(torch.float16)
    a, b = logits(out, inputs), logits(ref, inputs)
    d = max_diff(a, b)
    MEASURED[f"{family} W4G128 awq (gptqmodel torch_awq) fp16"] = d
    assert d <= 0.01 * float(b.abs().max()), d  # measured 0.0


# ---------------------------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------------------------


def test_refusals_name_the_module(tmp_path, qat_dirs):
    qat8, _ = qat_dirs("llava", "W8G128")
    with pytest.raises(GraceError, match=r"layers\.\d+\..*AWQ GEMM is 4-bit only"):
        export_checkpoint(qat8, tmp_path / "x", "awq", progress=False)

    # a row-wide group: group size 96 divides neither 256 nor 512, so every row is one group
    qatr = tmp_path / "qatr"
    save_qat(tiny_llava(9, num_hidden_layers=1), qatr, grace.W4G128.replace(group_size=96))
    with pytest.raises(GraceError, match=r"model\.language_model\.layers\.0\..*row-wide group"):
        export_checkpoint(qatr, tmp_path / "x", "compressed-tensors", progress=False)

    # out_features not divisible by 8: head_dim 6 with 2 kv heads gives k_proj / v_proj 12 outputs
    qato = tmp_path / "qato"
    save_qat(tiny_llava(10, num_hidden_layers=1, head_dim=6), qato, grace.W4G128.replace(group_size=4))
    with pytest.raises(GraceError, match=r"model\.language_model\.layers\.0\.self_attn\.[kv]_proj: out_features 12"):
        export_checkpoint(qato, tmp_path / "x", "awq", progress=False)
    r = export_checkpoint(qato, tmp_path / "ok", "compressed-tensors", progress=False)  # CT can hold it
    assert r.exact and r.group_size == 4

    # destination exists; unknown format; bad dtype; dense source
    (tmp_path / "exists").mkdir()
    with pytest.raises(GraceError, match="already exists"):
        export_checkpoint(qat8, tmp_path / "exists", "compressed-tensors", progress=False)
    with pytest.raises(GraceError, match="unknown export format"):
        export_checkpoint(qat8, tmp_path / "x", "gguf", progress=False)
    with pytest.raises(GraceError, match="--dtype"):
        export_checkpoint(qat8, tmp_path / "x", "compressed-tensors", dtype="float32", progress=False)
    dense = tmp_path / "dense"
    tiny_llava(11, num_hidden_layers=1).save_pretrained(dense)
    with pytest.raises(GraceError, match="needs a QAT checkpoint"):
        export_checkpoint(dense, tmp_path / "x", "compressed-tensors", progress=False)
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind


def test_ignore_list_adapts_to_what_was_quantized(tmp_path):
    """Quantize the projector's second linear and skip one decoder MLP: the lists must follow."""
    spec = grace.W4G128.replace(
        targets=(*grace.W4G128.targets, r"model\.multi_modal_projector\.linear_2"),
        ignore=tuple(p for p in grace.W4G128.ignore if "projector" not in p) + (r".*layers\.1\.mlp\.down_proj",))
    qat = tmp_path / "qat"
    names = save_qat(tiny_llava(12), qat, spec)
    assert "model.multi_modal_projector.linear_2" in names and len(names) == 14
    r = export_checkpoint(qat, tmp_path / "ct", "compressed-tensors", progress=False)
    assert "re:.*multi_modal_projector.*" not in r.ignore
    assert r"re:.*language_model\.(model\.)?layers\.1\.mlp\.down_proj$" in r.ignore
    inputs = llava_inputs(LLAVA_IMAGE_ID, torch.float16)
    out = load_plain(tmp_path / "ct", torch.float16)
    assert hasattr(out.model.multi_modal_projector.linear_2, "weight_scale")
    assert not hasattr(out.model.language_model.layers[1].mlp.down_proj, "weight_scale")
    a, b = logits(out, inputs), logits(reference_model(qat, torch.float16, 4), inputs)
    assert torch.equal(a, b), max_diff(a, b)
    ra = export_checkpoint(qat, tmp_path / "awq", "awq", progress=False)
    assert "model.multi_modal_projector" not in ra.ignore and "model.language_model.layers.1.mlp.down_proj" in ra.ignore


def test_cli_export_and_one_line_errors(tmp_path, qat_dirs, monkeypatch, capsys):
    import sys

    from grace.cli.main import main

    def run(*args):
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["grace", *args])
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code or 0
        o = capsys.readouterr()
        return code, o.out, o.err

    qat, _ = qat_dirs("qwen3vl", "W8G128")
    code, out, err = run("export", str(qat), "--format", "compressed-tensors", "--out", str(tmp_path / "ct"),
                         "--no-progress")
    assert code == 0, err
    assert "exported 14 modules W8G128" in out and "max int-code error 0" in out and "bit-exact" in out
    assert "vllm serve" in out
    for args, msg in [(("--format", "awq"), "AWQ GEMM is 4-bit only"),
                      (("--format", "compressed-tensors", "--dtype", "float32"), "--dtype must be"),
                      (("--format", "compressed-tensors", "--vision-tower", str(tmp_path)), "--vision-tower is only")]:
        code, out, err = run("export", str(qat), "--out", str(tmp_path / "bad"), *args)
        lines = [ln for ln in err.strip().splitlines() if ln]
        assert code == 2 and len(lines) == 1 and msg in lines[0] and "Traceback" not in err, err
