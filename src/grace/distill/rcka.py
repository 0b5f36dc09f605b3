"""RCKA: relational centred kernel alignment of the visual-token geometry (GRACE.md §4).

Invariants:

* :func:`cka` compares *one image*: student features ``(n, d_a)`` and teacher features
  ``(n, d_b)`` of the same ``n`` visual tokens. Widths may differ because CKA compares the two
  ``n x n`` Gram matrices, never the features themselves.
* Rows are L2-normalised before the linear kernel ``K = F F^T``, so CKA is unchanged by scaling
  either side (isotropically, or even per token) and by any orthogonal map of the feature
  space; it is exactly 1 when the two relational structures agree.
* Maths in float32 (float64 for float64 inputs); the Gram of 576 tokens is tiny, so there is no
  chunking here.
* :func:`rcka_loss` averages ``1 - CKA`` over the images of a batch and skips an image with
  fewer than ``min_tokens`` (4) visual tokens or whose centred Gram (student's or teacher's) has
  squared Frobenius norm below ``degenerate_eps`` (1e-8): CKA is undefined there and its
  gradient would explode. One image per sample: its tokens are the positions marked in
  ``image_token_mask`` for that sample.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["centered_gram", "cka", "rcka", "rcka_loss", "RCKAResult"]


class RCKAResult(NamedTuple):
    """``loss`` (scalar, differentiable) and ``n_images`` (how many images were scored)."""

    loss: torch.Tensor
    n_images: int


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def centered_gram(features: torch.Tensor) -> torch.Tensor:
    """``H K H`` for ``K = F_n F_n^T`` (rows L2-normalised), ``H = I - 1/n``: ``kc = centered_gram(f)``."""
    f = F.normalize(features.to(_compute_dtype(features)), dim=-1, eps=1e-12)
    k = f @ f.transpose(-1, -2)
    # H K H without forming H: subtract row and column means, add back the grand mean.
    return k - k.mean(-1, keepdim=True) - k.mean(-2, keepdim=True) + k.mean((-1, -2), keepdim=True)


def _cka_from_centered(kc_a: torch.Tensor, kc_b: torch.Tensor) -> torch.Tensor:
    return (kc_a * kc_b).sum() / (kc_a.norm() * kc_b.norm())


def cka(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Linear CKA of one image's features ``(n, d_a)`` and ``(n, d_b)``: ``loss = 1 - cka(fs, ft)``."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"cka needs (n, d_a) and (n, d_b) with the same n; got {tuple(a.shape)} and {tuple(b.shape)}")
    return _cka_from_centered(centered_gram(a), centered_gram(b))


def rcka(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, image_token_mask: torch.Tensor, *,
         min_tokens: int = 4, degenerate_eps: float = 1e-8) -> RCKAResult:
    """RCKA with the image count: ``res = rcka(hs, ht, input_ids == image_token_id)``.

    ``student_hidden`` ``(B, S, d_s)``, ``teacher_hidden`` ``(B, S, d_t)``, mask ``(B, S)``. With
    no usable image the loss is an exact 0 still connected to the graph (every data-parallel rank
    runs the same backward) and ``n_images`` is 0.
    """
    if student_hidden.shape[:2] != teacher_hidden.shape[:2] or image_token_mask.shape != student_hidden.shape[:2]:
        raise ValueError(
            f"RCKA needs student (B, S, d_s), teacher (B, S, d_t) and mask (B, S) over the same tokens; got "
            f"{tuple(student_hidden.shape)}, {tuple(teacher_hidden.shape)}, {tuple(image_token_mask.shape)}"
        )
    cd = _compute_dtype(student_hidden)
    total = student_hidden.sum() * 0.0  # keeps the graph connected when every image is skipped
    total = total.to(cd)
    n_images = 0
    for i in range(student_hidden.shape[0]):
        pos = image_token_mask[i].nonzero().squeeze(-1)
        if pos.numel() < min_tokens:
            continue
        kc_s = centered_gram(student_hidden[i].index_select(0, pos))
        kc_t = centered_gram(teacher_hidden[i].index_select(0, pos))
        ns, nt = (kc_s * kc_s).sum(), (kc_t * kc_t).sum()
        if float(ns.detach()) < degenerate_eps or float(nt.detach()) < degenerate_eps:
            continue
        total = total + (1.0 - (kc_s * kc_t).sum() / torch.sqrt(ns * nt))
        n_images += 1
    return RCKAResult(total / max(n_images, 1), n_images)


def rcka_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, image_token_mask: torch.Tensor, *,
              min_tokens: int = 4, degenerate_eps: float = 1e-8) -> torch.Tensor:
    """Mean ``1 - CKA`` over the batch's images: ``loss = rcka_loss(hs, ht, input_ids == image_id)``."""
    return rcka(student_hidden, teacher_hidden, image_token_mask, min_tokens=min_tokens,
                degenerate_eps=degenerate_eps).loss
