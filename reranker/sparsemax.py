"""Sparsemax (Martins & Astudillo, 2016) and a masked softmax, for attention over padded sets.

Both functions take a boolean ``mask`` (True = a real position) so that padding never receives
weight, and a row whose mask is all False returns all zeros instead of NaN: a candidate
article with no sentences, or a padding sentence with no words, is an ordinary case in a
padded batch and must not poison the rest of the batch.

Half-precision inputs are computed in float32 and returned in the input dtype: the sort,
cumulative sum and threshold of sparsemax lose support elements in fp16.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["masked_softmax", "sparsemax"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # float64 stays float64 (gradcheck); everything narrower is computed in float32.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _sparsemax_forward(z: Tensor, mask: Tensor) -> Tensor:
    """Sparsemax over the last dimension of ``z`` [..., n] restricted to ``mask`` [..., n]."""
    n = z.shape[-1]
    # Masked positions sort last (-inf), so the real values are the first n_real sorted ones.
    z_sorted, _ = torch.sort(z.masked_fill(~mask, float("-inf")), dim=-1, descending=True)
    n_real = mask.sum(dim=-1, keepdim=True)
    k = torch.arange(1, n + 1, device=z.device, dtype=z.dtype)
    valid = k <= n_real
    # Zero out the -inf tail before the cumulative sum so no inf/NaN enters the arithmetic.
    z_sorted = torch.where(valid, z_sorted, torch.zeros((), dtype=z.dtype, device=z.device))
    cumsum = z_sorted.cumsum(dim=-1)
    in_support = (1 + k * z_sorted > cumsum) & valid
    # The support is a prefix of the sorted order; its size is the number of True entries.
    k_max = in_support.sum(dim=-1, keepdim=True).clamp(min=1)
    tau = (cumsum.gather(-1, k_max - 1) - 1) / k_max.to(z.dtype)
    out = (z - tau).clamp(min=0)
    return out.masked_fill(~mask, 0.0)


class _Sparsemax(torch.autograd.Function):
    """Autograd function on the last dimension; the Jacobian is the closed form of the paper.

    d p_i / d z_j = [i in S] ([i == j] - [j in S] / |S|), with S the support (p > 0), so the
    backward pass is ``g_in = s * (g - sum(s * g) / |S|)`` with ``s`` the support indicator.
    Masked positions are never in S and therefore get a zero gradient.
    """

    @staticmethod
    def forward(ctx, z: Tensor, mask: Tensor) -> Tensor:
        out = _sparsemax_forward(z, mask)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None]:
        (out,) = ctx.saved_tensors
        support = (out > 0).to(grad_out.dtype)
        size = support.sum(dim=-1, keepdim=True).clamp(min=1)
        mean = (grad_out * support).sum(dim=-1, keepdim=True) / size
        return support * (grad_out - mean), None


def sparsemax(scores: Tensor, mask: Tensor | None = None, dim: int = -1) -> Tensor:
    """Euclidean projection of ``scores`` onto the probability simplex along ``dim``.

    Like softmax it returns non-negative weights summing to 1, but it assigns exactly zero to
    low-scoring positions, so attention selects a few sentences (the evidence the gateway shows).

    Args:
        scores: [..., n, ...] real scores, any float dtype (fp16/bf16 computed in float32).
        mask: optional bool tensor broadcastable to ``scores``; False marks padding, which gets
            weight exactly 0 and is never in the support.
        dim: the dimension to normalise over.

    Returns:
        Tensor with the shape and dtype of ``scores``. Each row sums to 1 over its real
        positions, or is all zeros when the row has no real position.
    """
    if scores.shape[dim] == 0:  # nothing to normalise over
        return scores.clone()
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    else:
        mask = mask.to(torch.bool).expand_as(scores)
    z = scores.to(_compute_dtype(scores.dtype)).movedim(dim, -1)
    out = _Sparsemax.apply(z, mask.movedim(dim, -1))
    return out.movedim(-1, dim).to(scores.dtype)


def masked_softmax(scores: Tensor, mask: Tensor | None = None, dim: int = -1) -> Tensor:
    """Softmax along ``dim`` where masked (False) positions get exactly 0.

    Args:
        scores: [..., n, ...] real scores (fp16/bf16 computed in float32).
        mask: optional bool tensor broadcastable to ``scores``; False marks padding.
        dim: the dimension to normalise over.

    Returns:
        Tensor with the shape and dtype of ``scores``; an all-masked row is all zeros (not NaN).
    """
    z = scores.to(_compute_dtype(scores.dtype))
    if mask is None:
        return torch.softmax(z, dim=dim).to(scores.dtype)
    mask = mask.to(torch.bool).expand_as(scores)
    # A finite fill (not -inf) keeps an all-masked row finite; multiplying by the mask then
    # turns its uniform distribution into zeros.
    z = z.masked_fill(~mask, torch.finfo(z.dtype).min)
    return (torch.softmax(z, dim=dim) * mask).to(scores.dtype)
