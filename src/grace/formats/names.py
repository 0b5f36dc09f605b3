"""Checkpoint key names: every on-disk naming of a LLaVA / Qwen3-VL tensor <-> the runtime name.

One home for the renamings the loader, the savers, the packer and the exporter all need
(FORMATS.md §4-5, notes/llava-qwen3vl-loading.md §1.3). Three name spaces:

* *runtime* names: the parameter names of the in-memory transformers 5.x model
  (``model.language_model.layers.N...``, ``model.vision_tower.embeddings...``,
  ``model.multi_modal_projector.linear_1...``, ``lm_head``). Everything is normalised to these.
* *disk* names, per layout:
  - original LLaVA (haotian-liu): ``model.layers.N...``, ``model.mm_projector.{0,2}...``,
    ``lm_head``; CLIP lives in its own directory (``vision_model.*``), and self-trained
    checkpoints may embed a copy under ``model.vision_tower.vision_tower.*`` (dropped: like the
    original loader we read the CLIP directory);
  - llava-hf as transformers 5.23 ``save_pretrained`` writes it: ``language_model.model.*``,
    ``language_model.lm_head.*``, ``vision_tower.*``, ``multi_modal_projector.*``;
  - llava-hf *portable*: the same but ``vision_tower.vision_model.*``, which every transformers
    version (4.x and 5.x) and vLLM load (what ``grace export`` writes);
  - Qwen3-VL: the runtime names (transformers writes them unchanged).
* computed buffers (``rotary_emb.inv_freq``, ``original_inv_freq``, ``position_ids``) are never
  read or written: every ``*_to_runtime`` returns ``None`` for them.

Every function maps one key; ``None`` means "not stored here" / "drop".
"""

from __future__ import annotations

import re

COMPUTED = re.compile(r"(^|\.)(rotary_emb\.inv_freq|original_inv_freq|position_ids)$")

LM_PREFIX = "model.language_model."
VISION_PREFIX = "model.vision_tower."
PROJECTOR_PREFIX = "model.multi_modal_projector."
EMBED_KEY = LM_PREFIX + "embed_tokens.weight"
LM_HEAD_KEY = "lm_head.weight"
EMBEDDED_CLIP = "model.vision_tower.vision_tower."  # self-trained original LLaVA checkpoints

_CLIP_VISION_PARTS = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")


def is_computed(key: str) -> bool:
    return COMPUTED.search(key) is not None


# ---- original LLaVA ------------------------------------------------------------------------------
def llava_original_to_runtime(key: str) -> str | None:
    """Original LLaVA-1.5 key -> runtime key; the embedded CLIP copy is dropped."""
    if is_computed(key) or key.startswith(VISION_PREFIX):
        return None
    if key.startswith("lm_head."):
        return key
    m = re.match(r"model\.mm_projector\.(0|2)\.(.+)$", key)
    if m:
        return f"{PROJECTOR_PREFIX}linear_{1 if m.group(1) == '0' else 2}.{m.group(2)}"
    for part in ("embed_tokens.", "layers.", "norm."):
        if key.startswith("model." + part):
            return LM_PREFIX + key[len("model."):]
    return key  # unknown: reported by name by whoever checks the keys


def runtime_to_llava_original(key: str) -> str | None:
    """Runtime key -> original LLaVA-1.5 key (``None`` for the vision tower: it lives in the CLIP dir)."""
    if key.startswith(VISION_PREFIX):
        return None
    if key.startswith(LM_PREFIX):
        return "model." + key[len(LM_PREFIX):]
    m = re.match(r"model\.multi_modal_projector\.linear_(1|2)\.(.+)$", key)
    if m:
        return f"model.mm_projector.{0 if m.group(1) == '1' else 2}.{m.group(2)}"
    return key


# ---- a CLIP directory ----------------------------------------------------------------------------
def clip_to_runtime(key: str) -> str | None:
    """A CLIP checkpoint key (``CLIPModel``, 4.x or 5.x ``CLIPVisionModel``) -> ``model.vision_tower.*``.

    The text tower, the projections and ``logit_scale`` are not part of a VLM: ``None``.
    """
    if is_computed(key):
        return None
    if key.startswith("vision_model."):
        return VISION_PREFIX + key[len("vision_model."):]
    if key.startswith(_CLIP_VISION_PARTS):
        return VISION_PREFIX + key
    return None


def runtime_to_clip(key: str) -> str | None:
    """``model.vision_tower.X`` -> ``vision_model.X`` (the key naming of a real CLIP checkpoint)."""
    if key.startswith(VISION_PREFIX):
        return "vision_model." + key[len(VISION_PREFIX):]
    return None


# ---- llava-hf (transformers) -----------------------------------------------------------------------
def llava_hf_to_runtime(key: str) -> str | None:
    """Any transformers Llava key (5.x save names, portable / 4.x names, runtime names) -> runtime."""
    if is_computed(key):
        return None
    if key.startswith("language_model.lm_head."):
        return key[len("language_model."):]
    if key.startswith("language_model.model."):
        return LM_PREFIX + key[len("language_model.model."):]
    if key.startswith("language_model."):
        return "model." + key
    if key.startswith("vision_tower.vision_model."):
        return VISION_PREFIX + key[len("vision_tower.vision_model."):]
    if key.startswith(VISION_PREFIX + "vision_model."):
        return VISION_PREFIX + key[len(VISION_PREFIX + "vision_model."):]
    if key.startswith(("vision_tower.", "multi_modal_projector.")):
        return "model." + key
    return key


def runtime_to_llava_hf(key: str) -> str:
    """Runtime key -> the name transformers 5.23 ``save_pretrained`` writes for Llava."""
    if key.startswith("lm_head."):
        return "language_model." + key
    if key.startswith(LM_PREFIX):
        return "language_model.model." + key[len(LM_PREFIX):]
    if key.startswith((VISION_PREFIX, PROJECTOR_PREFIX)):
        return key[len("model."):]
    return key


def runtime_to_llava_portable(key: str) -> str:
    """Runtime key -> the llava-hf name every transformers version and vLLM load (``vision_tower.vision_model.*``)."""
    if key.startswith(VISION_PREFIX):
        return "vision_tower.vision_model." + key[len(VISION_PREFIX):]
    return runtime_to_llava_hf(key)


# ---- Qwen3-VL ------------------------------------------------------------------------------------
def qwen3vl_to_runtime(key: str) -> str | None:
    """Qwen3-VL keys are runtime names already (transformers writes them as they are)."""
    return None if is_computed(key) else key


def disk_to_runtime(family: str, layout: str):
    """The disk -> runtime key function of a family (``llava`` / ``qwen3vl``) and layout (``original`` / ``hf``)."""
    if family == "llava":
        return llava_original_to_runtime if layout == "original" else llava_hf_to_runtime
    return qwen3vl_to_runtime


def runtime_to_disk(family: str, layout: str):
    """The runtime -> disk key function of a family and layout (as grace's savers write them)."""
    if family == "llava":
        return runtime_to_llava_original if layout == "original" else runtime_to_llava_hf
    return _identity


def _identity(key: str) -> str:
    return key


def legacy_module_names(name: str) -> list[str]:
    """Other names a Llava *module* may be stored under (5.x runtime <-> 5.x save names), for lookups."""
    out = []
    if name.startswith(LM_PREFIX):
        out.append("language_model.model." + name[len(LM_PREFIX):])
    if name.startswith("language_model.model."):
        out.append(LM_PREFIX + name[len("language_model.model."):])
    return out
