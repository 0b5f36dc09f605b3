"""Per-family knowledge as data: where things live, how names map, how configs are built.

Two families, three on-disk layouts (FORMATS.md §4-5, notes/llava-qwen3vl-loading.md):

* ``llava`` / ``original``: haotian-liu/LLaVA-1.5 checkpoints. config.json carries LLaMA text
  fields plus ``mm_vision_tower`` etc. (never fed to ``AutoConfig``: we build ``LlavaConfig``
  from its fields); keys ``model.embed_tokens|layers.N|norm``, ``lm_head``,
  ``model.mm_projector.0|2``; the CLIP tower comes from a separate CLIP directory.
* ``llava`` / ``hf``: transformers' Llava layout. transformers 5.23 ``save_pretrained`` writes
  the legacy names (``language_model.model.*``, ``language_model.lm_head.*``,
  ``vision_tower.*``, ``multi_modal_projector.*``); runtime names and 4.x names
  (``vision_tower.vision_model.*``) are read too.
* ``qwen3vl`` / ``hf``: ``model.visual.*``, ``model.language_model.*``, ``lm_head`` (absent on
  disk when tied).

Every mapping function takes one key and returns its runtime name (or ``None`` = drop), so it
also maps module names (``name + ".weight"``). The runtime names are those of transformers 5.23
``LlavaForConditionalGeneration`` / ``Qwen3VLForConditionalGeneration``.

The LLaVA image placeholder (our choice among the exact-parity options of the notes §1.4):
an original-layout vocabulary (32000 rows, no ``<image>`` token) keeps every text row of
``embed_tokens`` and ``lm_head`` untouched and uses the id just past the vocabulary
(``vocab_size``, i.e. 32000) as ``image_token_id``. The input embedding is switched to
:class:`PlaceholderEmbedding`, which maps ids ``>= num_embeddings`` to a zero vector; Llava then
overwrites exactly those positions with the projected image features (``masked_scatter``), so
logits are identical to the original splice. This is option (A) of the notes restricted to the
input side: because ``lm_head`` keeps its 32000 rows the placeholder can never be generated, so
no token suppression is needed, and training losses see exactly the original softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from grace.errors import GraceError
from grace.formats import names as N

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class LayoutError(GraceError, ValueError):
    """A checkpoint whose files or config fields do not form a supported layout."""


@dataclass(frozen=True)
class Family:
    """Where the parts of one VLM family live inside the transformers model (runtime names)."""

    name: str
    model_type: str  # transformers config model_type
    language_model: str
    decoder_layers: str
    vision_tower: str
    projector: str  # LLaVA projector / Qwen merger (inside the vision module for Qwen)
    lm_head: str = "lm_head"
    default_conv_mode: str | None = None

    def model_class(self):
        if self.name == "llava":
            from transformers import LlavaForConditionalGeneration

            return LlavaForConditionalGeneration
        from transformers import Qwen3VLForConditionalGeneration

        return Qwen3VLForConditionalGeneration

    def part_of(self, name: str) -> str:
        """``"language_model"``, ``"vision"`` or ``"other"`` for a runtime parameter name."""
        if name.startswith(self.language_model + ".") or name.startswith(self.lm_head + "."):
            return "language_model"
        if name.startswith(self.vision_tower + "."):
            return "vision"
        return "other"


LLAVA = Family(
    name="llava",
    model_type="llava",
    language_model="model.language_model",
    decoder_layers="model.language_model.layers",
    vision_tower="model.vision_tower",
    projector="model.multi_modal_projector",
    default_conv_mode="vicuna_v1",
)
QWEN3VL = Family(
    name="qwen3vl",
    model_type="qwen3_vl",
    language_model="model.language_model",
    decoder_layers="model.language_model.layers",
    vision_tower="model.visual",
    projector="model.visual.merger",
)
FAMILIES = {"llava": LLAVA, "qwen3vl": QWEN3VL}


def get_family(name_or_obj: Any) -> Family:
    """Family by name (``"llava"``, ``"qwen3vl"``), or from a transformers model / config."""
    if isinstance(name_or_obj, Family):
        return name_or_obj
    if isinstance(name_or_obj, str):
        key = name_or_obj.lower().replace("-", "").replace("_", "")
        key = {"llava": "llava", "llava15": "llava", "qwen3vl": "qwen3vl"}.get(key, key)
        if key not in FAMILIES:
            raise GraceError(f"unknown model family {name_or_obj!r}; expected 'llava' or 'qwen3vl'")
        return FAMILIES[key]
    cfg = getattr(name_or_obj, "config", name_or_obj)
    mt = getattr(cfg, "model_type", None)
    for fam in FAMILIES.values():
        if fam.model_type == mt:
            return fam
    raise GraceError(f"unsupported model type {mt!r}; grace supports llava and qwen3_vl")


# --------------------------------------------------------------------------------------------
# Placeholder embedding (see the module docstring)
# --------------------------------------------------------------------------------------------


class PlaceholderEmbedding(nn.Embedding):
    """An ``nn.Embedding`` that embeds ids past its table (the image placeholder) as zeros.

    Same parameter (``weight``), same state dict; only ``forward`` differs.
    """

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        oob = ids >= self.num_embeddings
        out = F.embedding(ids.masked_fill(oob, 0), self.weight, self.padding_idx)
        return out.masked_fill(oob.unsqueeze(-1), 0.0)


def install_placeholder_embedding(model: nn.Module) -> bool:
    """Switch the LM input embedding to :class:`PlaceholderEmbedding` when the image id lies past it."""
    emb = model.get_input_embeddings()
    image_id = getattr(model.config, "image_token_id", None)
    if image_id is None or not isinstance(emb, nn.Embedding):
        return False
    if image_id >= emb.num_embeddings and type(emb) is nn.Embedding:
        emb.__class__ = PlaceholderEmbedding  # keeps the very same Parameter object
        return True
    return isinstance(emb, PlaceholderEmbedding)


# --------------------------------------------------------------------------------------------
# Key mappings
# --------------------------------------------------------------------------------------------

# The key renamings themselves live in grace.formats.names (one home for every layout's names);
# these are the names the loader and savers have always used.
original_to_runtime = N.llava_original_to_runtime
runtime_to_original = N.runtime_to_llava_original
clip_to_runtime = N.clip_to_runtime
runtime_to_clip = N.runtime_to_clip
llava_hf_to_runtime = N.llava_hf_to_runtime
runtime_to_llava_hf = N.runtime_to_llava_hf
qwen_hf_to_runtime = N.qwen3vl_to_runtime


def to_runtime_fn(family: Family, layout: str):
    """The disk -> runtime key function of a (family, layout)."""
    return N.disk_to_runtime(family.name, layout)


def to_disk_fn(family: Family, layout: str):
    """The runtime -> disk key function of a (family, layout) (``None`` = not written there)."""
    return N.runtime_to_disk(family.name, layout)


def map_module_name(fn, name: str) -> str | None:
    """Apply a key mapping to a module name (by way of ``name + '.weight'``)."""
    out = fn(name + ".weight")
    if out is None:
        return None
    if not out.endswith(".weight"):
        raise LayoutError(f"module name {name!r} maps to an unexpected key {out!r}")
    return out[: -len(".weight")]


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------

_PROJECTOR_ACTS = {"mlp2x_gelu": "gelu"}
_SELECT_FEATURE = {"patch": "default", "cls_patch": "full"}


def clip_vision_config(clip_cfg: dict, source: str = "CLIP config.json"):
    """``CLIPVisionConfig`` from a CLIP directory's config.json (a ``CLIPConfig`` or a vision-only config)."""
    from transformers import CLIPVisionConfig

    d = clip_cfg.get("vision_config", clip_cfg) if clip_cfg.get("model_type") != "clip_vision_model" else clip_cfg
    if not isinstance(d, dict) or "hidden_size" not in d:
        raise LayoutError(f"{source}: no vision_config with hidden_size (is this a CLIP checkpoint?)")
    keep = {k: v for k, v in d.items() if k not in ("model_type", "architectures", "transformers_version")}
    return CLIPVisionConfig(**keep)


