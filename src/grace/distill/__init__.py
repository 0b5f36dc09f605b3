"""Distillation objectives of GRACE as small pure functions plus one tiny state class.

    from grace.distill import gdkd_loss, rcka_loss, IBController
    loss = ce + beta * gdkd_loss(zs, zt, labels) + omega * rcka_loss(hs, ht, input_ids == image_id)

* :mod:`grace.distill.gdkd`  confidence-gated decoupled KD on logits (GRACE.md §3)
* :mod:`grace.distill.rcka`  relational CKA of the visual tokens (GRACE.md §4)
* :mod:`grace.distill.ib`    the Information-Bottleneck beta controller (GRACE.md §5)
* :mod:`grace.distill.hooks` capture one decoder layer's output with a forward hook
"""

from grace.distill.gdkd import GDKDResult, confidence_gate, dkd_per_position, gdkd, gdkd_loss
from grace.distill.hooks import LayerCapture, decoder_layers, hidden_state_module
from grace.distill.ib import IBController
from grace.distill.rcka import RCKAResult, centered_gram, cka, rcka, rcka_loss

__all__ = [
    "GDKDResult",
    "RCKAResult",
    "confidence_gate",
    "dkd_per_position",
    "gdkd",
    "gdkd_loss",
    "cka",
    "centered_gram",
    "rcka",
    "rcka_loss",
    "IBController",
    "LayerCapture",
    "decoder_layers",
    "hidden_state_module",
]
