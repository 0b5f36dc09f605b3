"""Tensor and module names for export: every source layout -> runtime names -> the written names.

Three name spaces (FORMATS.md §4-5, notes/llava-qwen3vl-loading.md §1.3):

* *source* keys: whatever the checkpoint holds (original LLaVA ``model.layers.N...``, the legacy
  ``language_model.model...`` that transformers 5.x itself writes for Llava, 4.x
  ``vision_tower.vision_model...``, runtime names, CLIP directory keys);
* *runtime* names: the module / parameter names of the in-memory transformers 5.x model
  (``model.language_model.layers.N...``, ``model.vision_tower...``, ``lm_head``). Everything is
  normalised to these first: the exporter checks them against a meta-device model built from
  the exported config, and compressed-tensors / AWQ match their ignore lists against them;
* *written* keys: for Llava the llava-hf layout that every transformers (4.x and 5.x) and vLLM
  version loads (``language_model.model.*``, ``language_model.lm_head.*``,
  ``vision_tower.vision_model.*``, ``multi_modal_projector.*``); for Qwen3-VL the runtime names,
  which are also what transformers writes and the published Qwen3-VL checkpoints use.

Every function maps one key and returns ``None`` for a key to drop (computed buffers such as
``rotary_emb.inv_freq``; the CLIP text tower).
"""

from __future__ import annotations

import re

_COMPUTED = re.compile(r"(^|\.)(rotary_emb\.inv_freq|original_inv_freq|position_ids)$")

LM_PREFIX = "model.language_model."
EMBED_KEY = "model.language_model.embed_tokens.weight"
LM_HEAD_KEY = "lm_head.weight"
EMBEDDED_CLIP = "model.vision_tower.vision_tower."  # self-trained original LLaVA checkpoints


def llava_original_to_runtime(key: str) -> str | None:
    """haotian-liu/LLaVA key -> runtime key; the embedded CLIP copy is dropped (the CLIP dir is used)."""
    if _COMPUTED.search(key) or key.startswith("model.vision_tower."):
        return None
    if key.startswith("lm_head."):
        return key
    m = re.match(r"model\.mm_projector\.(0|2)\.(.+)$", key)
    if m:
        return f"model.multi_modal_projector.linear_{1 if m.group(1) == '0' else 2}.{m.group(2)}"
    for part in ("embed_tokens.", "layers.", "norm."):
        if key.startswith("model." + part):
            return LM_PREFIX + key[len("model."):]
    return key  # unknown: the meta-model check reports it by name


def llava_hf_to_runtime(key: str) -> str | None:
    """Any transformers Llava key (runtime, 5.x legacy save, 4.x) -> runtime key."""
    if _COMPUTED.search(key):
        return None
    if key.startswith("language_model.model."):
        return LM_PREFIX + key[len("language_model.model."):]
    if key.startswith("language_model.lm_head."):
        return key[len("language_model."):]
    if key.startswith("vision_tower.vision_model."):
        return "model.vision_tower." + key[len("vision_tower.vision_model."):]
    if key.startswith("model.vision_tower.vision_model."):
        return "model.vision_tower." + key[len("model.vision_tower.vision_model."):]
    if key.startswith(("vision_tower.", "multi_modal_projector.")):
        return "model." + key
    return key


def qwen3vl_to_runtime(key: str) -> str | None:
    """Qwen3-VL keys are runtime names already (transformers writes them as they are)."""
    return None if _COMPUTED.search(key) else key


def clip_to_runtime(key: str) -> str | None:
    """A CLIP directory key (``CLIPModel`` or ``CLIPVisionModel``, 4.x or 5.x) -> ``model.vision_tower.*``."""
    if _COMPUTED.search(key):
        return None
    if key.startswith("vision_model."):
        return "model.vision_tower." + key[len("vision_model."):]
    if key.startswith(("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")):
        return "model.vision_tower." + key
    return None  # text tower, projections, logit_scale


def to_runtime(family: str, layout: str, key: str) -> str | None:
    """Source key -> runtime key for ``family`` (``llava`` / ``qwen3vl``) and ``layout``."""
    if family == "llava":
        return llava_original_to_runtime(key) if layout == "original" else llava_hf_to_runtime(key)
    return qwen3vl_to_runtime(key)


def module_to_runtime(family: str, layout: str, name: str) -> str:
    """A source *module* name -> runtime module name (mapped as ``name + ".weight"``)."""
    mapped = to_runtime(family, layout, name + ".weight")
    return (mapped or name + ".weight")[: -len(".weight")]


def runtime_to_written(family: str, key: str) -> str:
    """Runtime key -> the key written to the export (see the module docstring)."""
    if family != "llava":
        return key
    if key.startswith(LM_PREFIX):
        return "language_model.model." + key[len(LM_PREFIX):]
    if key.startswith("lm_head."):
        return "language_model." + key
    if key.startswith("model.vision_tower."):
        return "vision_tower.vision_model." + key[len("model.vision_tower."):]
    if key.startswith("model.multi_modal_projector."):
        return key[len("model."):]
    return key


# Coarse "not quantized" patterns per family, tried first when building ignore lists. Each is
# used only if it matches no quantized module (checked by the exporter), so a model that
# quantized more than GRACE's defaults still gets a correct list.
CT_IGNORE_CANDIDATES = {
    "llava": ["re:.*vision_tower.*", "re:.*multi_modal_projector.*", "re:.*lm_head"],
    "qwen3vl": ["re:.*visual.*", "re:.*lm_head"],
}
# AWQ ``modules_to_not_convert``: the ``model.``-prefixed form for transformers (anchored regex),
# the bare form for vLLM (substring of its prefixes ``vision_tower...`` / ``visual...``).
AWQ_SKIP_CANDIDATES = {
    "llava": ["model.vision_tower", "model.multi_modal_projector", "vision_tower", "multi_modal_projector", "lm_head"],
    "qwen3vl": ["model.visual", "visual", "lm_head"],
}


def ct_exact_pattern(runtime_name: str) -> str:
    """An ``re:`` pattern for one module that matches its transformers *and* vLLM names.

    ``model.language_model.layers.3.mlp.down_proj`` (transformers 5.x) and
    ``language_model.model.layers.3.mlp.down_proj`` (vLLM) both match
    ``re:.*language_model\\.(model\\.)?layers\\.3\\.mlp\\.down_proj$``.
    """
    if runtime_name.startswith(LM_PREFIX):
        rest = runtime_name[len(LM_PREFIX):]
        return r"re:.*language_model\.(model\.)?" + re.escape(rest) + "$"
    rest = runtime_name[len("model."):] if runtime_name.startswith("model.") else runtime_name
    return r"re:(model\.)?" + re.escape(rest) + "$"
