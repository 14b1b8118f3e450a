"""Additive (Bahdanau) attention pooling: the Attentive CNN's word and sentence layers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reranker.sparsemax import masked_softmax, sparsemax

__all__ = ["AdditiveAttention"]


class AdditiveAttention(nn.Module):
    """Bahdanau attention pooling with a learned context vector v.

    u_t = v^T tanh(W h_t + b); weights = softmax or sparsemax of u over real positions.

    Args:
        dim: size C of the inputs h_t.
        attention_dim: size of the tanh layer.
        normalizer: "softmax" (dense, for words) or "sparsemax" (sparse, for sentences).
    """

    def __init__(self, dim: int, attention_dim: int, normalizer: str = "softmax") -> None:
        super().__init__()
        if normalizer not in ("softmax", "sparsemax"):
            raise ValueError(f"normalizer must be 'softmax' or 'sparsemax', not {normalizer!r}")
        self.proj = nn.Linear(dim, attention_dim)
        self.context = nn.Linear(attention_dim, 1, bias=False)
        self.normalizer = normalizer

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Pool h [..., T, C] over T with mask [..., T] -> (pooled [..., C], weights [..., T])."""
        scores = self.context(torch.tanh(self.proj(h))).squeeze(-1)
        norm = sparsemax if self.normalizer == "sparsemax" else masked_softmax
        weights = norm(scores, mask, dim=-1)
        return (weights.unsqueeze(-1) * h).sum(dim=-2), weights
