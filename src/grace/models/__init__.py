"""Model families as data, the VLM bundle, tiny models, and training-input encoding.

Training encoding (called by the training loop)::

    from grace.models import encode_example, collate
    ex = encode_example(vlm_or_model, tokenizer, processor, record["conversations"], image, max_length=2048)
    batch = collate([ex, ...], pad_token_id=tokenizer.pad_token_id)
    loss = model(**batch).loss

* ``encode_example(model, tokenizer, processor, conversations, image, max_length, *, conv_mode=None)``:
  ``model`` is a :class:`VLM`, a transformers model, its config, or a family name ("qwen3vl";
  "llava" only for text-only records). ``conversations`` is the LLaVA JSON list of
  ``{"from": "human"|"gpt", "value": str}`` turns (alternating, starting with human); one
  ``<image>`` marker when ``image`` (a PIL image) is given. Returns 1-D ``input_ids`` and
  ``labels`` (``-100`` except the assistant replies and their end-of-turn token) plus the vision
  inputs: ``pixel_values`` ((1, 3, H, W) for LLaVA; (patches, dim) for Qwen3-VL with
  ``image_grid_thw`` (1, 3)), and for Qwen3-VL always ``mm_token_type_ids`` (L,). Raises
  ``ValueError`` with the reason for a bad record (image without ``<image>`` or the reverse,
  several images, empty or misordered turns, longer than ``max_length``, nothing supervised).
* ``collate(examples, pad_token_id)``: right padding; ``attention_mask``; ``labels`` padded
  with -100; image tensors concatenated along dim 0 in example order (what both models expect).

Families: ``LLAVA`` and ``QWEN3VL`` (:mod:`grace.models.families`); tiny random models of the
real architectures: :func:`grace.models.tiny.make_tiny`.
"""

from grace.models.encode import (
    ModelInfo,
    collate,
    collate_left,
    encode_example,
    encode_prompt,
    model_info,
    render_prompt,
)
from grace.models.families import FAMILIES, LLAVA, QWEN3VL, Family, get_family
from grace.models.vlm import VLM

__all__ = [
    "encode_example",
    "collate",
    "collate_left",
    "encode_prompt",
    "render_prompt",
    "model_info",
    "ModelInfo",
    "Family",
    "FAMILIES",
    "LLAVA",
    "QWEN3VL",
    "get_family",
    "VLM",
]
