"""Shared test helpers: tiny text models in a QAT checkpoint layout, built in process."""

from __future__ import annotations

from pathlib import Path

import torch


def make_tiny_llama(seed: int = 0, hidden: int = 256, inter: int = 512, layers: int = 2, vocab: int = 128):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def save_qat_checkpoint(model, out: Path, spec) -> list[str]:
    """Quantize, bake and save ``model`` as a QAT checkpoint (dense grid weights + sidecar)."""
    import grace
    from grace.formats.qat_sidecar import save_sidecar, save_spec
    from grace.quant.api import sidecar_tensors

    names = grace.quantize(model, spec)
    grace.bake(model)
    side = sidecar_tensors(model)
    grace.dequantize_modules(model)
    model.save_pretrained(out)
    save_sidecar(out, side)
    save_spec(out, spec.to_dict())
    return names
