"""Build a run's inputs from its config when the caller did not pass them (the CLI path).

Models are read from *local* transformers-layout directories (``config.json`` + safetensors,
tokenizer files, ``preprocessor_config.json``); nothing is fetched from a hub. The student is
loaded in float32 (it is trained: optimizer master weights must be fp32; autocast supplies the
bf16 compute), the teacher in bf16 when the run uses bf16, else float32.

The ``encode_fn`` is the reference encoder of the model family from
:mod:`grace.data.conversations` (LLaVA-1.5 ``vicuna_v1``, Qwen3-VL chat format). A caller with
its own family encoder builds the :class:`~grace.data.conversations.ConversationDataset` and
passes it to :func:`grace.train.train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from grace.data.conversations import ConversationDataset, llava_encoder, pad_collate, qwen3vl_encoder
from grace.errors import GraceError
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


def load_pretrained(path: str | Path, *, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer, image_processor)`` from a local transformers directory."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    p = Path(path)
    if not (p / "config.json").is_file():
        raise GraceError(f"{p}: not a model directory (no config.json)")
    try:
        model = AutoModelForImageTextToText.from_pretrained(p, dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError) as e:
        raise GraceError(f"{p}: cannot load model/tokenizer ({str(e).splitlines()[0][:200]})") from None
    processor = None
    if (p / "preprocessor_config.json").is_file():
        # The PIL backend: no torchvision here, and it is the one that matches the original
        # LLaVA preprocessing bit for bit.
        processor = AutoImageProcessor.from_pretrained(p, backend="pil", local_files_only=True)
    return model, tokenizer, processor


def family_encoder(model: nn.Module, tokenizer, processor):
    """The ``encode_fn(conversations, image)`` for ``model``'s family (LLaVA or Qwen3-VL)."""
    family = getattr(model.config, "model_type", "")
    if processor is None:
        raise ConfigError(f"model family {family!r}: no image processor (preprocessor_config.json) to encode images")
    c = model.config
    if family == "llava":
        vc = c.vision_config
        n = (vc.image_size // vc.patch_size) ** 2 + (1 if c.vision_feature_select_strategy == "full" else 0)
        return llava_encoder(tokenizer, processor, image_token_id=c.image_token_id, n_image_tokens=n)
    if family == "qwen3_vl":
        return qwen3vl_encoder(tokenizer, processor, image_token_id=c.image_token_id,
                               merge_size=c.vision_config.spatial_merge_size)
    raise ConfigError(f"model family {family!r}: no training encoder (supported: llava, qwen3_vl)")


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
        encode_fn = family_encoder(student, tokenizer, processor)
        dataset = ConversationDataset(cfg.data, encode_fn=encode_fn, image_root=cfg.image_root,
                                      max_length=cfg.max_length, seed=cfg.seed)
    pad_id = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    collate = partial(pad_collate, pad_token_id=pad_id if pad_id is not None else 0)
    return Built(student, teacher, dataset, tokenizer, processor, collate)
