"""The AutoAWQ GEMM packed layout (4-bit) and grace's W8 row-major layout, as pure functions.

W4 (AWQ GEMM, FORMATS.md §1), for a linear with weight ``(out, in)`` and group size ``g``:

* ``qweight`` int32 ``(in, out // 8)``: word ``c`` of row ``i`` holds the *unsigned* codes
  ``u = q + 8`` of output channels ``8c .. 8c+7``; nibble ``k`` (bits ``4k..4k+3``) holds
  channel ``8c + AWQ_ORDER[k]`` with ``AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]``.
* ``qzeros`` int32 ``(in // g, out // 8)``: the zero point 8 in every nibble (GRACE's codes are
  symmetric), i.e. every word is ``0x88888888`` (``-2004318072`` as int32).
* ``scales`` fp16 ``(in // g, out)``: the transpose of the ``(out, in // g)`` scale grid.
* dequantisation: ``W[o, i] = scales[i // g, o] * (u[i, o] - zeros[i // g, o])``.

W8 (grace's own layout, documented in docs/formats.md): ``qweight`` int8 ``(out, in)`` holding
the signed codes row-major (the layout torch's int8 matmul kernels take directly), ``scales``
fp16 ``(in // g, out)`` as for W4, no ``qzeros`` (the zero point is implicitly 0).

The packer never recomputes codes from floats: it packs the codes it is given, exactly.
All functions are vectorised (no Python loop over rows or columns).
"""

from __future__ import annotations

import torch

from grace.errors import GraceError

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble k holds channel 8c + AWQ_ORDER[k]
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)  # channel j sits in nibble AWQ_REVERSE_ORDER[j]
AWQ_ZERO_WORD = -2004318072  # 0x88888888 as a signed int32
PACK_VERSION_W4 = "gemm"
PACK_VERSION_W8 = "int8-rowmajor"


class PackError(GraceError, ValueError):
    """Codes, scales or shapes that a packed layout cannot express."""


