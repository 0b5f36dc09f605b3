"""Thin modules: the fake-quant (QAT) linear and the packed (deploy) linear.

* :class:`QATLinear` *shares* the original ``weight`` / ``bias`` Parameters of the ``nn.Linear``
  it wraps (no copy: optimizers, sharding engines and state-dict names keep working) and adds one
  fp32 ``log_scale`` per group. Its forward is :func:`grace.numerics.fake_quantize`.
* :class:`PackedLinear` only holds buffers in the published layout (``qweight``, ``qzeros``,
  ``scales``, ``bias``) and makes one call into a kernel backend chosen once (see
  :mod:`grace.kernels`), so its state dict stays compatible with the published checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grace import numerics
from grace.formats import awq_gemm


class QATLinear(nn.Linear):
    """LSQ fake-quant linear. Subclasses ``nn.Linear`` so model code that checks for it still works."""

    def __init__(self, linear: nn.Linear, bits: int, group_size: int, scale_dtype: torch.dtype = torch.float16,
                 init_scales: bool = True):
        nn.Module.__init__(self)  # skip nn.Linear's allocation: we adopt the existing parameters
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.bits = bits
        self.requested_group_size = group_size
        self.group_size = numerics.effective_group_size(self.in_features, group_size)
        self.scale_dtype = scale_dtype
        n = self.out_features * (self.in_features // self.group_size)
        dev = self.weight.device
        if init_scales and dev.type != "meta":
            s = numerics.init_scales_mse(self.weight.detach(), bits, self.group_size)
            ls = torch.log(s).reshape(-1)
        else:
            ls = torch.zeros(n, device=dev)
        self.log_scale = nn.Parameter(ls.to(torch.float32))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"bits={self.bits}, group_size={self.group_size}")

    def quantized_weight(self) -> torch.Tensor:
        return numerics.fake_quantize(self.weight, self.log_scale, self.bits, self.group_size, self.scale_dtype)

    def scales(self) -> torch.Tensor:
        """The ``(out, in/g)`` scale grid as the forward sees it (fp16-rounded if so configured)."""
        return numerics.scales_from_log(self.log_scale, self.out_features, self.scale_dtype).detach()

    def codes(self) -> torch.Tensor:
        return numerics.quantize_codes(self.weight.detach(), self.scales(), self.bits, self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.quantized_weight()
        return F.linear(x, w.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class PackedLinear(nn.Module):
    """A linear whose weight is stored packed (W4 AWQ GEMM or W8 row-major) and run by a kernel backend.

    Buffers (persistent, published names): ``qweight``, ``qzeros`` (W4 only), ``scales``, ``bias``.
    A backend may cache a converted layout in ``self._kernel_state`` at load; the on-disk
    buffers are never changed.
    """

    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int, bias: bool,
                 device=None, dtype: torch.dtype = torch.float16):
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"PackedLinear supports 4 or 8 bits; got {bits}")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size = bits, group_size
        n_groups = in_features // group_size
        if bits == 4:
            self.register_buffer("qweight", torch.empty(in_features, out_features // 8, dtype=torch.int32, device=device))
            self.register_buffer("qzeros", torch.empty(n_groups, out_features // 8, dtype=torch.int32, device=device))
        else:
            self.register_buffer("qweight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.empty(n_groups, out_features, dtype=torch.float16, device=device))
        if bias:
            self.register_buffer("bias", torch.empty(out_features, dtype=dtype, device=device))
        else:
            self.bias = None
        self.backend = None  # set by grace.kernels.attach(); None means the reference path
        self._kernel_state: dict = {}

    @classmethod
    def from_codes(cls, codes: torch.Tensor, scales: torch.Tensor, bits: int, group_size: int,
                   bias: torch.Tensor | None = None) -> PackedLinear:
        out_f, in_f = codes.shape
        m = cls(in_f, out_f, bits, group_size, bias is not None, device=codes.device)
        for k, v in awq_gemm.pack(codes, scales, bits, group_size).items():
            getattr(m, k).copy_(v)
        if bias is not None:
            m.bias.copy_(bias.to(torch.float16))
        return m

    def extra_repr(self) -> str:
        name = getattr(self.backend, "name", "reference")
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, backend={name}")

    def packed_tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in awq_gemm.packed_tensor_names(self.bits)}

    def unpack(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(codes (out, in) int8, scale grid (out, in/g) fp16, group_size)``."""
        return awq_gemm.unpack(self.packed_tensors(), self.bits)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        codes, s, g = self.unpack()
        return numerics.dequantize(codes, s, g, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend is not None:
            return self.backend.forward(self, x)
        # Reference path: dequantise the whole weight, then a dense matmul (the oracle in tests).
        w = self.dequantized_weight(x.dtype)
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))
