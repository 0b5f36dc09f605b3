"""Load and save checkpoints in every supported layout and form.

    vlm = grace.io.load("ckpt", vision_tower=None, device="cpu", dtype=None, qat_as="packed", kernel=None)
    grace.io.save_checkpoint(model, tokenizer, processor, "out", layout="hf" | "original", family="llava")
    grace.io.save_packed(model, tokenizer, processor, "out-packed", layout="original")

See :mod:`grace.io.load` (layouts, forms, the meta-device path) and :mod:`grace.io.save`
(the on-disk layouts written, atomically).
"""

from grace.io.load import LoadError, detect_form, detect_layout, load
from grace.io.save import save_checkpoint, save_packed, to_packed
from grace.models.vlm import VLM

__all__ = ["load", "save_checkpoint", "save_packed", "to_packed", "detect_layout", "detect_form", "LoadError", "VLM"]
