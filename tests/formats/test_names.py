"""Known answers for grace.formats.names: every layout's key <-> runtime key, in both directions."""

import pytest

from grace.formats import names as N

CASES = [
    # runtime key, original LLaVA, llava-hf (5.23 save), llava-hf portable (4.x / vLLM)
    ("model.language_model.layers.3.mlp.down_proj.weight", "model.layers.3.mlp.down_proj.weight",
     "language_model.model.layers.3.mlp.down_proj.weight", "language_model.model.layers.3.mlp.down_proj.weight"),
    ("model.language_model.embed_tokens.weight", "model.embed_tokens.weight",
     "language_model.model.embed_tokens.weight", "language_model.model.embed_tokens.weight"),
    ("lm_head.weight", "lm_head.weight", "language_model.lm_head.weight", "language_model.lm_head.weight"),
    ("model.multi_modal_projector.linear_1.bias", "model.mm_projector.0.bias",
     "multi_modal_projector.linear_1.bias", "multi_modal_projector.linear_1.bias"),
    ("model.multi_modal_projector.linear_2.weight", "model.mm_projector.2.weight",
     "multi_modal_projector.linear_2.weight", "multi_modal_projector.linear_2.weight"),
    ("model.vision_tower.encoder.layers.0.mlp.fc1.weight", None,
     "vision_tower.encoder.layers.0.mlp.fc1.weight", "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"),
]


@pytest.mark.parametrize("runtime,original,hf,portable", CASES)
def test_llava_layouts_round_trip(runtime, original, hf, portable):
    assert N.runtime_to_llava_original(runtime) == original
    if original is not None:
        assert N.llava_original_to_runtime(original) == runtime
    assert N.runtime_to_llava_hf(runtime) == hf and N.llava_hf_to_runtime(hf) == runtime
    assert N.runtime_to_llava_portable(runtime) == portable and N.llava_hf_to_runtime(portable) == runtime
    assert N.llava_hf_to_runtime(runtime) == runtime  # runtime names are accepted as they are


def test_clip_directory_and_computed_buffers():
    assert N.clip_to_runtime("vision_model.pre_layrnorm.weight") == "model.vision_tower.pre_layrnorm.weight"
    assert N.clip_to_runtime("encoder.layers.1.self_attn.q_proj.bias") == "model.vision_tower.encoder.layers.1.self_attn.q_proj.bias"
    assert N.runtime_to_clip("model.vision_tower.pre_layrnorm.weight") == "vision_model.pre_layrnorm.weight"
    for dropped in ("text_model.embeddings.token_embedding.weight", "logit_scale", "visual_projection.weight",
                    "vision_model.embeddings.position_ids"):
        assert N.clip_to_runtime(dropped) is None
    for key in ("model.layers.0.self_attn.rotary_emb.inv_freq", "model.language_model.rotary_emb.original_inv_freq"):
        assert N.llava_original_to_runtime(key) is None and N.llava_hf_to_runtime(key) is None
        assert N.qwen3vl_to_runtime(key) is None
    assert N.llava_original_to_runtime(N.EMBEDDED_CLIP + "vision_model.post_layernorm.weight") is None
    assert N.qwen3vl_to_runtime("model.visual.blocks.0.attn.qkv.weight") == "model.visual.blocks.0.attn.qkv.weight"


def test_legacy_module_names():
    assert N.legacy_module_names("model.language_model.layers.0.mlp.up_proj") == ["language_model.model.layers.0.mlp.up_proj"]
    assert N.legacy_module_names("language_model.model.layers.0.mlp.up_proj") == ["model.language_model.layers.0.mlp.up_proj"]
    assert N.legacy_module_names("model.visual.blocks.0.mlp.linear_fc1") == []
