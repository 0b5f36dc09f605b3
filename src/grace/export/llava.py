"""Original LLaVA-1.5 -> transformers ``LlavaForConditionalGeneration``: config, vocabulary, processor.

Config: built field by field from the original config.json (never ``AutoConfig`` on it: one
``model_type`` errors, the other silently yields default 7B text settings; FORMATS.md §4), with
the vision config taken from the CLIP directory.

Vocabulary (our choice, the one transformers' own LLaVA converter made): the original model has
no image token (it splices image features between text chunks), but transformers' and vLLM's
Llava *embed* ``input_ids`` first, so the image placeholder needs an embedding row. The export
appends two tokens to the tokenizer, ``<image>`` (id ``V``) and ``<pad>`` (id ``V + 1``), and two
rows to ``embed_tokens`` and ``lm_head``, each the **mean of the existing rows**:

* the ``<image>`` embedding is never used (Llava overwrites those positions with the projected
  image features), so text logits are unchanged;
* an appended ``lm_head`` row is the mean row, so its logit is the mean of the text logits,
  which is never above the largest one: greedy decoding cannot pick it (a tie resolves to the
  lower, real id). With sampling it is as likely as an average token, so the export's
  ``generation_config.json`` also lists both ids in ``suppress_tokens`` (plain transformers
  ``generate`` applies that by itself); vLLM users pass a logit bias (docs/export.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from grace.errors import GraceError

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
# vicuna_v1 (FORMATS.md §4): system + " USER: <image>\n{question} ASSISTANT:" ... "</s>" after replies.
VICUNA_CHAT_TEMPLATE = (
    "{%- set ns = namespace(first=true) -%}"
    "{{ '" + VICUNA_SYSTEM.replace("'", "\\'") + "' }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ ' USER: ' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}"
    "{%- for c in message['content'] if c['type'] == 'image' -%}{{ '<image>\n' }}{%- endfor -%}"
    "{%- for c in message['content'] if c['type'] == 'text' -%}{{ c['text'] }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ ' ASSISTANT: ' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for c in message['content'] if c['type'] == 'text' -%}{{ c['text'] }}{%- endfor -%}"
    "{%- endif -%}{{ '</s>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ ' ASSISTANT:' }}{%- endif -%}"
)

_TEXT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                "rope_scaling", "attention_bias", "mlp_bias", "bos_token_id", "eos_token_id", "head_dim",
                "initializer_range", "pretraining_tp", "use_cache")
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


class LlavaConversionError(GraceError, ValueError):
    """An original LLaVA config field the transformers Llava model cannot express."""


def convert_config(orig: dict, clip_vision: dict, source: str = "config.json") -> dict:
    """Original LLaVA config + CLIP vision config -> a transformers ``LlavaConfig`` dict (vocab extended).

        cfg = convert_config(json.load(open("llava/config.json")), clip_vision_config_dict)
    """
    from transformers import LlavaConfig

    for k in _REQUIRED:
        if k not in orig:
            raise LlavaConversionError(f"{source}: field {k!r} is missing")
    ptype = orig.get("mm_projector_type", "linear")
    if ptype != "mlp2x_gelu":
        raise LlavaConversionError(f"{source}: mm_projector_type {ptype!r} is not supported (transformers Llava "
                                   f"has the LLaVA-1.5 two-layer 'mlp2x_gelu' projector only)")
    feat = orig.get("mm_vision_select_feature", "patch")
    strategy = {"patch": "default", "cls_patch": "full"}.get(feat)
    if strategy is None:
        raise LlavaConversionError(f"{source}: mm_vision_select_feature {feat!r} is not 'patch' or 'cls_patch'")
    if orig.get("mm_use_im_start_end"):
        raise LlavaConversionError(f"{source}: mm_use_im_start_end=true is not supported by transformers Llava")
    merge = orig.get("mm_patch_merge_type", "flat")
    if merge != "flat":
        raise LlavaConversionError(f"{source}: mm_patch_merge_type {merge!r} (LLaVA-NeXT) is not supported; "
                                   f"only 'flat' (LLaVA-1.5)")
    aspect = orig.get("image_aspect_ratio", "square")
    if aspect not in ("pad", "square", None):
        raise LlavaConversionError(f"{source}: image_aspect_ratio {aspect!r} is not supported ('pad' or 'square')")
    mm_hidden = orig.get("mm_hidden_size")
    if mm_hidden is not None and mm_hidden != clip_vision.get("hidden_size"):
        raise LlavaConversionError(f"{source}: mm_hidden_size {mm_hidden} does not match the CLIP tower's "
                                   f"hidden_size {clip_vision.get('hidden_size')}")

    vocab = int(orig["vocab_size"])
    text = {k: orig[k] for k in _TEXT_FIELDS if k in orig and orig[k] is not None}
    text.update(model_type="llama", vocab_size=vocab + 2, pad_token_id=vocab + 1, tie_word_embeddings=False)
    image_size, patch = int(clip_vision.get("image_size", 224)), int(clip_vision.get("patch_size", 32))
    n_patches = (image_size // patch) ** 2 + (1 if strategy == "full" else 0)
    cfg = LlavaConfig(
        text_config=text,
        vision_config=dict(clip_vision),
        image_token_id=vocab,
        image_seq_length=n_patches,
        vision_feature_layer=int(orig.get("mm_vision_select_layer", -2)),
        vision_feature_select_strategy=strategy,
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )
    d = cfg.to_dict()
    d["architectures"] = ["LlavaForConditionalGeneration"]
    d.pop("transformers_version", None)
    return d


def extend_rows(t: torch.Tensor, n_new: int) -> torch.Tensor:
    """Append ``n_new`` rows equal to the mean row (computed in fp32) to a ``(V, H)`` matrix."""
    mean = t.float().mean(dim=0, keepdim=True).to(t.dtype)
    return torch.cat([t, mean.expand(n_new, -1)], dim=0)


def write_tokenizer(tmp: Path, vocab: int) -> str:
    """Add ``<image>`` (id ``vocab``) and ``<pad>`` (``vocab + 1``) to the tokenizer copied into ``tmp``.

    Returns a note for the report. ``tmp`` must not hold a config.json yet (AutoTokenizer would
    read the original LLaVA config and fail on its model_type).
    """
    from transformers import AddedToken, AutoTokenizer

    has_files = any((tmp / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))
    if not has_files:
        return "no tokenizer files in the source: copy the LLaVA tokenizer into the export and add <image>, <pad>"
    try:
        tok = AutoTokenizer.from_pretrained(str(tmp))
    except Exception as e:  # noqa: BLE001 - whatever transformers raises, name the files
        raise LlavaConversionError(f"{tmp}: cannot load the tokenizer files copied from the source "
                                   f"({str(e).splitlines()[0][:200]})") from None
    if len(tok) != vocab:
        raise LlavaConversionError(f"tokenizer has {len(tok)} tokens but config.json vocab_size is {vocab}")
    if IMAGE_TOKEN in tok.get_vocab():
        raise LlavaConversionError(f"tokenizer already has {IMAGE_TOKEN!r} (id {tok.convert_tokens_to_ids(IMAGE_TOKEN)})"
                                   f" although the model's vocabulary has no row for it")
    tok.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    tok.add_special_tokens({"pad_token": PAD_TOKEN})
    ids = tok.convert_tokens_to_ids([IMAGE_TOKEN, PAD_TOKEN])
    if ids != [vocab, vocab + 1]:
        raise LlavaConversionError(f"adding {IMAGE_TOKEN} and {PAD_TOKEN} gave ids {ids}, expected "
                                   f"{[vocab, vocab + 1]}")
    tok.chat_template = VICUNA_CHAT_TEMPLATE
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        (tmp / f).unlink(missing_ok=True)
    tok.save_pretrained(str(tmp))
    # transformers 5 saves the template as chat_template.jinja; older loaders (and vLLM on them)
    # read it from tokenizer_config.json
    tc_path = tmp / "tokenizer_config.json"
    if tc_path.is_file():
        tc = json.loads(tc_path.read_text())
        tc["chat_template"] = VICUNA_CHAT_TEMPLATE
        for k in ("is_local", "local_files_only"):  # load-time flags transformers 5 writes back
            tc.pop(k, None)
        tj = tmp / "tokenizer.json"
        if tj.is_file() and "added_tokens_decoder" not in tc:
            # slow (SentencePiece) loaders learn the added ids from here, not from tokenizer.json
            added = json.loads(tj.read_text()).get("added_tokens", [])
            tc["added_tokens_decoder"] = {
                str(t["id"]): {k: t.get(k, d) for k, d in (("content", ""), ("lstrip", False), ("normalized", False),
                                                          ("rstrip", False), ("single_word", False), ("special", True))}
                for t in added}
        tc_path.write_text(json.dumps(tc, indent=2))
    return f"tokenizer: added {IMAGE_TOKEN} = {vocab} and {PAD_TOKEN} = {vocab + 1}"


def write_processor(tmp: Path, clip_vision: dict, clip_pre: dict | None, strategy: str, aspect: str | None) -> None:
    """``processor_config.json`` + ``preprocessor_config.json`` for LLaVA-1.5 preprocessing.

    ``LlavaImageProcessor`` with ``do_pad`` (for ``image_aspect_ratio: pad``) reproduces the
    original expand-to-square + CLIP preprocessing exactly (notes §3.2); the mean colour, sizes
    and normalisation come from the CLIP directory's preprocessor_config.json when present.
    """
    size = int(clip_vision.get("image_size", 224))
    pre = clip_pre or {}
    image = {
        "image_processor_type": "LlavaImageProcessor",
        "do_pad": aspect == "pad",
        "do_resize": True,
        "size": {"shortest_edge": _edge(pre.get("size"), size)},
        "resample": int(pre.get("resample", 3)),
        "do_center_crop": True,
        "crop_size": _crop(pre.get("crop_size"), size),
        "do_rescale": True,
        "rescale_factor": float(pre.get("rescale_factor", 1 / 255)),
        "do_normalize": True,
        "image_mean": list(pre.get("image_mean", CLIP_MEAN)),
        "image_std": list(pre.get("image_std", CLIP_STD)),
        "do_convert_rgb": True,
    }
    proc = {
        "processor_class": "LlavaProcessor",
        "image_processor": image,
        "image_token": IMAGE_TOKEN,
        "patch_size": int(clip_vision.get("patch_size", 14)),
        "vision_feature_select_strategy": strategy,
        "num_additional_image_tokens": 1,  # the CLS token (0 would give 575 tokens for 576 features)
    }
    (tmp / "processor_config.json").write_text(json.dumps(proc, indent=2))
    # transformers 4.x (and vLLM on it) read the image processor from this file
    (tmp / "preprocessor_config.json").write_text(json.dumps({**image, "processor_class": "LlavaProcessor"},
                                                             indent=2))
    (tmp / "chat_template.jinja").write_text(VICUNA_CHAT_TEMPLATE)


def _edge(v, default: int) -> int:
    if isinstance(v, dict):
        return int(v.get("shortest_edge", v.get("height", default)))
    return int(v) if isinstance(v, int) else default


def _crop(v, default: int) -> dict:
    if isinstance(v, dict) and "height" in v:
        return {"height": int(v["height"]), "width": int(v.get("width", v["height"]))}
    n = int(v) if isinstance(v, int) else default
    return {"height": n, "width": n}


def generation_config(src_dir: Path, text_cfg: dict, new_ids: list[int]) -> dict:
    """The source generation_config.json (if any) with the pad id and ``suppress_tokens`` = new ids."""
    p = src_dir / "generation_config.json"
    gc: dict = {}
    if p.is_file():
        try:
            gc = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise LlavaConversionError(f"{p}: not valid JSON ({e})") from None
    for k in ("bos_token_id", "eos_token_id"):
        if k not in gc and text_cfg.get(k) is not None:
            gc[k] = text_cfg[k]
    gc["pad_token_id"] = text_cfg.get("pad_token_id")
    gc["suppress_tokens"] = sorted(set(gc.get("suppress_tokens") or []) | set(new_ids))
    gc.pop("transformers_version", None)
    return gc
