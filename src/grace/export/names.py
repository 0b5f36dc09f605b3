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
``rotary_emb.inv_freq``; the CLIP text tower). The per-layout renamings live in
:mod:`grace.formats.names`; this module composes them for export and adds the ignore-list patterns.
"""

from __future__ import annotations

import re

from grace.formats.names import (  # noqa: F401 - re-exported for the exporter
    EMBED_KEY,
    EMBEDDED_CLIP,
    LM_HEAD_KEY,
    LM_PREFIX,
    clip_to_runtime,
    disk_to_runtime,
    llava_hf_to_runtime,
    llava_original_to_runtime,
    runtime_to_llava_portable,
)


def to_runtime(family: str, layout: str, key: str) -> str | None:
    """Source key -> runtime key for ``family`` (``llava`` / ``qwen3vl``) and ``layout``."""
    return disk_to_runtime(family, layout)(key)


def module_to_runtime(family: str, layout: str, name: str) -> str:
    """A source *module* name -> runtime module name (mapped as ``name + ".weight"``)."""
    mapped = to_runtime(family, layout, name + ".weight")
    return (mapped or name + ".weight")[: -len(".weight")]


def runtime_to_written(family: str, key: str) -> str:
    """Runtime key -> the key written to the export: llava-hf portable names for Llava, as is for Qwen3-VL."""
    return runtime_to_llava_portable(key) if family == "llava" else key


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
