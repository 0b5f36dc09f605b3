"""Capture one decoder layer's output with a forward hook (instead of ``output_hidden_states``).

Asking a model for all hidden states keeps every layer's output alive until the loss is built;
for a frozen 7B-8B teacher that is the whole residual stream for nothing. A hook on the one
layer RCKA reads keeps exactly one tensor.

Hidden-state indices follow transformers' ``hidden_states`` tuple of a decoder with ``L``
layers: index 0 is the embedding output, index ``k`` (1..L-1) the output of decoder layer
``k - 1``, and index ``L`` / ``-1`` the *normed* output of the last layer. So index ``-2`` (the
GRACE default) is the output of the penultimate decoder layer, ``layers[-2]``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["decoder_layers", "hidden_state_module", "LayerCapture"]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The language model's decoder layer list: ``layers = decoder_layers(vlm)``.

    Looks for ``language_model.layers`` (transformers 5 VLMs) first, then any ``layers``
    ``ModuleList`` outside vision modules (plain causal LMs, original LLaVA layout).
    """
    candidates = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or not name.endswith("layers"):
            continue
        if any(v in name for v in ("vision", "visual", "encoder")):
            continue
        candidates.append((0 if name.endswith("language_model.layers") else 1, name, mod))
    if not candidates:
        raise ValueError(f"{type(model).__name__}: no decoder layer list ('...layers') found")
    candidates.sort(key=lambda c: (c[0], len(c[1])))
    return candidates[0][2]


def _final_norm(model: nn.Module, layers: nn.ModuleList) -> nn.Module:
    for mod in model.modules():
        if any(sub is layers for sub in mod.children()) and hasattr(mod, "norm"):
            return mod.norm
    raise ValueError(f"{type(model).__name__}: no final norm next to the decoder layers")


def hidden_state_module(model: nn.Module, index: int) -> nn.Module:
    """The module whose output is ``hidden_states[index]``: ``m = hidden_state_module(vlm, -2)``."""
    layers = decoder_layers(model)
    n = len(layers)
    k = index if index >= 0 else n + 1 + index
    if not 0 <= k <= n:
        raise ValueError(f"hidden-state index {index} out of range for a decoder with {n} layers")
    if k == 0:
        return model.get_input_embeddings()
    if k == n:
        return _final_norm(model, layers)
    return layers[k - 1]


class LayerCapture:
    """Keep the latest output of ``module`` while active::

        with LayerCapture(hidden_state_module(teacher, -2)) as cap:
            teacher(**batch)
        hidden = cap.output          # (B, S, d)

    Tuple outputs (older decoder layers) are reduced to their first element.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.output: torch.Tensor | None = None
        self._handle = None

    def _hook(self, _mod, _inp, out):
        self.output = out[0] if isinstance(out, tuple | list) else out

    def __enter__(self) -> LayerCapture:
        self.output = None
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def pop(self) -> torch.Tensor:
        """Return the captured output and forget it (so a stale tensor is never reused)."""
        if self.output is None:
            raise RuntimeError("LayerCapture: the hooked layer did not run in this forward")
        out, self.output = self.output, None
        return out
