"""The loaded-model bundle: a transformers VLM plus its tokenizer, image processor and facts.

    vlm = grace.load("ckpt")                  # or grace.models.tiny.make_tiny("llava")
    vlm.generate(image, "What colour is the car?")
    vlm.generate_batch([img1, img2], ["Q1", "Q2"])
    with_chat = vlm.chat(image); with_chat.ask("Q1"); with_chat.ask("Q2")

It holds data only; the decoding code lives in :mod:`grace.infer` (imported when called), so
that loading code does not depend on inference code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from grace.models.families import Family, get_family


@dataclass
class VLM:
    model: Any  # LlavaForConditionalGeneration | Qwen3VLForConditionalGeneration (eval mode)
    tokenizer: Any
    processor: Any  # the image processor (LlavaImageProcessorPil | Qwen2VLImageProcessorPil)
    family: str  # "llava" | "qwen3vl"
    layout: str = "memory"  # "original" | "hf" | "memory"
    quant: dict | None = None  # None or {"bits", "group_size", "format"}
    path: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def adapter(self) -> Family:
        return get_family(self.family)

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prepare(self, image, prompt_or_query: str, *, conv_mode: str | None = None) -> dict[str, torch.Tensor]:
        """Batched (1, L) model inputs; a query is wrapped in the template, a full prompt is used as is."""
        from grace.infer.generate import prepare

        return prepare(self, image, prompt_or_query, conv_mode=conv_mode)

    def generate(self, image, query: str, *, max_new_tokens: int = 128, temperature: float = 0.0,
                 conv_mode: str | None = None) -> str:
        """Answer ``query`` (no ``<image>`` in it) about ``image`` (None = text only); greedy by default."""
        from grace.infer.generate import generate

        return generate(self, image, query, max_new_tokens=max_new_tokens, temperature=temperature,
                        conv_mode=conv_mode).text

    def generate_batch(self, images: list, queries: list[str], *, max_new_tokens: int = 128,
                       conv_mode: str | None = None) -> list[str]:
        """Greedy answers for several (image, query) pairs at once (left padding)."""
        from grace.infer.generate import generate_batch

        return generate_batch(self, images, queries, max_new_tokens=max_new_tokens, conv_mode=conv_mode)

    def chat(self, image=None, *, conv_mode: str | None = None, max_new_tokens: int = 128,
             temperature: float = 0.0):
        """A multi-turn session over one image: ``s = vlm.chat(img); s.ask("Q1"); s.ask("Q2")``."""
        from grace.infer.generate import ChatSession

        return ChatSession(self, image, conv_mode=conv_mode, max_new_tokens=max_new_tokens, temperature=temperature)

    def footprint(self) -> dict[str, int]:
        """Bytes of weights by part: ``language_model``, ``vision``, ``other`` and ``total``."""
        from grace.infer.generate import footprint

        return footprint(self)

    @property
    def kernel_name(self) -> str:
        from grace.quant.api import packed_modules

        mods = packed_modules(self.model)
        if not mods:
            return "dense"
        b = next(iter(mods.values())).backend
        return getattr(b, "name", type(b).__name__) if b is not None else "reference"
