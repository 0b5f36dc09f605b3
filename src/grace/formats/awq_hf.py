"""AutoAWQ GEMM with a standard ``quantization_config``: the W4 checkpoint transformers and vLLM load.

The tensors are exactly the AWQ GEMM layout of :mod:`grace.formats.awq_gemm` (``qweight`` int32
``(in, out/8)``, ``qzeros`` int32 ``(in/g, out/8)`` all nibbles 8, ``scales`` fp16 ``(in/g, out)``);
what differs from grace's own packed directory is the config: instead of ``awq_packing`` +
``awq_quantized_modules.json``, config.json carries

    "quantization_config": {"quant_method": "awq", "version": "gemm", "bits": 4,
                            "group_size": 128, "zero_point": true,
                            "modules_to_not_convert": [...]}

so loaders pick an AWQ backend by themselves (transformers 5.x through ``gptqmodel``; vLLM
natively). W4 only: the AWQ format has no 8-bit variant. Every quantized module needs
``in % group_size == 0`` and ``out % 8 == 0``.

``modules_to_not_convert`` is read differently by the two loaders (both matched against
in-memory module names): transformers 5.x treats each entry as a regex anchored at the start of
the name and ending at a module boundary, or as a name suffix (:func:`transformers_skips`);
vLLM skips a layer when an entry is a *substring* of its prefix (:func:`vllm_skips`). grace
writes entries that work under both rules.
"""

from __future__ import annotations

import re

import torch

from grace.errors import GraceError
from grace.formats import awq_gemm
from grace.formats.metadata import FormatError

QUANT_METHOD = "awq"
VERSION = "gemm"
BITS = 4
TENSOR_NAMES = ("qweight", "qzeros", "scales")


class AwqExportError(GraceError, ValueError):
    """A module (or a whole model) that the AWQ GEMM layout cannot express."""


def check_expressible(name: str, out_features: int, in_features: int, group_size: int, bits: int) -> None:
    """Raise :class:`AwqExportError` naming ``name`` if AWQ GEMM cannot hold this module."""
    if bits != BITS:
        raise AwqExportError(f"{name}: AWQ GEMM is 4-bit only; this model is W{bits} "
                             f"(export it with --format compressed-tensors)")
    if group_size <= 0 or in_features % group_size:
        raise AwqExportError(f"{name}: group size {group_size} does not divide in_features {in_features}")
    if out_features % 8:
        raise AwqExportError(f"{name}: out_features {out_features} is not divisible by 8 (AWQ packs 8 outputs "
                             f"per int32)")


def pack(codes: torch.Tensor, scales: torch.Tensor, name: str = "?") -> dict[str, torch.Tensor]:
    """Signed 4-bit codes ``(out, in)`` + scale grid ``(out, in/g)`` -> ``{qweight, qzeros, scales}``.

        tensors = pack(codes, scales, "model.language_model.layers.0.mlp.up_proj")
    """
    out_f, in_f = codes.shape
    if scales.dim() != 2 or scales.shape[0] != out_f or scales.shape[1] == 0 or in_f % scales.shape[1]:
        raise AwqExportError(f"{name}: scale grid {tuple(scales.shape)} does not fit codes {(out_f, in_f)}")
    check_expressible(name, out_f, in_f, in_f // scales.shape[1], BITS)
    try:
        return awq_gemm.pack_w4(codes, scales, in_f // scales.shape[1])
    except awq_gemm.PackError as e:
        raise AwqExportError(f"{name}: {e}") from None


def unpack(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """AWQ GEMM tensors -> ``(codes int8 (out, in), scale grid (out, in/g) fp16, group_size)``.

        codes, s, g = unpack(sd[n + ".qweight"], sd[n + ".qzeros"], sd[n + ".scales"])
    """
    return awq_gemm.unpack_w4(qweight, qzeros, scales)


def config_block(group_size: int, modules_to_not_convert: list[str]) -> dict:
    """The standard AWQ ``quantization_config`` (symmetric GRACE codes = zero point 8 in every nibble)."""
    return {
        "quant_method": QUANT_METHOD,
        "version": VERSION,
        "bits": BITS,
        "group_size": group_size,
        "zero_point": True,
        "modules_to_not_convert": list(modules_to_not_convert),
    }


def parse_config(qc: dict, source: str = "config.json") -> tuple[int, int, list[str]]:
    """Validate an AWQ ``quantization_config``; returns ``(bits, group_size, modules_to_not_convert)``."""
    where = f"{source}: quantization_config"
    if not isinstance(qc, dict) or qc.get("quant_method") != QUANT_METHOD:
        raise FormatError(f"{where}.quant_method is not {QUANT_METHOD!r}")
    version = str(qc.get("version", VERSION)).lower()
    if version != VERSION:
        raise FormatError(f"{where}.version is {qc.get('version')!r}; only {VERSION!r} is read")
    bits = qc.get("bits", qc.get("w_bit"))
    if bits != BITS:
        raise FormatError(f"{where}.bits must be 4; got {bits!r}")
    g = qc.get("group_size", qc.get("q_group_size"))
    if not isinstance(g, int) or g <= 0:
        raise FormatError(f"{where}.group_size must be a positive int; got {g!r}")
    return bits, g, list(qc.get("modules_to_not_convert") or [])


def transformers_skips(name: str, patterns) -> bool:
    """transformers 5.x rule: regex from the start up to a module boundary, or a name suffix."""
    boundary = r"(?:(?<=\.)|(?=\.|$))"
    return any(re.match(rf"(?:{p}){boundary}", name) or name.endswith(p) for p in patterns)


def vllm_skips(name: str, patterns) -> bool:
    """vLLM rule: an entry that is a substring of the layer prefix skips it."""
    return any(p in name for p in patterns)
