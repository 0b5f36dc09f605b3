"""GDKD: confidence-gated decoupled knowledge distillation on output logits (GRACE.md §3).

Invariants (what every caller can rely on):

* Inputs are *unshifted* causal-LM tensors: ``student_logits`` / ``teacher_logits`` of shape
  ``(batch, seq, vocab)`` and ``labels`` of shape ``(batch, seq)``. The next-token shift is done
  here: the logits at position ``t`` are scored against ``labels[:, t + 1]``. Positions whose
  shifted label equals ``ignore_index`` take no part (prompt, image tokens, padding).
* All probability maths runs in float32 (float64 when the inputs are float64, which is what
  ``gradcheck`` uses), whatever the logits' storage dtype, because bf16 softmax over a 32k-150k
  vocabulary loses the small non-target probabilities NCKD is about.
* Memory stays bounded: supervised positions are processed ``chunk_size`` rows at a time, and
  under autograd (when there is more than one chunk) each chunk is wrapped in activation
  checkpointing, so at most one chunk's ``(chunk, vocab)`` float32 intermediates are alive in
  the forward *and* in the backward.
  Without checkpointing the saved-for-backward tensors of every chunk would add up to several
  full fp32 copies of the logits, which is the very thing chunking is meant to avoid.

Per supervised position ``i`` with target ``y`` and temperature ``T``:

    TCKD_i = KL((p_t[y], 1 - p_t[y]) || (p_s[y], 1 - p_s[y]))             p = softmax(z / T)
    NCKD_i = KL(q_t || q_s)             q = softmax over the non-target classes of z / T
    l_i    = T^2 * (alpha * TCKD_i + beta_dkd * NCKD_i)
    g_i    = exp(-H(softmax(z_t)) / log V)                  (teacher, *untempered*)
    L      = sum_i g_i * l_i / sum_i g_i

The non-target quantities are computed from log-sum-exps with the target masked to ``-inf``
(``log(1 - p[y]) = lse_nontarget - lse_all``), so nothing is formed as ``1 - p`` (cancellation)
and no ``0 * log 0`` term ever produces a NaN gradient.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["confidence_gate", "dkd_per_position", "gdkd", "gdkd_loss", "GDKDResult", "default_chunk_size"]

# Rows per chunk are chosen so that one (chunk, vocab) fp32 tensor stays near 128 MiB.
_CHUNK_ELEMENTS = 2**25


class GDKDResult(NamedTuple):
    """``loss`` (scalar, differentiable), ``gate_mean`` (detached) and ``n_positions`` (int)."""

    loss: torch.Tensor
    gate_mean: torch.Tensor
    n_positions: int


def default_chunk_size(vocab_size: int) -> int:
    """Supervised positions per chunk for a vocabulary of ``vocab_size`` (about 1k at 32k vocab)."""
    return max(1, _CHUNK_ELEMENTS // max(1, vocab_size))


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def confidence_gate(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-row gate ``exp(-H(softmax(z)) / log V)`` in ``(1/e, 1]``; ``g = confidence_gate(z_t)``.

    ``teacher_logits`` is ``(..., V)``; the result has shape ``(...)``. A confident (low
    entropy) teacher gives a gate near 1, a uniform one gives ``1/e``. With ``V == 1`` the entropy
    is 0 and the gate is 1.
    """
    z = teacher_logits.to(_compute_dtype(teacher_logits))
    v = z.shape[-1]
    logp = torch.log_softmax(z, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    if v <= 1:
        return torch.ones_like(entropy)
    return torch.exp(-entropy / math.log(v))


def dkd_per_position(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, *,
                     temperature: float = 2.0, alpha: float = 1.0, beta_dkd: float = 4.0) -> torch.Tensor:
    """Decoupled KD loss ``l_i`` per row of ``(N, V)`` logits with targets ``(N,)``; returns ``(N,)``.

    ``l = dkd_per_position(zs, zt, y)``. Includes the ``T^2`` factor. ``V`` must be >= 2 (the
    non-target distribution needs at least one class).
    """
    cd = _compute_dtype(student_logits)
    zs = student_logits.to(cd) / temperature
    zt = teacher_logits.to(cd) / temperature
    y = target.long().unsqueeze(-1)
    is_target = torch.zeros_like(zs, dtype=torch.bool).scatter_(-1, y, True)

    lse_s, lse_t = torch.logsumexp(zs, -1), torch.logsumexp(zt, -1)
    lse_s_nt = torch.logsumexp(zs.masked_fill(is_target, float("-inf")), -1)
    lse_t_nt = torch.logsumexp(zt.masked_fill(is_target, float("-inf")), -1)

    # TCKD: KL between the binary (target, rest) distributions.
    log_ps_y, log_pt_y = zs.gather(-1, y).squeeze(-1) - lse_s, zt.gather(-1, y).squeeze(-1) - lse_t
    log_ps_rest, log_pt_rest = lse_s_nt - lse_s, lse_t_nt - lse_t
    tckd = log_pt_y.exp() * (log_pt_y - log_ps_y) + log_pt_rest.exp() * (log_pt_rest - log_ps_rest)

    # NCKD: KL between the distributions renormalised over the non-target classes. The log-probs
    # are finite everywhere (z - lse_nt), and the target column is zeroed *before* the product,
    # so neither the value nor the gradient ever sees inf - inf.
    log_qs = zs - lse_s_nt.unsqueeze(-1)
    log_qt = zt - lse_t_nt.unsqueeze(-1)
    terms = torch.where(is_target, torch.zeros_like(log_qt), log_qt.exp() * (log_qt - log_qs))
    nckd = terms.sum(-1)
    return (temperature**2) * (alpha * tckd + beta_dkd * nckd)


def _chunk_terms(s_flat, t_flat, rows, target, temperature, alpha, beta_dkd):
    """(sum_i g_i l_i, sum_i g_i) over one chunk of flat rows (the checkpointed unit)."""
    s = s_flat.index_select(0, rows)
    t = t_flat.index_select(0, rows)
    gate = confidence_gate(t)
    per = dkd_per_position(s, t, target, temperature=temperature, alpha=alpha, beta_dkd=beta_dkd)
    return (gate * per).sum(), gate.sum()


def gdkd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
         temperature: float = 2.0, alpha: float = 1.0, beta_dkd: float = 4.0, ignore_index: int = -100,
         chunk_size: int | None = None, checkpoint_chunks: bool = True) -> GDKDResult:
    """GDKD with statistics: ``res = gdkd(zs, zt, labels); res.loss.backward()``.

    With no supervised position the loss is an exact 0 that is still connected to the graph
    (so every data-parallel rank runs the same backward), ``gate_mean`` is NaN and
    ``n_positions`` is 0.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ; "
            "teacher and student must share the vocabulary and see the same tokens"
        )
    if student_logits.dim() != 3 or labels.shape != student_logits.shape[:2]:
        raise ValueError(f"expected logits (B, S, V) and labels (B, S); got {tuple(student_logits.shape)} "
                         f"and {tuple(labels.shape)}")
    b, s, v = student_logits.shape
    # Row (b, t) of the flattened logits predicts labels[b, t + 1].
    shifted = torch.full_like(labels, ignore_index)
    shifted[:, :-1] = labels[:, 1:]
    flat_target = shifted.reshape(-1)
    rows = (flat_target != ignore_index).nonzero().squeeze(-1)
    n = int(rows.numel())
    cd = _compute_dtype(student_logits)
    if n == 0:
        zero = student_logits.sum() * 0.0
        return GDKDResult(zero.to(cd), torch.tensor(float("nan"), device=student_logits.device), 0)

    s_flat = student_logits.reshape(b * s, v)
    t_flat = teacher_logits.reshape(b * s, v)
    chunk = chunk_size or default_chunk_size(v)
    # Checkpointing only pays when there are several chunks: with one chunk its intermediates are
    # alive once either way, and recomputing them in the backward would be pure overhead.
    use_ckpt = checkpoint_chunks and n > chunk and torch.is_grad_enabled() and (
        student_logits.requires_grad or teacher_logits.requires_grad)
    num = student_logits.new_zeros((), dtype=cd)
    den = student_logits.new_zeros((), dtype=cd)
    for start in range(0, n, chunk):
        r = rows[start : start + chunk]
        y = flat_target.index_select(0, r)
        args = (s_flat, t_flat, r, y, temperature, alpha, beta_dkd)
        if use_ckpt:
            cn, cg = checkpoint(_chunk_terms, *args, use_reentrant=False)
        else:
            cn, cg = _chunk_terms(*args)
        num = num + cn
        den = den + cg
    return GDKDResult(num / den, (den / n).detach(), n)


def gdkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
              temperature: float = 2.0, alpha: float = 1.0, beta_dkd: float = 4.0, ignore_index: int = -100,
              chunk_size: int | None = None) -> torch.Tensor:
    """Scalar GDKD loss: ``loss = gdkd_loss(student_logits, teacher_logits, labels)`` (see module doc)."""
    return gdkd(student_logits, teacher_logits, labels, temperature=temperature, alpha=alpha, beta_dkd=beta_dkd,
                ignore_index=ignore_index, chunk_size=chunk_size).loss
