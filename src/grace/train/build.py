"""Build a run's inputs from its config when the caller did not pass them (the CLI path).

Models are loaded with :func:`grace.load` from local directories in any layout grace reads
(original LLaVA, transformers Llava / Qwen3-VL; dense or QAT). The student is loaded in
float32 (it is trained: optimizer master weights must be fp32; autocast supplies the bf16
compute) and a QAT student comes back as fake-quant modules (``qat_as="fake"``) so training
continues from its learned scales; the teacher is loaded in bf16 when the run uses bf16, else
float32. Records are encoded by :func:`grace.models.encode_example` (one home for templates,
supervision masks and image-token expansion).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from grace.data.conversations import ConversationDataset, pad_collate
from grace.train.config import ConfigError, TrainConfig

__all__ = ["Built", "build_inputs", "load_pretrained", "family_encoder"]


@dataclass
class Built:
    student: nn.Module
    teacher: nn.Module | None
    dataset: object
    tokenizer: object
    processor: object
    collate_fn: object


def load_pretrained(path: str | Path, *, dtype: torch.dtype = torch.float32, qat_as: str = "fake"):
    """``(model, tokenizer, image_processor)`` from a local checkpoint directory, via grace.load."""
    import grace

    vlm = grace.load(path, dtype=dtype, qat_as=qat_as)
    return vlm.model, vlm.tokenizer, vlm.processor


def family_encoder(model: nn.Module, tokenizer, processor, max_length: int = 2048):
    """The ``encode_fn(conversations, image)`` for ``model``'s family (LLaVA or Qwen3-VL)."""
    from grace.models import encode_example

    def encode(conversations: list[dict], image) -> dict:
        return encode_example(model, tokenizer, processor, conversations, image, max_length)

    return encode


def build_inputs(cfg: TrainConfig, *, student=None, teacher=None, dataset=None, tokenizer=None,
                 processor=None) -> Built:
    """Fill in whatever of student / teacher / dataset the caller did not pass, from ``cfg``."""
    if student is None:
        if not cfg.student:
            raise ConfigError("student: no student model given (set student: PATH in the recipe)")
        student, tokenizer, processor = load_pretrained(cfg.student)
    if teacher is None and cfg.distill:
        if not cfg.teacher:
            raise ConfigError(f"teacher: mode {cfg.mode} distils from a teacher; set teacher: PATH")
        bf16 = cfg.mixed_precision == "bf16" or (
            cfg.mixed_precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        teacher, _, _ = load_pretrained(cfg.teacher, dtype=torch.bfloat16 if bf16 else torch.float32)
    if dataset is None:
        if not cfg.data:
            raise ConfigError("data: no annotation files given (data: [FILE.json, FILE2.json%50])")
        encode_fn = family_encoder(student, tokenizer, processor, cfg.max_length or 2048)
        dataset = ConversationDataset(cfg.data, encode_fn=encode_fn, image_root=cfg.image_root,
                                      max_length=cfg.max_length, seed=cfg.seed)
    pad_id = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    collate = partial(pad_collate, pad_token_id=pad_id if pad_id is not None else 0)
    return Built(student, teacher, dataset, tokenizer, processor, collate)
