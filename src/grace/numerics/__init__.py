"""Quantization math as small pure tensor functions. Every other part of grace calls these.

The convention, stated once
---------------------------
* A linear weight ``W`` has shape ``(out, in)``. Codes are **symmetric signed integers**
  ``q in [qmin, qmax] = [-2^(b-1), 2^(b-1)-1]`` (``[-8, 7]`` for 4 bits), no zero point.
* **Groups**: ``g`` consecutive input elements of one output row share a scale, so the scale
  grid has shape ``(out, in // g)`` and element ``(o, i)`` belongs to group ``o*(in//g) + i//g``
  (the flat ``log_scale`` order of the published sidecar). When ``g`` does not divide ``in``,
  the whole row is one group (``effective_group_size`` returns ``in``); callers record that.
* ``q = clamp(round(W / s), qmin, qmax)`` with round-half-to-even (``torch.round``), and the
  dequantized weight is ``W_hat = q * s``.
* **LSQ**: a trainable ``log_scale`` per group, ``s = exp(log_scale)``. The fake-quant forward
  uses ``round_ste`` (rounds forward, identity gradient), so gradients reach the weight (inside
  the clamp range) and the log-scale (through both ``W / s`` and ``q * s``).
* **fp16 scales**: the deployed formats store scales in fp16. ``fake_quantize(...,
  scale_dtype=torch.float16)`` rounds ``s`` to fp16 in the forward (straight-through in the
  backward), so what training sees is bit-for-bit what the packed model computes:
  ``q * fp16(s)`` evaluated in fp32 is exact (an fp16 value times an integer of at most 8 bits
  fits in fp32's 24-bit mantissa).
"""

from __future__ import annotations

import torch

__all__ = [
    "qrange",
    "effective_group_size",
    "group_view",
    "expand_scales",
    "round_ste",
    "quantize_codes",
    "dequantize",
    "fake_quantize",
    "scales_from_log",
    "init_scales_mse",
    "codes_from_grid_weight",
]


def qrange(bits: int) -> tuple[int, int]:
    """Signed code range ``(qmin, qmax)`` for ``bits``."""
    if bits < 2 or bits > 8:
        raise ValueError(f"bits must be in [2, 8]; got {bits}")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def effective_group_size(in_features: int, group_size: int) -> int:
    """``group_size`` if it divides ``in_features``, else ``in_features`` (one row-wide group)."""
    if group_size <= 0:
        raise ValueError(f"group_size must be positive; got {group_size}")
    return group_size if in_features % group_size == 0 else in_features