def _check_w4(codes: torch.Tensor, scales: torch.Tensor, group_size: int) -> None:
    if codes.dim() != 2:
        raise PackError(f"codes must be 2-D (out, in); got shape {tuple(codes.shape)}")
    out_f, in_f = codes.shape
    if out_f % 8:
        raise PackError(f"AWQ W4 needs out_features divisible by 8; got {out_f}")
    if in_f % group_size:
        raise PackError(f"group size {group_size} does not divide in_features {in_f}")
    if tuple(scales.shape) != (out_f, in_f // group_size):
        raise PackError(
            f"scale grid shape {tuple(scales.shape)} != (out, in/g) = {(out_f, in_f // group_size)}"
        )


# Byte j of a little-endian word holds nibbles 2j (low) and 2j+1 (high), i.e. the channels
# AWQ_ORDER[2j] and AWQ_ORDER[2j+1]: (0, 2), (4, 6), (1, 3), (5, 7).
_BYTE_CHANNELS = tuple((AWQ_ORDER[2 * j], AWQ_ORDER[2 * j + 1]) for j in range(4))


def pack_w4(codes: torch.Tensor, scales: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    """Signed 4-bit codes ``(out, in)`` + scale grid ``(out, in/g)`` -> AWQ GEMM tensors.

    Works in bytes on the ``(out/8, 8, in)`` view: each of the 4 bytes of a word is two unsigned
    nibbles ``lo | hi << 4`` of two channel slices (uint8 arithmetic, no int32 temporaries), the
    4 bytes are written side by side and viewed as one little-endian int32 word, and a single
    int32 transpose gives ``(in, out/8)``. No gathers, no loop over rows or columns.
    """
    _check_w4(codes, scales, group_size)
    if codes.numel() and (int(codes.min()) < -8 or int(codes.max()) > 7):
        raise PackError(f"4-bit codes must lie in [-8, 7]; got [{int(codes.min())}, {int(codes.max())}]")
    out_f, in_f = codes.shape
    u = (codes.to(torch.int8) + 8).view(torch.uint8).reshape(out_f // 8, 8, in_f)  # 0..15
    words = torch.empty(out_f // 8, in_f, 4, dtype=torch.uint8, device=codes.device)
    for j, (lo, hi) in enumerate(_BYTE_CHANNELS):
        torch.bitwise_or(u[:, lo, :], u[:, hi, :] << 4, out=words[:, :, j])
    qweight = words.view(torch.int32).reshape(out_f // 8, in_f).t().contiguous()
    qzeros = torch.full((in_f // group_size, out_f // 8), AWQ_ZERO_WORD, dtype=torch.int32, device=codes.device)
    return {
        "qweight": qweight,
        "qzeros": qzeros,
        "scales": scales.t().to(torch.float16).contiguous(),
    }


def unpack_nibbles(words: torch.Tensor) -> torch.Tensor:
    """int32 ``(r, c)`` AWQ words -> unsigned nibbles ``(r, 8c)`` in channel order."""
    r, c = words.shape
    out = torch.empty(r, c, 8, dtype=torch.int32, device=words.device)
    for k, ch in enumerate(AWQ_ORDER):
        out[:, :, ch] = (words >> (4 * k)) & 0xF
    return out.reshape(r, 8 * c)


def unpack_w4(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """AWQ GEMM tensors -> ``(codes int8 (out, in), scale grid (out, in/g) fp16, group_size)``.

    The inverse of :func:`pack_w4`, in bytes: one int32 transpose to ``(out/8, in)``, a view as
    4 bytes per word, and per byte the low and high nibbles into their two channel slices.
    Codes are ``u - zero`` per group, so a non-8 zero point (a general AWQ checkpoint) is
    honoured; for GRACE checkpoints every zero is 8.
    """
    in_f, words_per_row = qweight.shape
    n_groups = scales.shape[0]
    if in_f % n_groups:
        raise PackError(f"scales has {n_groups} groups, which does not divide in_features {in_f}")
    g = in_f // n_groups
    out_f = 8 * words_per_row
    b = qweight.t().contiguous().view(torch.uint8).reshape(out_f // 8, in_f, 4)
    u = torch.empty(out_f // 8, 8, in_f, dtype=torch.uint8, device=qweight.device)
    for j, (lo, hi) in enumerate(_BYTE_CHANNELS):
        byte = b[:, :, j]
        u[:, lo, :] = byte & 0xF  # slice assignment, not out=: torch.compile traces it
        u[:, hi, :] = byte >> 4
    # Subtract each group's zero point (8 for GRACE's symmetric codes). Branch-free on purpose:
    # no data-dependent Python control flow, so torch.compile(fullgraph=True) traces it.
    z = unpack_nibbles(qzeros).t().to(torch.int8)  # (out, in/g)
    codes = (u.view(torch.int8).reshape(out_f, n_groups, g) - z.unsqueeze(-1)).reshape(out_f, in_f)
    return codes, scales.t().contiguous(), g


def dequantize_w4(qweight, qzeros, scales, dtype=torch.float32) -> torch.Tensor:
    """Dense ``(out, in)`` weight from AWQ tensors: ``scales * (u - zeros)`` computed in fp32."""
    codes, s, g = unpack_w4(qweight, qzeros, scales)
    return (codes.float().reshape(codes.shape[0], -1, g) * s.float().unsqueeze(-1)).reshape(codes.shape).to(dtype)


def pack_w8(codes: torch.Tensor, scales: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    """Signed 8-bit codes ``(out, in)`` + scale grid -> grace W8 tensors (``qweight``, ``scales``)."""
    if codes.dim() != 2:
        raise PackError(f"codes must be 2-D (out, in); got shape {tuple(codes.shape)}")
    out_f, in_f = codes.shape
    if in_f % group_size:
        raise PackError(f"group size {group_size} does not divide in_features {in_f}")
    if tuple(scales.shape) != (out_f, in_f // group_size):
        raise PackError(f"scale grid shape {tuple(scales.shape)} != {(out_f, in_f // group_size)}")
    return {"qweight": codes.to(torch.int8).contiguous(), "scales": scales.t().to(torch.float16).contiguous()}


def unpack_w8(qweight: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    out_f, in_f = qweight.shape
    n_groups = scales.shape[0]
    if in_f % n_groups:
        raise PackError(f"scales has {n_groups} groups, which does not divide in_features {in_f}")
    return qweight, scales.t().contiguous(), in_f // n_groups


def pack(codes: torch.Tensor, scales: torch.Tensor, bits: int, group_size: int) -> dict[str, torch.Tensor]:
    """Dispatch on bits: 4 -> AWQ GEMM, 8 -> grace W8 row-major."""
    if bits == 4:
        return pack_w4(codes, scales, group_size)
    if bits == 8:
        return pack_w8(codes, scales, group_size)
    raise PackError(f"packed formats exist for 4 and 8 bits only; got {bits}")


def unpack(tensors: dict[str, torch.Tensor], bits: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Inverse of :func:`pack`: ``(codes, scale grid (out, in/g), group_size)``."""
    if bits == 4:
        return unpack_w4(tensors["qweight"], tensors["qzeros"], tensors["scales"])
    if bits == 8:
        return unpack_w8(tensors["qweight"], tensors["scales"])
    raise PackError(f"packed formats exist for 4 and 8 bits only; got {bits}")


def packed_tensor_names(bits: int) -> tuple[str, ...]:
    return ("qweight", "qzeros", "scales") if bits == 4 else ("qweight", "scales")
