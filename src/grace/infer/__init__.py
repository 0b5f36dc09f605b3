"""Generation over a loaded :class:`grace.models.VLM`: single, batched, multi-turn, with timing.

    g = grace.infer.generate(vlm, image, "What is it?")   # Generation(text, n_new_tokens, ttft_s, tokens_per_s)
    answers = grace.infer.generate_batch(vlm, images, queries)
"""

from grace.infer.generate import (
           ChatSession,
           ContextLengthError,
           Generation,
           footprint,
           generate,
           generate_batch,
           prepare,
)
from grace.models.vlm import VLM

__all__ = ["generate", "generate_batch", "prepare", "footprint", "ChatSession", "Generation", "ContextLengthError",
           "VLM"]
