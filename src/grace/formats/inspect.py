"""Describe a checkpoint directory from its files alone (no model is built): ``grace inspect``."""

from __future__ import annotations

from pathlib import Path

from grace.formats.checkpoint import CheckpointDir
from grace.formats.metadata import PackedMetadata
from grace.formats.qat_sidecar import group_size_from, module_bits, open_sidecar


def _part(name: str) -> str:
    if any(k in name for k in ("vision_tower", "visual", "vision_model")):
        return "vision"
    if any(k in name for k in ("mm_projector", "multi_modal_projector", "merger")):
        return "projector"
    return "language_model"


def inspect_checkpoint(path: str | Path) -> dict:
    ck = CheckpointDir.open(path)
    info: dict = {"path": str(ck.path), "family": ck.family, "layout": ck.layout, "form": ck.form}
    if ck.form == "packed":
        meta = PackedMetadata.load(ck.path)
        info.update(bits=meta.bits, group_size=meta.group_size, format=meta.version,
                    quantized_modules=len(meta.modules))
        if meta.group_size_overrides:
            info["row_wide_group_modules"] = len(meta.group_size_overrides)
        info["kernel"] = _kernel_for(meta.bits)
    elif ck.form == "qat":
        side = open_sidecar(ck.path)
        names = side.module_names()
        bits = module_bits(ck.path, side, names[0]) if names else None
        g = None
        if names:
            g = group_size_from(side.shape(f"{names[0]}.weight"), side[f"{names[0]}.log_scale"].numel())
        info.update(bits=bits, group_size=g, sidecar=side.path.name, quantized_modules=len(names))
    elif ck.form not in ("dense",):
        qc = ck.config.get("quantization_config", {})
        info.update(quant_method=qc.get("quant_method"), quantization_config=qc)
    fp: dict[str, int] = {}
    for name, t in ck.index().items():
        fp[_part(name)] = fp.get(_part(name), 0) + t.nbytes
    fp["total"] = sum(fp.values())
    info["footprint"] = fp
    return info


def _kernel_for(bits: int) -> str:
    """The backend grace.load would pick for this bit width on this machine's CPU (informational)."""
    try:
        from grace.kernels import available_backends
    except ImportError:
        return "reference (dequantise)"
    names = available_backends(bits, "cpu")
    return names[0] if names else "reference"
