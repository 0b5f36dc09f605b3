"""Backends on torch's own int4 kernels: ``int4-cpu``, ``int4-cuda`` (tinygemm), and W8 through them.

The scale / zero conversion (derived here once; ``tests/kernels`` pins it bit-exactly)
---------------------------------------------------------------------------------------
AWQ GEMM stores, per input ``i`` / output ``o`` / group ``g = i // group_size``, an unsigned code
``u in [0, 15]``, a zero ``z`` and an fp16 scale ``s`` with::

    W[o, i] = s[g, o] * (u[i, o] - z[g, o])          (GRACE: z = 8 everywhere, u = q + 8)

torch's int4 matmuls (``_weight_int4pack_mm_for_cpu`` and CUDA tinygemm ``_weight_int4pack_mm``)
take an unsigned code ``c in [0, 15]`` per (o, i) and ``qScaleAndZeros`` of shape
``(in // group, out, 2)`` and compute with::

    W[o, i] = (c[o, i] - 8) * S[g, o, 0] + S[g, o, 1]

(the "float zero-point domain": the zero is an additive float, the code is centred on 8). Since
``s (u - z) = s (u - 8) + s (8 - z)``, the exact match is::

    c = u,        S[..., 0] = s,        S[..., 1] = s * (8 - z)

so a GRACE checkpoint (z = 8) has ``S[..., 1] = 0`` exactly, and a general AWQ zero is honoured.
Both kernels want ``S`` in the activation dtype and only run fast on bf16 activations (CPU fp32
falls to a scalar path ~35x slower; tinygemm accepts bf16 only), so these backends compute in
bf16: ``s`` is rounded from fp16 to bf16 (relative error <= 2^-9, one rounding per group, the only
deviation from the exact dequantisation besides summation order) and fp16 / fp32 activations are
cast to bf16 and the result cast back. The tests bound the error with bf16 tolerances.

Code layouts: CPU ``_convert_weight_to_int4pack_for_cpu`` takes ``c`` as int32 ``(out, in)``; CUDA
``_convert_weight_to_int4pack`` takes uint8 ``(out, in / 2)`` with byte ``j`` holding
``c[:, 2j] << 4 | c[:, 2j + 1]`` (even input in the high nibble) and an ``innerKTiles`` in
{2, 4, 8} with ``in % (16 * innerKTiles) == 0``.

W8 on the same kernels (``int8-cpu``, ``int8-cuda``): a signed 8-bit code splits exactly as
``q = 16 * hi + lo`` with ``hi = q >> 4 in [-8, 7]`` and ``lo = q & 15 in [0, 15]``, so::

    s q = (16 s) ((hi + 8) - 8) + s (lo - 8) + 8 s

which is one int4 matmul over a doubled input dimension: codes ``[hi + 8 | lo]``, scale/zero
``[(16 s, 0) | (s, 8 s)]`` and activations ``[x | x]``. Powers of two keep ``16 s`` and ``8 s``
exact. It streams as many bytes as the int8 weight (plus twice the group metadata) and is the
torch-only W8 path; the native AVX-512 kernel is faster where it builds.

Memory: these kernels need their own repacked copy of the codes (cached in
``module._kernel_state``) next to the published ``qweight``, so a model attached to them holds
its 4-bit weights twice. The ``*-avx512`` backends read ``qweight`` in place.
"""

from __future__ import annotations

import torch

from grace.formats.awq_gemm import unpack_nibbles
from grace.kernels.registry import Backend, check_device, register
from grace.quant.modules import PackedLinear

_GROUPS = (32, 64, 128, 256)  # the group sizes both kernels are compiled for