def llava_config_from_original(cfg: dict, vision_config, source: str = "config.json"):
    """Build ``LlavaConfig`` from an original LLaVA-1.5 config.json dict and a ``CLIPVisionConfig``.

    Never ``AutoConfig``: with ``model_type: llava`` it silently yields default 7B text settings.
    """
    from transformers import LlamaConfig, LlavaConfig

    need = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    for k in need:
        if k not in cfg:
            raise LayoutError(f"{source}: field {k!r} is missing (LLaVA original layout needs the LLaMA text fields)")
    ptype = cfg.get("mm_projector_type", "mlp2x_gelu")
    if ptype not in _PROJECTOR_ACTS:
        raise LayoutError(f"{source}: field mm_projector_type={ptype!r} is not supported (only 'mlp2x_gelu')")
    feat = cfg.get("mm_vision_select_feature", "patch")
    if feat not in _SELECT_FEATURE:
        raise LayoutError(f"{source}: field mm_vision_select_feature={feat!r} is not supported")
    if cfg.get("mm_use_im_start_end") or cfg.get("mm_use_im_patch_token"):
        raise LayoutError(f"{source}: mm_use_im_start_end / mm_use_im_patch_token = true is not supported")
    mm_hidden = cfg.get("mm_hidden_size", vision_config.hidden_size)
    if mm_hidden != vision_config.hidden_size:
        raise LayoutError(
            f"{source}: field mm_hidden_size={mm_hidden} does not match the CLIP tower's hidden_size "
            f"{vision_config.hidden_size}"
        )
    rope = cfg.get("rope_parameters")
    if rope is None:
        rope = {"rope_type": "default", "rope_theta": float(cfg.get("rope_theta", 10000.0))}
        if cfg.get("rope_scaling"):
            raise LayoutError(f"{source}: field rope_scaling is not supported for LLaVA-1.5")
    text = LlamaConfig(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
        hidden_act=cfg.get("hidden_act", "silu"),
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
        rope_parameters=rope,
        attention_bias=cfg.get("attention_bias", False),
        mlp_bias=cfg.get("mlp_bias", False),
        tie_word_embeddings=False,
        bos_token_id=cfg.get("bos_token_id", 1),
        eos_token_id=cfg.get("eos_token_id", 2),
        pad_token_id=cfg.get("pad_token_id", 0),
    )
    n_patches = (vision_config.image_size // vision_config.patch_size) ** 2
    strategy = _SELECT_FEATURE[feat]
    return LlavaConfig(
        text_config=text,
        vision_config=vision_config,
        # One past the text vocabulary unless the checkpoint names one (module docstring).
        image_token_index=cfg.get("image_token_index", cfg["vocab_size"]),
        projector_hidden_act=_PROJECTOR_ACTS[ptype],
        vision_feature_select_strategy=strategy,
        vision_feature_layer=cfg.get("mm_vision_select_layer", -2),
        image_seq_length=n_patches + (1 if strategy == "full" else 0),
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )


def original_config_from_llava(config, *, mm_vision_tower: str, torch_dtype: str = "float16",
                               extra: dict | None = None) -> dict:
    """The original LLaVA-1.5 config.json dict for a ``LlavaConfig`` (inverse of the above)."""
    t = config.text_config
    rope = getattr(t, "rope_parameters", None) or {}
    out = {
        "_name_or_path": "grace",
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        "bos_token_id": t.bos_token_id if t.bos_token_id is not None else 1,
        "eos_token_id": t.eos_token_id if t.eos_token_id is not None else 2,
        "pad_token_id": t.pad_token_id if t.pad_token_id is not None else 0,
        "hidden_act": t.hidden_act,
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "initializer_range": t.initializer_range,
        "max_position_embeddings": t.max_position_embeddings,
        "num_attention_heads": t.num_attention_heads,
        "num_hidden_layers": t.num_hidden_layers,
        "num_key_value_heads": t.num_key_value_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": t.rms_norm_eps,
        "rope_scaling": None,
        "rope_theta": float(rope.get("rope_theta", 10000.0)),
        "tie_word_embeddings": False,
        "torch_dtype": torch_dtype,
        "use_cache": True,
        "vocab_size": t.vocab_size,
        "freeze_mm_mlp_adapter": False,
        "image_aspect_ratio": "pad",
        "mm_hidden_size": config.vision_config.hidden_size,
        "mm_patch_merge_type": "flat",
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": {v: k for k, v in _SELECT_FEATURE.items()}[config.vision_feature_select_strategy],
        "mm_vision_select_layer": config.vision_feature_layer,
        "mm_vision_tower": mm_vision_tower,
        "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
        "tune_mm_mlp_adapter": False,
        "use_mm_proj": True,
    }
    if config.image_token_id != t.vocab_size:
        out["image_token_index"] = config.image_token_id
    if extra:
        out.update(extra)
    return out


def clip_dir_config(vision_config) -> dict:
    """A CLIP directory config.json (``CLIPConfig`` shape, vision part only) for a ``CLIPVisionConfig``."""
    v = vision_config.to_dict()
    v = {k: val for k, val in v.items() if k not in ("transformers_version", "architectures")}
    return {"architectures": ["CLIPModel"], "model_type": "clip", "vision_config": v,
            "projection_dim": v.get("projection_dim", 512)}


def clip_preprocessor_config(image_size: int, mean=CLIP_MEAN, std=CLIP_STD) -> dict:
    """A CLIP ``preprocessor_config.json`` (what openai/clip-vit-large-patch14-336 ships, at our size)."""
    return {
        "crop_size": {"height": image_size, "width": image_size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_resize": True,
        "do_rescale": True,
        "image_mean": list(mean),
        "image_std": list(std),
        "image_processor_type": "CLIPImageProcessor",
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": image_size},
    }


def llava_image_processor(image_size: int, mean=CLIP_MEAN, std=CLIP_STD):
    """LLaVA-1.5 ``pad`` preprocessing: ``LlavaImageProcessorPil(do_pad=True)`` at the tower's size.

    Pads to a square of the mean colour, resizes (bicubic) the short side, centre-crops, and
    normalises; identical to the original ``expand2square`` + CLIP processor (notes §3.2).
    Convert images to RGB before calling it (:func:`grace.models.encode.to_rgb`).
    """
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    return LlavaImageProcessorPil(
        do_pad=True,
        do_resize=True,
        size={"shortest_edge": image_size},
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        resample=3,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(mean),
        image_std=list(std),
        do_convert_rgb=True,
    )


def qwen_image_processor(**kwargs):
    """Qwen3-VL image processing without torchvision (``Qwen2VLImageProcessorPil``)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(**kwargs)


def n_image_tokens_llava(config) -> int:
    """Image tokens per image for a ``LlavaConfig`` (576 for CLIP-L/14 at 336 px, CLS dropped)."""
    v = config.vision_config
    n = (v.image_size // v.patch_size) ** 2
    return n + (1 if config.vision_feature_select_strategy == "full" else 0)
