"""compressed-tensors ``pack-quantized``: the weight-only INT4/INT8 layout transformers and vLLM load.

For a linear with weight ``(out, in)``, ``bits`` in {4, 8} and group size ``g`` (FORMATS.md §3,
notes/standard-formats.md §1), the checkpoint holds, instead of ``NAME.weight``:

* ``NAME.weight_packed`` int32 ``(out, in * bits / 32)``: the codes made unsigned
  (``u = q + 2^(bits-1)``: +8 for 4 bits, +128 for 8 bits) and packed along the *input*
  dimension, least significant first: word ``k`` of a row holds columns
  ``k*p .. k*p + p-1`` (``p = 32 / bits``), column ``k*p + j`` in bits ``[j*bits, (j+1)*bits)``.
  Words are stored as signed int32 (the two's complement of the uint32 bit pattern).
* ``NAME.weight_scale`` ``(out, in / g)`` in the model dtype (the loader casts it to the model
  dtype anyway, so storing it in that dtype is what makes the load exact).
* ``NAME.weight_shape`` int64 ``[out, in]`` (required: without it the loader silently builds a
  garbage weight).
* no zero point (symmetric), no ``NAME.weight``.

Dequantisation (what the loaders compute): ``W[o, i] = q[o, i] * scale[o, i // g]`` in the scale
dtype. The config block is one group targeting ``Linear``; everything not quantized must be in
``ignore``, whose entries are matched against the *in-memory* module names of the loading
framework: a plain string must equal the name (or a class name), ``re:PATTERN`` uses
``re.match`` (anchored at the start only). ``quantization_status`` must be ``compressed``:
anything else makes transformers expect dense weights and load garbage without an error.

The packer never derives codes from floats: it packs the integer codes it is given and
:func:`unpack` returns them unchanged (the round trip is pinned by golden words and a property
test). Pure functions, vectorised (the only Python loops run over the <= 8 slots of a word).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from grace.errors import GraceError
from grace.formats.metadata import FormatError

QUANT_METHOD = "compressed-tensors"
FORMAT = "pack-quantized"
STATUS = "compressed"
SUPPORTED_BITS = (4, 8)
TENSOR_NAMES = ("weight_packed", "weight_scale", "weight_shape")


class CompressedTensorsError(GraceError, ValueError):
    """Codes, scales or shapes that the ``pack-quantized`` layout cannot express."""


def _check_bits(bits: int, where: str = "") -> int:
    if bits not in SUPPORTED_BITS:
        raise CompressedTensorsError(f"{where}pack-quantized export supports 4 or 8 bits; got {bits}")
    return 32 // bits


def check_expressible(name: str, out_features: int, in_features: int, group_size: int, bits: int) -> None:
    """Raise :class:`CompressedTensorsError` naming ``name`` if the layout cannot hold this module."""
    per = _check_bits(bits, f"{name}: ")
    if group_size <= 0 or in_features % group_size:
        raise CompressedTensorsError(
            f"{name}: group size {group_size} does not divide in_features {in_features}"
        )
    if in_features % per:
        raise CompressedTensorsError(
            f"{name}: in_features {in_features} is not a multiple of {per} ({bits}-bit codes per int32 word)"
        )


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed codes ``(out, in)`` -> int32 words ``(out, in * bits / 32)``, LSB first along ``in``.

        words = pack_codes(torch.tensor([[-8, -7, -1, 0, 1, 2, 6, 7]]), 4)  # [[0xfea98710 as int32]]
    """
    per = _check_bits(bits)
    if codes.dim() != 2:
        raise CompressedTensorsError(f"codes must be 2-D (out, in); got shape {tuple(codes.shape)}")
    out_f, in_f = codes.shape
    if in_f % per:
        raise CompressedTensorsError(f"in_features {in_f} is not a multiple of {per} for {bits}-bit packing")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if codes.numel() and (int(codes.min()) < lo or int(codes.max()) > hi):
        raise CompressedTensorsError(
            f"{bits}-bit codes must lie in [{lo}, {hi}]; got [{int(codes.min())}, {int(codes.max())}]"
        )
    u = (codes.to(torch.int32) + (1 << (bits - 1))).reshape(out_f, in_f // per, per)
    words = torch.zeros(out_f, in_f // per, dtype=torch.int32, device=codes.device)
    for j in range(per):  # the slots of one word, not a loop over data
        # int32 shifts wrap the top slot into the sign bit: exactly the two's-complement pattern
        words |= u[:, :, j] << (bits * j)
    return words


def unpack_codes(words: torch.Tensor, bits: int, in_features: int | None = None) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: int32 ``(out, n_words)`` -> signed int8 codes ``(out, in)``."""
    per = _check_bits(bits)
    if words.dim() != 2 or words.dtype != torch.int32:
        raise FormatError(f"weight_packed must be a 2-D int32 tensor; got {words.dtype} {tuple(words.shape)}")
    out_f, n_words = words.shape
    mask = (1 << bits) - 1
    u = torch.empty(out_f, n_words, per, dtype=torch.int16, device=words.device)
    for j in range(per):
        u[:, :, j] = ((words >> (bits * j)) & mask).to(torch.int16)  # & mask undoes sign extension
    codes = (u - (1 << (bits - 1))).to(torch.int8).reshape(out_f, n_words * per)
    if in_features is not None:
        if in_features > n_words * per or n_words * per - in_features >= per:
            raise FormatError(f"weight_packed has {n_words} words per row, which cannot hold {in_features} columns")
        codes = codes[:, :in_features]
    return codes


def pack(codes: torch.Tensor, scales: torch.Tensor, bits: int, dtype: torch.dtype = torch.float16,
         name: str = "?") -> dict[str, torch.Tensor]:
    """Codes ``(out, in)`` + scale grid ``(out, in/g)`` -> ``{weight_packed, weight_scale, weight_shape}``.

        tensors = pack(codes, scales, 4, torch.float16, "model.layers.0.self_attn.q_proj")

    ``scales`` is cast to ``dtype`` (the model dtype); the codes are packed exactly as given.
    """
    if codes.dim() != 2 or scales.dim() != 2:
        raise CompressedTensorsError(f"{name}: codes and scales must be 2-D; got {tuple(codes.shape)}, "
                                     f"{tuple(scales.shape)}")
    out_f, in_f = codes.shape
    if scales.shape[0] != out_f or scales.shape[1] == 0 or in_f % scales.shape[1]:
        raise CompressedTensorsError(f"{name}: scale grid {tuple(scales.shape)} does not fit codes {(out_f, in_f)}")
    check_expressible(name, out_f, in_f, in_f // scales.shape[1], bits)
    try:
        words = pack_codes(codes, bits)
    except CompressedTensorsError as e:
        raise CompressedTensorsError(f"{name}: {e}") from None
    return {
        "weight_packed": words,
        "weight_scale": scales.to(dtype).contiguous(),
        "weight_shape": torch.tensor([out_f, in_f], dtype=torch.int64),
    }


def unpack(weight_packed: torch.Tensor, weight_scale: torch.Tensor, weight_shape: torch.Tensor | tuple[int, int],
           bits: int, name: str = "?") -> tuple[torch.Tensor, torch.Tensor, int]:
    """``pack-quantized`` tensors -> ``(codes int8 (out, in), scale grid (out, in/g), group_size)``.

        codes, scales, g = unpack(sd[n + ".weight_packed"], sd[n + ".weight_scale"], sd[n + ".weight_shape"], 4)

    The scale grid keeps its stored dtype; dequantise with ``grace.numerics.dequantize(codes,
    scales, g)``. Every shape is checked against ``weight_shape``; a mismatch raises
    :class:`~grace.formats.metadata.FormatError` naming ``name``.
    """
    per = _check_bits(bits, f"{name}: ")
    shape = [int(v) for v in (weight_shape.tolist() if isinstance(weight_shape, torch.Tensor) else weight_shape)]
    if len(shape) != 2 or min(shape) <= 0:
        raise FormatError(f"{name}.weight_shape must be [out, in]; got {shape}")
    out_f, in_f = shape
    if tuple(weight_packed.shape) != (out_f, -(-in_f // per)):
        raise FormatError(f"{name}.weight_packed has shape {tuple(weight_packed.shape)}; "
                          f"expected {(out_f, -(-in_f // per))} for weight_shape {shape} at {bits} bits")
    if weight_scale.dim() != 2 or weight_scale.shape[0] != out_f or weight_scale.shape[1] == 0 \
            or in_f % weight_scale.shape[1]:
        raise FormatError(f"{name}.weight_scale has shape {tuple(weight_scale.shape)}, which is not "
                          f"(out, in/g) for weight_shape {shape}")
    try:
        codes = unpack_codes(weight_packed, bits, in_f)
    except FormatError as e:
        raise FormatError(f"{name}: {e}") from None
    return codes, weight_scale, in_f // weight_scale.shape[1]


# ---------------------------------------------------------------------------------------------
# config.json ``quantization_config``
# ---------------------------------------------------------------------------------------------


def config_block(bits: int, group_size: int, ignore: list[str]) -> dict:
    """The ``quantization_config`` for symmetric weight-only INT``bits`` groups of ``group_size``.

        cfg["quantization_config"] = config_block(4, 128, ["re:.*vision_tower.*", "re:.*lm_head"])
    """
    _check_bits(bits)
    weights = {
        "num_bits": bits, "type": "int", "symmetric": True, "strategy": "group", "group_size": group_size,
        "dynamic": False, "actorder": None, "block_structure": None, "observer": "minmax", "observer_kwargs": {},
    }
    return {
        "quant_method": QUANT_METHOD,
        "format": FORMAT,
        "quantization_status": STATUS,
        "config_groups": {
            "group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None,
                        "output_activations": None, "format": FORMAT},
        },
        "ignore": list(ignore),
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
    }


@dataclass(frozen=True)
class Scheme:
    """What :func:`parse_config` reads back: one symmetric INT group scheme."""

    bits: int
    group_size: int
    targets: tuple[str, ...]
    ignore: tuple[str, ...]


def parse_config(qc: dict, source: str = "config.json") -> Scheme:
    """Validate a ``quantization_config`` that grace can read back exactly; returns its :class:`Scheme`.

        scheme = parse_config(json.load(open(d / "config.json"))["quantization_config"], str(d))
    """
    where = f"{source}: quantization_config"
    if not isinstance(qc, dict):
        raise FormatError(f"{where} must be an object")
    if qc.get("quant_method") != QUANT_METHOD:
        raise FormatError(f"{where}.quant_method is {qc.get('quant_method')!r}, not {QUANT_METHOD!r}")
    if qc.get("quantization_status") != STATUS:
        raise FormatError(f"{where}.quantization_status is {qc.get('quantization_status')!r}; only "
                          f"{STATUS!r} checkpoints hold packed weights")
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or len(groups) != 1:
        raise FormatError(f"{where}.config_groups must hold exactly one group; got "
                          f"{len(groups) if isinstance(groups, dict) else groups!r}")
    gname, group = next(iter(groups.items()))
    if not isinstance(group, dict):
        raise FormatError(f"{where}.config_groups.{gname} must be an object (preset names are not read back)")
    fmt = group.get("format") or qc.get("format")
    if fmt != FORMAT:
        raise FormatError(f"{where}: format {fmt!r} is not {FORMAT!r}")
    if group.get("input_activations"):
        raise FormatError(f"{where}.config_groups.{gname}.input_activations is set (weight-only schemes only)")
    w = group.get("weights") or {}
    checks = {"type": "int", "symmetric": True, "strategy": "group"}
    for k, v in checks.items():
        if w.get(k) != v:
            raise FormatError(f"{where}.config_groups.{gname}.weights.{k} is {w.get(k)!r}; expected {v!r}")
    bits, g = w.get("num_bits"), w.get("group_size")
    if bits not in SUPPORTED_BITS:
        raise FormatError(f"{where}.config_groups.{gname}.weights.num_bits must be 4 or 8; got {bits!r}")
    if not isinstance(g, int) or g <= 0:
        raise FormatError(f"{where}.config_groups.{gname}.weights.group_size must be a positive int; got {g!r}")
    return Scheme(bits, g, tuple(group.get("targets") or ()), tuple(qc.get("ignore") or ()))


def matches(name: str, patterns, class_names: tuple[str, ...] = ()) -> bool:
    """compressed-tensors' target/ignore rule: exact name, class name, or ``re:`` + ``re.match``."""
    for p in patterns:
        if p.startswith("re:"):
            if re.match(p[3:], name):
                return True
        elif p == name or p in class_names:
            return True
    return False


def quantized_by_scheme(name: str, scheme: Scheme, class_names: tuple[str, ...] = ("Linear",)) -> bool:
    """True if a module ``name`` (of class ``class_names``) is targeted and not ignored."""
    return matches(name, scheme.targets, class_names) and not matches(name, scheme.ignore, class_names)