def _w4_codes_and_sz(module: PackedLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """AWQ buffers -> (codes c int32 (out, in), qScaleAndZeros fp32 (in/g, out, 2))."""
    u = unpack_nibbles(module.qweight).t().contiguous()  # (out, in) unsigned codes, channel order
    z = unpack_nibbles(module.qzeros).float()  # (in/g, out)
    s = module.scales.float()  # (in/g, out)
    return u, torch.stack([s, s * (8.0 - z)], dim=-1)


def _w8_codes_and_sz(module: PackedLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """W8 buffers -> the doubled-input int4 problem (see the module docstring)."""
    q = module.qweight.to(torch.int32)  # (out, in) signed
    hi, lo = (q >> 4) + 8, q & 15
    s = module.scales.float()  # (in/g, out)
    sz_hi = torch.stack([16.0 * s, torch.zeros_like(s)], dim=-1)
    sz_lo = torch.stack([s, 8.0 * s], dim=-1)
    return torch.cat([hi, lo], dim=1).contiguous(), torch.cat([sz_hi, sz_lo], dim=0)


class _TorchInt4Base(Backend):
    compute_dtype = torch.bfloat16
    device_type = "cpu"

    def is_available(self, device: torch.device) -> bool:
        return device.type == self.device_type

    def supports(self, module: PackedLinear) -> bool:
        return module.bits in self.bits and module.group_size in _GROUPS and module.in_features % module.group_size == 0

    def _codes_and_sz(self, module: PackedLinear):
        return _w4_codes_and_sz(module) if module.bits == 4 else _w8_codes_and_sz(module)

    def _matmul(self, x2: torch.Tensor, state: dict, group: int) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, module: PackedLinear, x: torch.Tensor) -> torch.Tensor:
        check_device(module, x)
        st = module._kernel_state
        x2 = x.reshape(-1, module.in_features).to(torch.bfloat16).contiguous()
        if module.bits == 8:
            x2 = torch.cat([x2, x2], dim=1)  # [x | x] against codes [hi | lo]
        y = self._matmul(x2, st, module.group_size).to(x.dtype)
        if module.bias is not None:
            y = y + module.bias.to(x.dtype)
        return y.reshape(*x.shape[:-1], module.out_features)


class Int4CPUBackend(_TorchInt4Base):
    """``_weight_int4pack_mm_for_cpu`` (AVX-512 / AVX2 / NEON inside torch)."""

    name = "int4-cpu"
    bits = (4,)
    devices = ("cpu",)

    def supports(self, module: PackedLinear) -> bool:
        return super().supports(module) and module.out_features % 16 == 0  # the CPU packer's tile

    def prepare(self, module: PackedLinear) -> None:
        c, sz = self._codes_and_sz(module)
        module._kernel_state["w"] = torch.ops.aten._convert_weight_to_int4pack_for_cpu(c, 1)
        module._kernel_state["sz"] = sz.to(torch.bfloat16).contiguous()

    def _matmul(self, x2, st, group):
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x2, st["w"], group, st["sz"])


class Int8ViaInt4CPUBackend(Int4CPUBackend):
    """W8 as one doubled-input int4 matmul on ``_weight_int4pack_mm_for_cpu``."""

    name = "int8-cpu"
    bits = (8,)


def _inner_k_tiles(k: int) -> int | None:
    for t in (8, 4, 2):
        if k % (16 * t) == 0:
            return t
    return None


class Int4CUDABackend(_TorchInt4Base):
    """tinygemm ``_weight_int4pack_mm`` (tensor cores; needs compute capability >= 8.0)."""

    name = "int4-cuda"
    bits = (4,)
    devices = ("cuda",)
    device_type = "cuda"

    def is_available(self, device: torch.device) -> bool:
        if device.type != "cuda" or not torch.cuda.is_available():
            return False
        return torch.cuda.get_device_capability(device)[0] >= 8

    def unavailable_reason(self, device: torch.device) -> str:
        return "it needs a CUDA GPU with compute capability >= 8.0 (tinygemm)"

    def supports(self, module: PackedLinear) -> bool:
        k = module.in_features * (2 if module.bits == 8 else 1)
        return super().supports(module) and module.out_features % 8 == 0 and _inner_k_tiles(k) is not None

    def prepare(self, module: PackedLinear) -> None:
        c, sz = self._codes_and_sz(module)
        c8 = ((c[:, 0::2] << 4) | c[:, 1::2]).to(torch.uint8).contiguous()  # even input -> high nibble
        tiles = _inner_k_tiles(c.shape[1])
        module._kernel_state["w"] = torch.ops.aten._convert_weight_to_int4pack(c8, tiles)
        module._kernel_state["sz"] = sz.to(torch.bfloat16).contiguous()

    def _matmul(self, x2, st, group):
        return torch.ops.aten._weight_int4pack_mm(x2, st["w"], group, st["sz"])


class Int8ViaInt4CUDABackend(Int4CUDABackend):
    """W8 as one doubled-input int4 matmul on tinygemm."""

    name = "int8-cuda"
    bits = (8,)


int4_cpu = register(Int4CPUBackend())
int8_cpu = register(Int8ViaInt4CPUBackend())
int4_cuda = register(Int4CUDABackend())
int8_cuda = register(Int8ViaInt4CUDABackend())
