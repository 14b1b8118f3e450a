"""Base types that every reranker shares, apart from any one model.

:class:`RerankOutput` is what every model returns, :class:`EncodedQuery` the query-side half
of a rerank, :class:`Reranker` the protocol the serving side programs against (Paraformer,
Attentive CNN and dense models implement it; an ensemble combines several).
:func:`state_fingerprint` versions weights, :data:`VECTOR_DTYPES` names the storage dtypes of
article vectors, :func:`eval_mode` runs a block without dropout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "VECTOR_DTYPES",
    "EncodedQuery",
    "RerankOutput",
    "Reranker",
    "eval_mode",
    "state_fingerprint",
]

#: The dtypes article vectors may be stored in (``vector_dtype`` of every model).
VECTOR_DTYPES = {"float16": np.float16, "float32": np.float32}


@dataclass
class RerankOutput:
    """What a reranker returns for one query and N candidates (in the order given).

    Attributes:
        scores: np.ndarray [N] float32, higher = more relevant (a logit; not a probability).
        weights: N arrays, ``weights[i]`` [L_i] float32 = the attention weight of each sentence
            of candidate i (sparsemax: most are exactly 0; the non-zero ones are the evidence).
        query_truncated: True when the query was longer than the encoder reads.
    """

    scores: np.ndarray
    weights: list[np.ndarray] = field(default_factory=list)
    query_truncated: bool = False


@dataclass
class EncodedQuery:
    """A query encoded for scoring: what a model's ``rerank_prepared`` takes, so a caller can
    encode the query before it knows the candidates.

    Attributes:
        vector: [d] float32 on the model's device.
        truncated: True when the query was longer than the encoder reads.
    """

    vector: Tensor
    truncated: bool = False


class Reranker(Protocol):
    """A model that scores candidates from their stored article-side vectors.

    ``model_version`` names the article vectors it reads (a record of another version is
    refused, :mod:`reranker.article_side`); ``checkpoint_config`` is the ``config.json`` it
    was loaded from (empty for a fresh model).
    """

    kind: ClassVar[str]
    checkpoint_config: dict[str, Any]

    @property
    def model_version(self) -> str: ...

    def architecture(self) -> dict[str, Any]:
        """The hyperparameters a checkpoint records to rebuild the model."""
        ...

    def encode_articles(self, articles: Sequence[Sequence[str]], *, batch_size: int = 64,
                        show_progress: bool = False) -> list[Any]:
        """The article-side vectors of A articles (each a list of sentences), in order."""
        ...

    def prepare_query(self, query: str) -> EncodedQuery:
        """Encode one query (the query-side half of a rerank)."""
        ...

    def rerank_prepared(self, query: EncodedQuery, article_vectors: Sequence[Any]
                        ) -> RerankOutput:
        """Score N candidates' stored vectors for an encoded query."""
        ...

    def rerank(self, query: str, article_vectors: Sequence[Any]) -> RerankOutput:
        """Encode the query and score the candidates' stored vectors."""
        ...


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Run a block with dropout off, then restore each module's previous mode."""
    previous = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, was_training in zip(modules, previous, strict=True):
            m.train(was_training)


def state_fingerprint(*parts: nn.Module | dict | str) -> str:
    """A 16-hex sha256 of module weights (names, dtypes, shapes, bytes) and/or strings."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            digest.update(part.encode("utf-8") + b"\0")
            continue
        state = part.state_dict() if isinstance(part, nn.Module) else part
        for name in sorted(state):
            tensor = state[name].detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\0".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]
