"""Model inputs for one (image, prompt) or one training conversation, and batch collation.

Invariant: the ids a model sees for an image prompt are the template text tokenised chunk-wise
around the image marker (:func:`grace.data.templates.encode_segments`) with the marker expanded
to the exact number of image-feature positions, so transformers' ``masked_scatter`` puts each
feature where the original LLaVA splice (or the Qwen3-VL processor) would.

Per-example tensors (no batch dimension except the image axis):

* ``input_ids`` (L,) int64, ``labels`` (L,) int64 (``-100`` except assistant tokens);
* LLaVA: ``pixel_values`` (1, 3, H, W) float32;
* Qwen3-VL: ``pixel_values`` (patches, C*T*P*P) float32, ``image_grid_thw`` (1, 3) int64 and
  ``mm_token_type_ids`` (L,) int (1 at image tokens; always present for Qwen3-VL).

:func:`collate` pads right and concatenates the image tensors along dim 0 (LLaVA stacks
images, Qwen3-VL concatenates patches and grids), which is what both models expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from grace.data import templates as T
from grace.models.families import Family, get_family, n_image_tokens_llava


@dataclass(frozen=True)
class ModelInfo:
    """What input building needs to know about a model."""

    family: Family
    image_token_id: int
    llava_image_tokens: int | None = None  # LLaVA: features per image
    merge_size: int = 2  # Qwen3-VL: spatial merge

    @property
    def conv_mode(self) -> str | None:
        return self.family.default_conv_mode


def model_info(obj: Any, tokenizer=None) -> ModelInfo:
    """:class:`ModelInfo` from a VLM bundle, a transformers model, its config, or a family name.

    A bare family name works for Qwen3-VL (image id from the tokenizer) and for text-only LLaVA;
    LLaVA with images needs the model or config (the patch grid size lives there).
    """
    if isinstance(obj, ModelInfo):
        return obj
    cfg = None
    if hasattr(obj, "model") and hasattr(obj.model, "config"):
        cfg = obj.model.config  # a VLM bundle
    elif hasattr(obj, "config") and hasattr(obj.config, "model_type"):
        cfg = obj.config
    elif hasattr(obj, "model_type"):
        cfg = obj
    if cfg is not None:
        fam = get_family(cfg)
        if fam.name == "llava":
            return ModelInfo(fam, cfg.image_token_id, n_image_tokens_llava(cfg))
        return ModelInfo(fam, cfg.image_token_id, None, cfg.vision_config.spatial_merge_size)
    fam = get_family(obj)
    if fam.name == "qwen3vl":
        if tokenizer is None:
            raise ValueError("a family name needs the tokenizer to find the <|image_pad|> id")
        return ModelInfo(fam, tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    # LLaVA by name: the placeholder is '<image>' if the tokenizer has it, else one past the vocab.
    tid = None
    if tokenizer is not None:
        tid = tokenizer.convert_tokens_to_ids(T.IMAGE_MARKER)
        if tid == tokenizer.unk_token_id:
            tid = None
    return ModelInfo(fam, tid if tid is not None else (len(tokenizer) if tokenizer is not None else -1), None)


def to_rgb(image):
    """RGB copy of a PIL image (done before the HF processors: their alpha handling differs, notes §3.1)."""
    return image if image.mode == "RGB" else image.convert("RGB")


def process_image(info: ModelInfo, processor, image) -> tuple[dict[str, torch.Tensor], int]:
    """``(vision tensors, number of image tokens)`` for one PIL image."""
    out = processor(images=to_rgb(image), return_tensors="pt")
    if info.family.name == "llava":
        if info.llava_image_tokens is None:
            raise ValueError("LLaVA with an image needs the model or its config (patch grid), not just 'llava'")
        return {"pixel_values": out["pixel_values"].float()}, info.llava_image_tokens
    grid = out["image_grid_thw"].long()
    n = int(grid.prod()) // (info.merge_size**2)
    return {"pixel_values": out["pixel_values"].float(), "image_grid_thw": grid}, n


def _segments(info: ModelInfo, conversations, conv_mode, add_generation_prompt):
    if info.family.name == "llava":
        return T.llava_segments(conversations, conv_mode or info.conv_mode, add_generation_prompt)
    return T.qwen_segments(conversations, add_generation_prompt)


def _image_marker(info: ModelInfo) -> str:
    return T.IMAGE_MARKER if info.family.name == "llava" else "<|image_pad|>"


def _finish(info: ModelInfo, ids: list[int], labels: list[int], vision: dict) -> dict[str, torch.Tensor]:
    out = {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long)}
    out.update(vision)
    if info.family.name == "qwen3vl":
        out["mm_token_type_ids"] = (out["input_ids"] == info.image_token_id).to(torch.int32)
    return out


def _check_turns(conversations) -> list[dict]:
    if not isinstance(conversations, list) or not conversations:
        raise ValueError("conversations must be a non-empty list of {from, value} turns")
    norm = []
    for i, t in enumerate(conversations):
        if not isinstance(t, dict):
            raise ValueError(f"turn {i}: expected a dict with 'from' and 'value'")
        who = str(t.get("from", t.get("role", ""))).lower()
        val = t.get("value", t.get("content"))
        if not isinstance(val, str) or not val.replace(T.IMAGE_MARKER, "").strip():
            raise ValueError(f"turn {i}: empty or non-text value")
        want = ("human", "user") if i % 2 == 0 else ("gpt", "assistant")
        if who not in want:
            raise ValueError(f"turn {i}: speaker {who!r}; turns must alternate human/gpt starting with human")
        norm.append({"from": "human" if i % 2 == 0 else "gpt", "value": val})
    if len(norm) < 2:
        raise ValueError("conversation has no assistant turn to supervise")
    return norm


def encode_example(model, tokenizer, processor, conversations: list[dict], image=None, max_length: int = 2048,
                   *, conv_mode: str | None = None) -> dict[str, torch.Tensor]:
    """Training tensors for one LLaVA/ShareGPT4V record; raises ValueError for a bad record.

        ex = encode_example(vlm, vlm.tokenizer, vlm.processor, rec["conversations"], img, 2048)

    As the original LLaVA preprocessing does, the ``<image>`` marker is moved to the front of its
    turn followed by a newline. Only assistant replies (with their end-of-turn token) are
    supervised. ``model`` is a VLM bundle, a transformers model, its config or a family name.
    """
    info = model_info(model, tokenizer)
    turns = _check_turns(conversations)
    n_markers = sum(t["value"].count(T.IMAGE_MARKER) for t in turns)
    if image is not None and n_markers == 0:
        raise ValueError("an image is given but no turn contains <image>")
    if image is None and n_markers:
        raise ValueError("a turn contains <image> but no image is given")
    if n_markers > 1:
        raise ValueError(f"{n_markers} <image> markers; one image per record is supported")
    for t in turns:
        if T.IMAGE_MARKER in t["value"]:
            if t["from"] != "human":
                raise ValueError("<image> must be in a human turn")
            t["value"] = T.IMAGE_MARKER + "\n" + t["value"].replace(T.IMAGE_MARKER, "").strip()
    vision: dict = {}
    n_img = 0
    if image is not None:
        vision, n_img = process_image(info, processor, image)
    segs = _segments(info, turns, conv_mode, add_generation_prompt=False)
    ids, labels = T.encode_segments(tokenizer, segs, image_marker=_image_marker(info),
                                    image_token_id=info.image_token_id, n_image_tokens=n_img)
    if len(ids) > max_length:
        raise ValueError(f"too long: {len(ids)} tokens (with {n_img} image tokens) > max_length {max_length}")
    if all(lab == T.IGNORE_INDEX for lab in labels):
        raise ValueError("no supervised tokens after encoding")
    return _finish(info, ids, labels, vision)


def encode_prompt(model, tokenizer, processor, prompt: str, image=None) -> dict[str, torch.Tensor]:
    """Inference tensors (no labels) for a fully rendered template ``prompt``."""
    info = model_info(model, tokenizer)
    marker = T.IMAGE_MARKER if info.family.name == "llava" else T.QWEN_IMAGE
    has_marker = marker in prompt
    if image is not None and not has_marker:
        raise ValueError(f"an image is given but the prompt has no {marker}")
    if image is None and has_marker:
        raise ValueError(f"the prompt contains {marker} but no image is given")
    vision: dict = {}
    n_img = 0
    if image is not None:
        vision, n_img = process_image(info, processor, image)
    ids, _ = T.encode_segments(tokenizer, [(prompt, False)], image_marker=_image_marker(info),
                               image_token_id=info.image_token_id, n_image_tokens=n_img)
    out = _finish(info, ids, [T.IGNORE_INDEX] * len(ids), vision)
    del out["labels"]
    return out


def render_prompt(model, query: str | None = None, *, with_image: bool = True, conv_mode: str | None = None,
                  history: list[tuple[str, str]] | None = None) -> str:
    """The template prompt for ``query`` (without ``<image>``), optionally after earlier turns.

    ``history`` is ``[(user, assistant), ...]``; the image goes with the first user turn.
    """
    info = model_info(model)
    turns: list[dict] = []
    for i, (u, a) in enumerate(history or []):
        turns += [{"from": "human", "value": (T.IMAGE_MARKER + "\n" + u) if (i == 0 and with_image) else u},
                  {"from": "gpt", "value": a}]
    first = not turns
    turns.append({"from": "human", "value": (T.IMAGE_MARKER + "\n" + query) if (first and with_image) else query})
    return "".join(t for t, _ in _segments(info, turns, conv_mode, add_generation_prompt=True))


def collate(examples: list[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: ``input_ids``, ``attention_mask``, ``labels`` (-100 pad), vision tensors.

        batch = collate([ex1, ex2], tokenizer.pad_token_id)
    """
    if not examples:
        raise ValueError("collate needs at least one example")
    n = max(int(e["input_ids"].numel()) for e in examples)
    b = len(examples)
    ids = torch.full((b, n), pad_token_id, dtype=torch.long)
    mask = torch.zeros((b, n), dtype=torch.long)
    out: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
    has_labels = all("labels" in e for e in examples)
    if has_labels:
        out["labels"] = torch.full((b, n), T.IGNORE_INDEX, dtype=torch.long)
    has_tt = any("mm_token_type_ids" in e for e in examples)
    if has_tt:
        out["mm_token_type_ids"] = torch.zeros((b, n), dtype=torch.int32)
    for i, e in enumerate(examples):
        k = int(e["input_ids"].numel())
        ids[i, :k] = e["input_ids"]
        mask[i, :k] = 1
        if has_labels:
            out["labels"][i, :k] = e["labels"]
        if has_tt and "mm_token_type_ids" in e:
            out["mm_token_type_ids"][i, :k] = e["mm_token_type_ids"]
    for key in ("pixel_values", "image_grid_thw"):
        parts = [e[key] for e in examples if key in e]
        if parts:
            out[key] = torch.cat(parts, dim=0)
    return out


def collate_left(examples: list[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-padded batch for generation (no labels)."""
    n = max(int(e["input_ids"].numel()) for e in examples)
    b = len(examples)
    ids = torch.full((b, n), pad_token_id, dtype=torch.long)
    mask = torch.zeros((b, n), dtype=torch.long)
    out: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
    has_tt = any("mm_token_type_ids" in e for e in examples)
    if has_tt:
        out["mm_token_type_ids"] = torch.zeros((b, n), dtype=torch.int32)
    for i, e in enumerate(examples):
        k = int(e["input_ids"].numel())
        ids[i, n - k :] = e["input_ids"]
        mask[i, n - k :] = 1
        if has_tt:
            out["mm_token_type_ids"][i, n - k :] = e["mm_token_type_ids"]
    for key in ("pixel_values", "image_grid_thw"):
        parts = [e[key] for e in examples if key in e]
        if parts:
            out[key] = torch.cat(parts, dim=0)
    return out
