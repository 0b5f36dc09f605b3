"""Tiny models, tokenizers and the key mappings (known answers)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from grace.models import families as F
from grace.models import tiny_tokenizers as TT
from grace.models.tiny import make_tiny, write_tiny


def test_tokenizers_are_deterministic_fast_and_cover_the_vqa_words():
    TT._sentencepiece_bytes.cache_clear()
    TT._qwen_vocab_merges.cache_clear()
    t0 = time.perf_counter()
    a = TT._sentencepiece_bytes(512)
    b = TT._qwen_vocab_merges(768)
    assert time.perf_counter() - t0 < 5.0
    TT._sentencepiece_bytes.cache_clear()
    TT._qwen_vocab_merges.cache_clear()
    assert TT._sentencepiece_bytes(512) == a and TT._qwen_vocab_merges(768) == b
    lt, qt = TT.llava_tokenizer(), TT.qwen_tokenizer()
    assert len(lt) <= 1024 and len(qt) <= 1024
    assert (lt.unk_token_id, lt.bos_token_id, lt.eos_token_id) == (0, 1, 2)
    for word in ("red", "circle", "left", "yes"):
        assert len(lt(word, add_special_tokens=False)["input_ids"]) <= 2
        assert len(qt(" " + word)["input_ids"]) <= 2
    ids = qt("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>")["input_ids"]
    assert qt.convert_tokens_to_ids("<|image_pad|>") in ids and qt.convert_tokens_to_ids("<|im_end|>") == ids[-1]


@pytest.mark.parametrize("family", ["llava", "qwen3vl"])
def test_tiny_sizes(family):
    s = make_tiny(family)
    t = make_tiny(family, size="teacher", tokenizer=s.tokenizer)
    ts, tt = s.model.config.get_text_config(), t.model.config.get_text_config()
    assert ts.hidden_size % 128 == 0 and ts.intermediate_size % 128 == 0
    assert tt.hidden_size > ts.hidden_size and tt.num_hidden_layers > ts.num_hidden_layers
    assert ts.vocab_size == tt.vocab_size == len(s.tokenizer)
    if family == "qwen3vl":
        assert len(s.model.config.vision_config.deepstack_visual_indexes) == 2
        assert s.model.lm_head.weight is s.model.model.language_model.embed_tokens.weight
    else:
        assert s.image_token_id == len(s.tokenizer)  # one past the vocabulary (original LLaVA style)
        assert isinstance(s.model.get_input_embeddings(), F.PlaceholderEmbedding)
    a, b = make_tiny(family, seed=3), make_tiny(family, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(),
                                                  strict=True))


def test_tiny_llava_overrides_resize_the_towers():
    from PIL import Image

    from grace.models import encode_example

    vlm = make_tiny("llava", vision={"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
                                     "patch_size": 16}, text={"num_hidden_layers": 3})
    cfg = vlm.model.config
    assert cfg.vision_config.hidden_size == 128 and cfg.vision_config.patch_size == 16
    assert cfg.image_seq_length == 4 and cfg.text_config.num_hidden_layers == 3
    img = Image.new("RGB", (32, 32), (200, 30, 30))
    ex = encode_example(vlm, vlm.tokenizer, vlm.processor, [{"from": "human", "value": "<image>\nred?"},
                                                            {"from": "gpt", "value": "yes"}], img)
    assert int((ex["input_ids"] == vlm.image_token_id).sum()) == 4
    with torch.no_grad():
        out = vlm.model(input_ids=ex["input_ids"][None], pixel_values=ex["pixel_values"])
    assert out.logits.shape[1] == ex["input_ids"].numel()
    with pytest.raises(ValueError, match="patch_width"):
        make_tiny("llava", vision={"patch_width": 4})
    with pytest.raises(ValueError, match="divide"):
        make_tiny("llava", vision={"patch_size": 12})
    with pytest.raises(ValueError, match="hidden"):
        make_tiny("llava", text={"hidden": 4})
    with pytest.raises(ValueError, match="LLaVA only"):
        make_tiny("qwen3vl", vision={"patch_size": 16})


def test_original_key_mapping_known_answers():
    cases = {
        "model.embed_tokens.weight": "model.language_model.embed_tokens.weight",
        "model.layers.31.self_attn.q_proj.weight": "model.language_model.layers.31.self_attn.q_proj.weight",
        "model.layers.0.mlp.down_proj.weight": "model.language_model.layers.0.mlp.down_proj.weight",
        "model.layers.2.post_attention_layernorm.weight": "model.language_model.layers.2.post_attention_layernorm.weight",
        "model.norm.weight": "model.language_model.norm.weight",
        "lm_head.weight": "lm_head.weight",
        "model.mm_projector.0.weight": "model.multi_modal_projector.linear_1.weight",
        "model.mm_projector.2.bias": "model.multi_modal_projector.linear_2.bias",
    }
    for orig, rt in cases.items():
        assert F.original_to_runtime(orig) == rt
        assert F.runtime_to_original(rt) == orig
    assert F.original_to_runtime("model.layers.0.self_attn.rotary_emb.inv_freq") is None
    assert F.original_to_runtime("model.vision_tower.vision_tower.vision_model.post_layernorm.weight") is None
    assert F.clip_to_runtime("vision_model.pre_layrnorm.weight") == "model.vision_tower.pre_layrnorm.weight"
    assert F.clip_to_runtime("text_model.embeddings.token_embedding.weight") is None
    assert F.clip_to_runtime("vision_model.embeddings.position_ids") is None
    assert F.llava_hf_to_runtime("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight") == \
        "model.vision_tower.encoder.layers.0.mlp.fc1.weight"


def test_hf_writer_uses_save_pretrained_names(tmp_path):
    from safetensors import safe_open

    for family in ("llava", "qwen3vl"):
        v = make_tiny(family)
        v.model.save_pretrained(tmp_path / f"sp_{family}")
        write_tiny(family, tmp_path / f"ours_{family}", layout="hf")
        with safe_open(str(tmp_path / f"sp_{family}" / "model.safetensors"), "pt") as f:
            theirs = set(f.keys())
        with safe_open(str(tmp_path / f"ours_{family}" / "model.safetensors"), "pt") as f:
            ours = set(f.keys())
        assert ours == theirs


def test_init_tiny_original_layout_files(tmp_path):
    out = write_tiny("llava", tmp_path / "t", layout="original")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["mm_vision_tower"] == "clip" and cfg["mm_projector_type"] == "mlp2x_gelu"
    assert cfg["image_aspect_ratio"] == "pad" and cfg["mm_vision_select_layer"] == -2
    assert "text_config" not in cfg and cfg["vocab_size"] == 512
    for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "model.safetensors",
              "clip/config.json", "clip/model.safetensors", "clip/preprocessor_config.json"):
        assert (out / f).is_file(), f
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.mm_projector.0.weight" in keys and "model.layers.0.self_attn.q_proj.weight" in keys
    assert not any("vision" in k for k in keys)
    with safe_open(str(out / "clip" / "model.safetensors"), "pt") as f:
        assert all(k.startswith("vision_model.") for k in f.keys())
