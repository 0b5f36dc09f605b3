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


def _to_int32_wrapping(x: torch.Tensor) -> torch.Tensor:
    """int64 holding values in [0, 2^32) -> int32 with the same bit pattern."""
    return torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)


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


def pack_w4(codes: torch.Tensor, scales: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    """Signed 4-bit codes ``(out, in)`` + scale grid ``(out, in/g)`` -> AWQ GEMM tensors."""
    _check_w4(codes, scales, group_size)
    if codes.numel() and (int(codes.min()) < -8 or int(codes.max()) > 7):
        raise PackError(f"4-bit codes must lie in [-8, 7]; got [{int(codes.min())}, {int(codes.max())}]")
    out_f, in_f = codes.shape
    u = (codes.to(torch.int64) + 8).t().reshape(in_f, out_f // 8, 8)  # (in, words, channel-in-word)
    u = u[:, :, list(AWQ_ORDER)]  # nibble k <- channel ORDER[k]
    shifts = torch.arange(0, 32, 4, dtype=torch.int64, device=codes.device)
    qweight = _to_int32_wrapping((u << shifts).sum(-1))
    qzeros = torch.full((in_f // group_size, out_f // 8), AWQ_ZERO_WORD, dtype=torch.int32, device=codes.device)
    return {
        "qweight": qweight.contiguous(),
        "qzeros": qzeros,
        "scales": scales.t().to(torch.float16).contiguous(),
    }


def unpack_nibbles(words: torch.Tensor) -> torch.Tensor:
    """int32 ``(r, c)`` AWQ words -> unsigned nibbles ``(r, 8c)`` in channel order."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=words.device)
    nib = (words.unsqueeze(-1) >> shifts) & 0xF  # (r, c, nibble k)
    nib = nib[:, :, list(AWQ_REVERSE_ORDER)]  # channel j <- nibble REVERSE[j]
    return nib.reshape(words.shape[0], -1)


def unpack_w4(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """AWQ GEMM tensors -> ``(codes int8 (out, in), scale grid (out, in/g) fp16, group_size)``.

    Codes are ``u - zero`` per group, so a non-8 zero point (a general AWQ checkpoint) is
    honoured; for GRACE checkpoints every zero is 8.
    """
    in_f = qweight.shape[0]
    n_groups = scales.shape[0]
    if in_f % n_groups:
        raise PackError(f"scales has {n_groups} groups, which does not divide in_features {in_f}")
    g = in_f // n_groups
    u = unpack_nibbles(qweight)  # (in, out)
    z = unpack_nibbles(qzeros).repeat_interleave(g, dim=0)  # (in, out)
    codes = (u - z).t().to(torch.int8).contiguous()
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
