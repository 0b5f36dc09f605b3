"""The one-line API: choose modules by pattern, swap them, bake, convert back, build param groups.

    names = grace.quantize(model, grace.W4G128)     # wraps LM linears in QATLinear, returns names
    grace.bake(model)                              # weights := their fake-quantized values
    sidecar = grace.quant.api.sidecar_tensors(model)
    grace.dequantize_modules(model)                # back to plain nn.Linear (weights unchanged)
"""

from __future__ import annotations

import torch
from torch import nn

from grace.config import QuantSpec
from grace.quant.modules import PackedLinear, QATLinear

_SCALE_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def select_linears(model: nn.Module, spec: QuantSpec) -> list[str]:
    """Dotted names of the ``nn.Linear`` modules that ``spec`` targets (in model order)."""
    return [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and not isinstance(mod, QATLinear) and spec.matches(name)
    ]


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, new)


def quantize(model: nn.Module, spec: QuantSpec, *, init_scales: bool = True) -> list[str]:
    """Wrap every targeted linear in a :class:`QATLinear` (in place) and return their names.

    The wrapped module keeps the original ``weight``/``bias`` Parameter objects; a per-group
    ``log_scale`` is added and initialised by the MSE grid search (GRACE.md §2).
    """
    names = select_linears(model, spec)
    if not names:
        raise ValueError(f"no module matches the {spec.name} targets {spec.targets}; nothing to quantize")
    sd = _SCALE_DTYPES[spec.scale_dtype]
    for name in names:
        lin = model.get_submodule(name)
        _set_module(model, name, QATLinear(lin, spec.bits, spec.group_size, sd, init_scales=init_scales))
    return names


def qat_modules(model: nn.Module) -> dict[str, QATLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QATLinear)}


def packed_modules(model: nn.Module) -> dict[str, PackedLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, PackedLinear)}


@torch.no_grad()
def bake(model: nn.Module) -> list[str]:
    """Write each QAT module's fake-quantized weight into its dense weight (in place).

    Afterwards every weight lies exactly on its grid (in fp32 / fp16 storage; bf16 storage is
    within rounding of it and the codes stay recoverable). Returns the baked module names.
    """
    names = []
    for name, m in qat_modules(model).items():
        m.weight.copy_(m.quantized_weight().to(m.weight.dtype))
        names.append(name)
    return names


def dequantize_modules(model: nn.Module) -> list[str]:
    """Replace every :class:`QATLinear` by a plain ``nn.Linear`` sharing its weight and bias."""
    names = []
    for name, m in list(qat_modules(model).items()):
        lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
        lin.weight = m.weight
        lin.bias = m.bias
        _set_module(model, name, lin)
        names.append(name)
    return names


def sidecar_tensors(model: nn.Module, prefix_map=None) -> dict[str, torch.Tensor]:
    """The published sidecar dict ``{NAME.weight, NAME.log_scale, NAME.bias}`` for every QAT module.

    ``prefix_map(name) -> name`` lets a caller rename modules (e.g. to the original LLaVA layout).
    """
    out = {}
    for name, m in qat_modules(model).items():
        key = prefix_map(name) if prefix_map else name
        out[f"{key}.weight"] = m.weight.detach()
        out[f"{key}.log_scale"] = m.log_scale.detach().float()
        if m.bias is not None:
            out[f"{key}.bias"] = m.bias.detach()
    return out


def param_groups(model: nn.Module, *, lr: float, weight_decay: float = 0.0, scale_lr: float | None = None,
                 trainable_only: bool = True) -> list[dict]:
    """Optimizer groups: weights (with decay, except biases / norms), no-decay, and log-scales.

    Log-scales get their own learning rate (``scale_lr``, default ``lr``) and no weight decay.
    Empty groups are dropped.
    """
    decay, no_decay, scales = [], [], []
    for name, p in model.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        if name.endswith("log_scale"):
            scales.append(p)
        elif p.dim() < 2 or "norm" in name or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay, "name": "weights"},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": "no_decay"},
        {"params": scales, "lr": scale_lr if scale_lr is not None else lr, "weight_decay": 0.0, "name": "log_scales"},
    ]
    return [g for g in groups if g["params"]]


@torch.no_grad()
def rtn_quantize(model: nn.Module, spec: QuantSpec) -> list[str]:
    """Post-training round-to-nearest on the same grid (MSE-initialised scales), baked in place.

    The PTQ baseline of GRACE.md §7: quantize, bake, leaving QAT modules whose weights are on
    the grid (so the model can be packed or saved as a QAT checkpoint like any other).
    """
    names = quantize(model, spec)
    bake(model)
    return names
