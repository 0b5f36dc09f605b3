"""The two pure-torch backends: ``reference`` (the oracle) and ``dequant`` (the public runtime's path).

``reference``: rebuild the dense weight from the packed buffers with the project's own
numerics (codes times fp16 scale, computed in fp32, exact), cast it to the activation dtype,
then one ``F.linear``. It is what :class:`PackedLinear` does with no backend, supports every
shape, bit width and device, and is what every fast kernel is tested against.

``dequant`` ("dequant-every-call"): the fallback of the public GRACE / AutoAWQ runtime, step by
step, kept only so the benchmark can show what users of that runtime get without CUDA kernels:
the activations are cast to fp16; every call unpacks all nibbles with a shift per nibble,
reorders the channels, masks, subtracts the (repeated) zeros, multiplies by the repeated fp16
scales (rounding the weight to fp16), runs an fp16 matmul with the ``(in, out)`` weight, adds
the bias and casts back. The code is ours; the sequence of tensor operations is theirs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from grace.formats.awq_gemm import AWQ_REVERSE_ORDER
from grace.kernels.registry import Backend, register
from grace.quant.modules import PackedLinear


class ReferenceBackend(Backend):
    name = "reference"

    def forward(self, module: PackedLinear, x: torch.Tensor) -> torch.Tensor:
        w = module.dequantized_weight(x.dtype)
        return F.linear(x, w, None if module.bias is None else module.bias.to(x.dtype))


class DequantEveryCallBackend(Backend):
    name = "dequant"

    def forward(self, module: PackedLinear, x: torch.Tensor) -> torch.Tensor:
        out_shape = (*x.shape[:-1], module.out_features)
        x2 = x.reshape(-1, x.shape[-1]).to(torch.float16)
        g = module.group_size
        if module.bits == 4:
            shifts = torch.arange(0, 32, 4, device=x.device)
            w = (module.qweight.unsqueeze(-1) >> shifts).to(torch.int8).reshape(module.in_features, -1)
            z = (module.qzeros.unsqueeze(-1) >> shifts).to(torch.int8).reshape(module.qzeros.shape[0], -1)
            # Undo the AWQ interleave: a gather over all columns, as the public code does.
            idx = torch.arange(w.shape[1], device=x.device).view(-1, 8)[:, list(AWQ_REVERSE_ORDER)].reshape(-1)
            w, z = w[:, idx] & 15, z[:, idx] & 15
            w = (w - z.repeat_interleave(g, dim=0)) * module.scales.repeat_interleave(g, dim=0)  # (in, out) fp16
        else:
            w = module.qweight.t() * module.scales.repeat_interleave(g, dim=0)  # (in, out) fp16
        y = torch.matmul(x2, w)
        if module.bias is not None:
            y = y + module.bias.to(y.dtype)
        return y.reshape(out_shape).to(x.dtype)


reference = register(ReferenceBackend())
dequant = register(DequantEveryCallBackend())
