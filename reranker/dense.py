"""Dense: the fine-tuned bi-encoder alone, cosine of the query and the whole article.

The article side is one vector [d] per article: the encoder's embedding of its caption and
sentences (:func:`passage`), computed once and stored with the index like every model's
vectors. A rerank is one query encoding and a matrix-vector product. In an
:class:`reranker.ensemble.Ensemble` beside a Paraformer on the same encoder, the query is
encoded once for both.

``model_version`` hashes the encoder fingerprint with this kind: a Paraformer on the same
encoder stores per-sentence vectors under the bare fingerprint, the dense article vectors
must not collide with them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import torch

from reranker.encoder import encoder_fingerprint, encoder_source, load_encoder, truncate_query
from reranker.encoder import encoder_name as loaded_encoder_name
from reranker.errors import LexrerankError
from reranker.types import VECTOR_DTYPES, EncodedQuery, RerankOutput

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["DenseReranker", "passage"]


def passage(caption: str | None, sentences: Sequence[str]) -> str:
    """What the bi-encoder reads of an article: its caption, then its sentences."""
    caption = (caption or "").strip()
    body = " ".join(s.strip() for s in sentences)
    return f"{caption} {body}".strip()


class DenseReranker:
    """A SentenceTransformer scoring each candidate by cosine with its stored article vector.

    Args:
        encoder: a SentenceTransformer, or a name/path for :func:`load_encoder`.
        encoder_name: the name or path to record (needed when ``encoder`` was not loaded by
            ``load_encoder``).
        vector_dtype: dtype of the stored article vectors ("float16" or "float32").
        device: defaults to the encoder's device.
    """

    kind: ClassVar[str] = "dense"

    def __init__(self, encoder: SentenceTransformer | str | None = None, *,
                 encoder_name: str | None = None, vector_dtype: str = "float16",
                 device: str | torch.device | None = None) -> None:
        if encoder is None or isinstance(encoder, str):
            encoder = load_encoder(encoder, device=None if device is None else str(device))
        source = encoder_source(encoder)
        name = encoder_name or loaded_encoder_name(encoder) or source
        if name is None:
            raise LexrerankError("DenseReranker needs to know which directory the encoder "
                                 "came from: load it with load_encoder or pass encoder_name=")
        if vector_dtype not in VECTOR_DTYPES:
            raise LexrerankError(f"vector_dtype {vector_dtype!r} is not one of "
                                 f"{sorted(VECTOR_DTYPES)}")
        self.encoder = encoder
        self.encoder_name = name
        self.encoder_fingerprint = encoder_fingerprint(source or name)
        self.vector_dtype = vector_dtype
        self.device = torch.device(device) if device is not None else encoder.device
        self.checkpoint_config: dict[str, Any] = {}
        self.encoder.requires_grad_(False)

    @staticmethod
    def version_of(encoder_fingerprint: str) -> str:
        """The model version of a dense model on the encoder ``encoder_fingerprint``."""
        return hashlib.sha256(f"{encoder_fingerprint}:dense".encode()).hexdigest()[:16]

    @property
    def model_version(self) -> str:
        return self.version_of(self.encoder_fingerprint)

    @property
    def dim(self) -> int:
        # The encoders loaded here (Transformer + Pooling) report their dimension.
        return int(cast(int, self.encoder.get_embedding_dimension()))

    def architecture(self) -> dict[str, Any]:
        return {"dim": self.dim, "vector_dtype": self.vector_dtype}

    def encode_articles(self, articles: Sequence[Sequence[str]],
                        captions: Sequence[str | None] | None = None, batch_size: int = 64,
                        show_progress: bool = False) -> list[np.ndarray]:
        """One normalised vector [d] per article (``vector_dtype``), from :func:`passage`."""
        captions = captions if captions is not None else [None] * len(articles)
        texts = [passage(c, s) for c, s in zip(captions, articles, strict=True)]
        if not texts:
            return []
        with torch.inference_mode():
            vectors = self.encoder.encode_document(texts, batch_size=batch_size,
                                                   show_progress_bar=show_progress,
                                                   convert_to_numpy=True,
                                                   normalize_embeddings=True)
        stored = np.asarray(vectors, dtype=np.float32).astype(VECTOR_DTYPES[self.vector_dtype])
        return list(stored)

    def encode_query(self, text: str) -> torch.Tensor:
        """[d] float32, normalised."""
        with torch.inference_mode():
            vector = self.encoder.encode_query([text], convert_to_tensor=True,
                                               normalize_embeddings=True,
                                               show_progress_bar=False)[0]
        return vector.to(device=self.device, dtype=torch.float32).clone()

    def prepare_query(self, query: str) -> EncodedQuery:
        _, truncated = truncate_query(self.encoder, query)
        return EncodedQuery(self.encode_query(query), truncated)

    def rerank_prepared(self, query: EncodedQuery, article_vectors: Sequence[np.ndarray]
                        ) -> RerankOutput:
        """Cosine of the query with N stored article vectors: scores [N], no sentence weights."""
        if len(article_vectors) == 0:
            return RerankOutput(np.zeros(0, dtype=np.float32), [], query.truncated)
        matrix = np.stack([np.asarray(v, dtype=np.float32) for v in article_vectors])
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise LexrerankError(f"article vectors have shape {matrix.shape[1:]} but this dense "
                                 f"model expects [{self.dim}]: they come from another model")
        vector = query.vector.detach().cpu().numpy().astype(np.float32)
        # A query prepared by a Paraformer on the same encoder may come unnormalised.
        vector /= max(float(np.linalg.norm(vector)), 1e-12)
        scores = matrix @ vector
        return RerankOutput(scores.astype(np.float32),
                            [np.zeros(0, dtype=np.float32)] * len(article_vectors),
                            query.truncated)

    def rerank(self, query: str, article_vectors: Sequence[np.ndarray]) -> RerankOutput:
        return self.rerank_prepared(self.prepare_query(query), article_vectors)

    def rerank_reference(self, query: str, article_sentences: Sequence[Sequence[str]], *,
                         round_to_storage: bool = True,
                         captions: Sequence[str | None] | None = None) -> RerankOutput:
        """Encode every candidate article for this query (no stored vectors)."""
        encoded = self.encode_articles(article_sentences, captions)
        if not round_to_storage:
            captions = captions if captions is not None else [None] * len(article_sentences)
            texts = [passage(c, s) for c, s in zip(captions, article_sentences, strict=True)]
            encoded = list(self.encoder.encode_document(texts, convert_to_numpy=True,
                                                        normalize_embeddings=True))
        return self.rerank(query, encoded)
