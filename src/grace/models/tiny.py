"""Tiny random models of the real architectures: the test fixtures and the embedded default.

    vlm = make_tiny("llava")                       # LlavaForConditionalGeneration + CLIP tower
    vlm = make_tiny("qwen3vl", size="teacher")     # Qwen3VLForConditionalGeneration (deepstack)
    write_tiny("llava", "out", layout="original")  # real on-disk layout (CLIP in out/clip)

Sizes: the language model's hidden size and MLP width are multiples of 128, so every decoder
linear takes a W4G128 / W8G128 grid with real groups. ``student``: hidden 256, 2 layers;
``teacher``: hidden 384, 3 layers. Both share one tokenizer (trained here, see
:mod:`grace.models.tiny_tokenizers`) and the same image preprocessing, so distillation between
them sees the same vocabulary and the same number of visual tokens. Weights are drawn from a
seeded generator (``seed``) without disturbing the global RNG.
"""

from __future__ import annotations

from pathlib import Path

import torch

from grace.models import families as F
from grace.models.tiny_tokenizers import llava_tokenizer, qwen_tokenizer
from grace.models.vlm import VLM

LLAVA_IMAGE = 32  # px; CLIP patch 8 -> 16 image tokens
QWEN_MIN_PIXELS = 64 * 64  # Qwen patch 16, merge 2 -> 4..16 image tokens
QWEN_MAX_PIXELS = 128 * 128

_TEXT = {
    "student": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4),
    "teacher": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=3, num_attention_heads=6),
}


# The tiny LLaVA's CLIP tower; :func:`make_tiny` takes overrides (the quickstart uses a wider tower
# with patch 16, one image token per grid cell of its synthetic world).
LLAVA_VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, patch_size=8,
                    feature_layer=-2)


def _text_size(size: str, text: dict | None) -> dict:
    t = dict(_TEXT[size], **(text or {}))
    unknown = set(t) - set(_TEXT[size])
    if unknown:
        raise ValueError(f"unknown tiny language-model field(s) {sorted(unknown)}; known: {sorted(_TEXT[size])}")
    return t


def _llava_config(tokenizer, size: str, vision: dict | None = None, text: dict | None = None):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    t = _text_size(size, text)
    v = dict(LLAVA_VISION, **(vision or {}))
    unknown = set(v) - set(LLAVA_VISION)
    if unknown:
        raise ValueError(f"unknown tiny LLaVA vision field(s) {sorted(unknown)}; known: {sorted(LLAVA_VISION)}")
    if LLAVA_IMAGE % v["patch_size"]:
        raise ValueError(f"vision patch_size must divide the {LLAVA_IMAGE} px image; got {v['patch_size']}")
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=t["num_attention_heads"],
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **t,
    )
    vision_cfg = CLIPVisionConfig(hidden_size=v["hidden_size"], intermediate_size=v["intermediate_size"],
                                  num_hidden_layers=v["num_hidden_layers"], num_attention_heads=v["num_attention_heads"],
                                  image_size=LLAVA_IMAGE, patch_size=v["patch_size"], projection_dim=v["hidden_size"],
                                  hidden_act="quick_gelu", layer_norm_eps=1e-5)
    return LlavaConfig(
        text_config=text,
        vision_config=vision_cfg,
        image_token_index=len(tokenizer),  # one past the vocabulary, as for the original 32000 vocab
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=v["feature_layer"],
        image_seq_length=(LLAVA_IMAGE // v["patch_size"]) ** 2,
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )


def _qwen_config(tokenizer, size: str):
    from transformers import Qwen3VLConfig

    t = _TEXT[size]
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(vocab_size=len(tokenizer), num_key_value_heads=2, head_dim=64, max_position_embeddings=1024,
                rms_norm_eps=1e-6, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [12, 10, 10],
                                 "mrope_interleaved": True},
                bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                pad_token_id=tokenizer.pad_token_id, **t)
    vision = dict(depth=3, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=16, temporal_patch_size=2,
                  spatial_merge_size=2, out_hidden_size=t["hidden_size"], num_position_embeddings=64,
                  deepstack_visual_indexes=[0, 1], in_channels=3)
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)


def tiny_processor(family: str):
    fam = F.get_family(family)
    if fam.name == "llava":
        return F.llava_image_processor(LLAVA_IMAGE)
    return F.qwen_image_processor(size={"shortest_edge": QWEN_MIN_PIXELS, "longest_edge": QWEN_MAX_PIXELS},
                                  patch_size=16, temporal_patch_size=2, merge_size=2,
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], resample=3)


def tiny_tokenizer(family: str):
    return llava_tokenizer() if F.get_family(family).name == "llava" else qwen_tokenizer()


def make_tiny(family: str, size: str = "student", seed: int = 0, tokenizer=None, vision: dict | None = None,
              text: dict | None = None) -> VLM:
    """A random-initialised tiny VLM of the real transformers architecture (fp32, eval mode).

    ``vision`` overrides fields of the tiny LLaVA's CLIP tower (:data:`LLAVA_VISION`) and ``text``
    those of the language model's size (hidden_size, intermediate_size, num_hidden_layers,
    num_attention_heads); both LLaVA only.
    """
    fam = F.get_family(family)
    if size not in _TEXT:
        raise ValueError(f"size must be 'student' or 'teacher'; got {size!r}")
    tok = tokenizer if tokenizer is not None else tiny_tokenizer(fam.name)
    if (vision or text) and fam.name != "llava":
        raise ValueError("make_tiny(vision=..., text=...) overrides apply to the tiny LLaVA only")
    config = _llava_config(tok, size, vision, text) if fam.name == "llava" else _qwen_config(tok, size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = fam.model_class()(config)
    model.eval()
    F.install_placeholder_embedding(model)
    return VLM(model=model, tokenizer=tok, processor=tiny_processor(fam.name), family=fam.name, layout="memory")


def write_tiny(family: str, out_dir: str | Path, *, layout: str = "hf", size: str = "student", seed: int = 0) -> Path:
    """Build a tiny model and write it in the real on-disk layout (what ``grace init-tiny`` does)."""
    from grace.io.save import save_checkpoint

    vlm = make_tiny(family, size=size, seed=seed)
    return save_checkpoint(vlm.model, vlm.tokenizer, vlm.processor, out_dir, layout=layout, family=vlm.family)