def group_view(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """View ``(out, in)`` as ``(out, in // g, g)``; ``g`` must divide ``in`` (use the effective g)."""
    out_f, in_f = w.shape
    if in_f % group_size:
        raise ValueError(f"group size {group_size} does not divide in_features {in_f}")
    return w.reshape(out_f, in_f // group_size, group_size)


def expand_scales(scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """Scale grid ``(out, n_groups)`` -> per-element ``(out, n_groups * g)``."""
    return scales.repeat_interleave(group_size, dim=1)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round forward, identity gradient backward (straight-through estimator).

    Written as ``x + (round(x) - x).detach()`` so it traces cleanly under ``torch.compile``.
    """
    return x + (torch.round(x) - x).detach()


def scales_from_log(log_scale: torch.Tensor, out_features: int, scale_dtype: torch.dtype | None = None):
    """Flat ``log_scale`` (out * n_groups,) -> scale grid ``(out, n_groups)`` in fp32.

    With ``scale_dtype=torch.float16`` the value is rounded to fp16 (straight-through), so the
    forward sees exactly the scale a packed checkpoint stores.
    """
    s = torch.exp(log_scale.float()).reshape(out_features, -1)
    if scale_dtype is not None and scale_dtype != torch.float32:
        s = s + (s.to(scale_dtype).float() - s).detach()
    return s


def quantize_codes(w: torch.Tensor, scales: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """Integer codes ``clamp(round(w / s), qmin, qmax)`` as int8, shape ``(out, in)``.

    ``scales`` is the ``(out, in // g)`` grid; the division is done in fp32.
    """
    qmin, qmax = qrange(bits)
    wg = group_view(w.float(), group_size)
    q = torch.clamp(torch.round(wg / scales.float().unsqueeze(-1)), qmin, qmax)
    return q.reshape(w.shape).to(torch.int8)


def dequantize(codes: torch.Tensor, scales: torch.Tensor, group_size: int, dtype=torch.float32) -> torch.Tensor:
    """``codes * s`` per group, computed in fp32 and returned in ``dtype``; shape ``(out, in)``."""
    q = group_view(codes.float(), group_size)
    return (q * scales.float().unsqueeze(-1)).reshape(codes.shape).to(dtype)


def _native_lsq(wg: torch.Tensor, s: torch.Tensor):
    """grace's fused C++ LSQ ops for contiguous fp32 CPU tensors when they are available, else None.

    They compute exactly this module's math in one pass each way (see ``kernels/csrc``); the torch
    path below stays the definition and the fallback (other devices, dtypes, ``GRACE_NATIVE=0``).
    """
    if not (wg.device.type == "cpu" and wg.dtype == torch.float32 and s.dtype == torch.float32
            and wg.is_contiguous() and s.is_contiguous()):
        return None
    from grace.kernels.native import lsq_ops  # lazy: kernels import this module

    return lsq_ops()


class _LSQFakeQuant(torch.autograd.Function):
    """``clamp(round(v), qmin, qmax) * s`` with ``v = w / s`` on grouped fp32 tensors, fused.

    Same values and the same straight-through / LSQ gradients as the composition
    ``clamp(round_ste(w / s), qmin, qmax) * s`` under autograd (see :func:`fake_quantize_reference`),
    but the forward keeps one weight-sized temporary and saves only ``w`` and ``s`` (the inputs,
    already alive) instead of four weight-sized intermediates; the backward recomputes ``v``.
    On fp32 CPU tensors both directions run as one fused native pass when grace's C++ ops load.
    Gradients, with ``r = round(v)`` and ``in = qmin <= r <= qmax``:
    ``dL/dw = g * in`` and ``dL/ds = sum_group g * (in ? r - v : clamp(r))``.
    """

    @staticmethod
    def forward(ctx, wg: torch.Tensor, s: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
        ctx.save_for_backward(wg, s)
        ctx.qrange = (qmin, qmax)
        ctx.native = native = _native_lsq(wg, s)
        if native is not None:
            return native.lsq_forward(wg, s, qmin, qmax)
        out = wg / s
        return out.round_().clamp_(qmin, qmax).mul_(s)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        wg, s = ctx.saved_tensors
        qmin, qmax = ctx.qrange
        if ctx.native is not None:
            grad_w, grad_s = ctx.native.lsq_backward(g, wg, s, qmin, qmax)
            return grad_w, grad_s, None, None
        v = wg / s
        r = torch.round(v)
        inside = (r >= qmin) & (r <= qmax)
        grad_w = grad_s = None
        if ctx.needs_input_grad[0]:
            grad_w = g * inside
        if ctx.needs_input_grad[1]:
            t = torch.where(inside, r - v, r.clamp_(qmin, qmax))
            grad_s = (t.mul_(g)).sum(-1, keepdim=True)
        return grad_w, grad_s, None, None


def fake_quantize(
    w: torch.Tensor,
    log_scale: torch.Tensor,
    bits: int,
    group_size: int,
    scale_dtype: torch.dtype | None = torch.float16,
) -> torch.Tensor:
    """LSQ fake quantization: ``clamp(round_ste(w / s), qmin, qmax) * s`` in the weight's dtype.

    Differentiable in ``w`` and ``log_scale``. ``group_size`` must be the effective group size.
    The output equals ``dequantize(quantize_codes(w, s), s)`` exactly for the same ``s``.
    Runs as one fused autograd function (:class:`_LSQFakeQuant`): the QAT step-time overhead is
    a few element-wise passes over the weights.
    """
    qmin, qmax = qrange(bits)
    out_f = w.shape[0]
    s = scales_from_log(log_scale, out_f, scale_dtype).unsqueeze(-1)
    wg = group_view(w.float(), group_size)
    return _LSQFakeQuant.apply(wg, s, qmin, qmax).reshape(w.shape).to(w.dtype)


def fake_quantize_reference(
    w: torch.Tensor,
    log_scale: torch.Tensor,
    bits: int,
    group_size: int,
    scale_dtype: torch.dtype | None = torch.float16,
) -> torch.Tensor:
    """:func:`fake_quantize` written as plain autograd ops (the oracle its fused form is tested against)."""
    qmin, qmax = qrange(bits)
    s = scales_from_log(log_scale, w.shape[0], scale_dtype).unsqueeze(-1)
    wg = group_view(w.float(), group_size)
    q = torch.clamp(round_ste(wg / s), qmin, qmax)
    return (q * s).reshape(w.shape).to(w.dtype)


@torch.no_grad()
def init_scales_mse(
    w: torch.Tensor,
    bits: int,
    group_size: int,
    n_candidates: int = 20,
    lo: float = 0.3,
    hi: float = 1.2,
    chunk_elems: int = 1 << 21,
) -> torch.Tensor:
    """Per-group MSE grid search for the scale; returns the ``(out, n_groups)`` fp32 grid.

    Candidates are ``linspace(lo, hi, n_candidates) * max|w_group| / qmax``; each group keeps the
    candidate with the least squared reconstruction error (first one on ties). Rows are
    processed in chunks of about ``chunk_elems`` weights, so peak extra memory is roughly
    ``chunk_elems * n_candidates * 4`` bytes (about 170 MB by default) whatever the layer size.
    An all-zero group gets scale ``1e-8``-floored (its codes are 0 whatever the scale).
    """
    qmin, qmax = qrange(bits)
    out_f, in_f = w.shape
    n_groups = in_f // group_size
    ratios = torch.linspace(lo, hi, n_candidates, device=w.device, dtype=torch.float32)
    best = torch.empty(out_f, n_groups, device=w.device, dtype=torch.float32)
    rows_per_chunk = max(1, chunk_elems // in_f)
    for r0 in range(0, out_f, rows_per_chunk):
        wg = group_view(w[r0 : r0 + rows_per_chunk].float(), group_size)  # (R, G, g)
        amax = wg.abs().amax(dim=-1).clamp_min(1e-8)  # (R, G)
        cand = amax.unsqueeze(-1) * ratios / qmax  # (R, G, C)
        x = wg.unsqueeze(-2)  # (R, G, 1, g)
        s = cand.unsqueeze(-1)  # (R, G, C, 1)
        err = ((torch.clamp(torch.round(x / s), qmin, qmax) * s - x) ** 2).sum(-1)  # (R, G, C)
        idx = err.argmin(dim=-1, keepdim=True)
        best[r0 : r0 + rows_per_chunk] = cand.gather(-1, idx).squeeze(-1)
    return best


def codes_from_grid_weight(
    w: torch.Tensor, log_scale: torch.Tensor, bits: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recover ``(codes, scale grid)`` from a baked (on-grid) weight and its flat ``log_scale``.

    This is how a QAT checkpoint is read: ``s = exp(log_scale)``, ``q = clamp(round(w / s))``.
    Because the weight lies on the grid, ``w / s`` is within a small relative error of an integer
    (bf16 storage of the weight included), so the codes are exact.
    """
    scales = scales_from_log(log_scale, w.shape[0]).detach()
    return quantize_codes(w, scales, bits, group_size), scales
