"""Paraformer: a sentence encoder plus query-guided sparse attention over article sentences.

The query q [d] and every article sentence s_j [d] are embedded by a SentenceTransformer.
A general (Luong) attention scores each sentence a_j = q^T W s_j; sparsemax over the
article's real sentences gives weights w (most exactly 0: the evidence); the attended article
vector is v = sum_j w_j s_j; the features [q, v, q*v, |q-v|] go through a small MLP to one
relevance logit.

Performance: the sentence embeddings depend only on the encoder, so they are computed once per
article (:meth:`Paraformer.encode_articles`) and stored with the index. A rerank is one query
encoding plus one batched head pass over all candidates (:meth:`Paraformer.score`).
:meth:`Paraformer.rerank_reference` is the published algorithm that re-encodes every
candidate's sentences per query; it exists to show both give the same scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from reranker.encoder import (
    encoder_fingerprint,
    encoder_source,
    load_encoder,
    truncate_query,
)
from reranker.encoder import encoder_name as loaded_encoder_name
from reranker.errors import LexrerankError
from reranker.sparsemax import sparsemax
from reranker.types import VECTOR_DTYPES, EncodedQuery, RerankOutput, eval_mode, state_fingerprint

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["Paraformer", "ParaformerHead", "pad_sentence_vectors"]

def pad_sentence_vectors(
    vectors: Sequence[np.ndarray | Tensor],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Stack N articles' sentence vectors into one padded batch.

    Args:
        vectors: N arrays/tensors, the i-th of shape [L_i, d] (L_i may be 0). Tensors already
            on a GPU are padded there (no round trip through host memory).
    Returns:
        ``(sentences [N, L_max, d], mask [N, L_max] bool)`` on ``device`` (default: where the
        inputs are); padding rows are 0 and False; L_max >= 1.
    """
    if len(vectors) == 0:
        raise ValueError("pad_sentence_vectors needs at least one article")
    shapes = [tuple(v.shape) for v in vectors]
    dims = {shape[-1] for shape in shapes if len(shape) == 2}
    if len(dims) != 1 or any(len(shape) != 2 for shape in shapes):
        raise LexrerankError(
            "article vectors must all be [L_i, d] with one d; got shapes "
            f"{sorted(set(shapes))[:5]} (vectors from another model?)"
        )
    (d,) = dims
    lengths = [shape[0] for shape in shapes]
    l_max = max(max(lengths), 1)
    if all(isinstance(v, Tensor) for v in vectors):
        out = torch.zeros(len(vectors), l_max, d, dtype=dtype, device=vectors[0].device)
        for i, v in enumerate(vectors):
            out[i, : lengths[i]] = cast(Tensor, v)  # all tensors (checked above)
    else:
        # One host buffer and one transfer, instead of N small tensors.
        buffer = np.zeros((len(vectors), l_max, d), dtype=np.float32)
        for i, v in enumerate(vectors):
            buffer[i, : lengths[i]] = v.cpu().numpy() if isinstance(v, Tensor) else v
        out = torch.from_numpy(buffer).to(dtype)
    lengths_t = torch.tensor(lengths, device=out.device)
    mask = torch.arange(l_max, device=out.device)[None, :] < lengths_t[:, None]
    target = out.device if device is None else torch.device(device)
    return out.to(target), mask.to(target)


class ParaformerHead(nn.Module):
    """Query-guided sparse attention over sentence embeddings, then an MLP to one logit.

    Args:
        dim: the sentence embedding size d.
        hidden: the MLP's hidden size.
        dropout: dropout on the features and the hidden layer (training only).
    """

    def __init__(self, dim: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim = dim
        self.hidden = hidden
        self.dropout = dropout
        # Luong "general" attention: a_j = q^T W s_j, implemented as (attention(q)) . s_j.
        self.attention = nn.Linear(dim, dim, bias=False)
        # Identity start = cosine similarity between the (normalised) query and each sentence,
        # so the attention is meaningful before training, which matters with ~1k queries.
        nn.init.eye_(self.attention.weight)
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(4 * dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, query: Tensor, sentences: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Score all N candidates of a query in one pass.

        Args:
            query: [..., d] query embedding(s); broadcast over the N candidates.
            sentences: [..., N, L, d] candidates' sentence embeddings, padded to L.
            mask: [..., N, L] bool, True for real sentences.
        Returns:
            ``(scores [..., N], weights [..., N, L])``; padding sentences get weight 0, a
            candidate with no sentence gets all-zero weights (and v = 0).
        """
        key = self.attention(query)  # [..., d]
        # [..., N, L, d] @ [..., 1, d, 1] -> [..., N, L]
        logits = (sentences @ key[..., None, :, None]).squeeze(-1)
        weights = sparsemax(logits, mask, dim=-1)
        attended = (weights.unsqueeze(-1) * sentences).sum(dim=-2)  # [..., N, d]
        if not self.training:
            return self._score_factorised(query, attended), weights
        q = query.unsqueeze(-2).expand_as(attended)
        features = torch.cat([q, attended, q * attended, (q - attended).abs()], dim=-1)
        return self.mlp(features).squeeze(-1), weights

    def _score_factorised(self, query: Tensor, attended: Tensor) -> Tensor:
        """The MLP's scores without building the [..., N, 4d] features (inference only).

        With the first layer's weight split by feature into W_q, W_a, W_m, W_d ([hidden, d]
        each), its output is ``W_q q + b + (W_a + W_m diag(q)) a + W_d |q - a|``: the query's
        terms are computed once, not once per candidate, which halves the layer's work. It
        equals the concatenated form up to float rounding; training keeps that form, whose
        dropout acts on the features themselves.

        Args:
            query: [..., d]; attended: [..., N, d]. Returns the scores [..., N].
        """
        first, activation, out = (cast(nn.Linear, self.mlp[1]), self.mlp[2],
                                  cast(nn.Linear, self.mlp[4]))
        w_q, w_a, w_m, w_d = first.weight.split(self.dim, dim=1)  # [hidden, d] each
        query_term = query @ w_q.T + first.bias  # [..., hidden]
        candidate_weight = w_a + w_m * query.unsqueeze(-2)  # [..., hidden, d]
        hidden = (query_term.unsqueeze(-2)
                  + attended @ candidate_weight.transpose(-1, -2)
                  + (query.unsqueeze(-2) - attended).abs() @ w_d.T)  # [..., N, hidden]
        return out(activation(hidden)).squeeze(-1)


class Paraformer:
    """Paraformer reranker: a SentenceTransformer encoder plus a :class:`ParaformerHead`.

    ``model_version`` is the encoder's fingerprint. Article-side vectors (sentence embeddings)
    depend only on the encoder, so retraining the head does NOT invalidate stored vectors;
    :attr:`head_version` identifies the head for reports. Fine-tuning the encoder does change
    the version: after such training it is a hash of the in-memory encoder weights, and after
    :func:`reranker.checkpoint.save_checkpoint` it is the fingerprint of the saved encoder
    directory (the one :func:`reranker.checkpoint.load_reranker` checks).

    Args:
        encoder: a SentenceTransformer, or a name/path for :func:`reranker.encoder.load_encoder`
            (None = the default encoder). An encoder that is built into a cache (the
            multilingual one, a delta) must be passed loaded (``load_encoder(..., cache_dir=)``).
        head: a trained head; None builds a fresh one for the encoder's dimension.
        hidden, dropout: the fresh head's sizes.
        finetune_encoder: train the encoder together with the head (slow on CPU). When False
            the encoder is frozen and training uses precomputed embeddings.
        encoder_name: the name or path to record for an already-loaded ``encoder`` (needed
            when it was not loaded by ``load_encoder``).
        vector_dtype: dtype of the stored article vectors, "float16" (default; half the
            storage, scores change very little) or "float32".
        device: defaults to the encoder's device.
    """

    kind: ClassVar[str] = "paraformer"

    def __init__(
        self,
        encoder: SentenceTransformer | str | None = None,
        head: ParaformerHead | None = None,
        *,
        hidden: int = 256,
        dropout: float = 0.1,
        finetune_encoder: bool = False,
        encoder_name: str | None = None,
        vector_dtype: str = "float16",
        device: str | torch.device | None = None,
    ) -> None:
        if encoder is None or isinstance(encoder, str):
            encoder = load_encoder(encoder, device=None if device is None else str(device))
        source = encoder_source(encoder)
        encoder_name = encoder_name or loaded_encoder_name(encoder)
        if encoder_name is None and source is None:
            raise LexrerankError(
                "Paraformer needs to know which directory the encoder came from (its "
                "fingerprint versions the stored vectors): load it with "
                "reranker.encoder.load_encoder or pass encoder_name="
            )
        if vector_dtype not in VECTOR_DTYPES:
            raise LexrerankError(
                f"vector_dtype {vector_dtype!r} is not one of {sorted(VECTOR_DTYPES)}"
            )
        self.encoder = encoder
        self.encoder_name = encoder_name or source
        # One of the two is set (checked above).
        self.encoder_fingerprint = encoder_fingerprint(cast(str, source or self.encoder_name))
        self.finetune_encoder = finetune_encoder
        self.vector_dtype = vector_dtype
        self.device = torch.device(device) if device is not None else encoder.device
        if self.device != encoder.device:
            self.encoder.to(self.device)
        # int for the encoders loaded here (Transformer + Pooling); a head of another
        # dimension is refused below.
        dim = cast(int, encoder.get_embedding_dimension())
        self.head = head if head is not None else ParaformerHead(dim, hidden, dropout)
        if self.head.dim != dim:
            raise LexrerankError(
                f"Paraformer head expects {self.head.dim}-d embeddings but the encoder gives "
                f"{dim}-d; the checkpoint was trained with another encoder"
            )
        if finetune_encoder and next(encoder.parameters()).dtype != torch.float32:
            # Training fp16 weights without loss scaling diverges; fine-tune in float32.
            encoder.float()
        # The head stays float32 even beside an fp16 encoder: it is tiny, and the attention
        # and the MLP are where precision matters for close scores.
        self.head.to(device=self.device, dtype=torch.float32).eval()
        self.checkpoint_config: dict[str, Any] = {}
        if not finetune_encoder:
            self.encoder.requires_grad_(False)

    # -- versions and configuration -------------------------------------------------------

    @staticmethod
    def version_of(encoder_fingerprint: str) -> str:
        """The model version of a Paraformer on the encoder ``encoder_fingerprint``: the
        fingerprint itself (see class docs)."""
        return encoder_fingerprint

    @property
    def model_version(self) -> str:
        """Version of the article-side vectors: the encoder fingerprint (see class docs)."""
        return self.version_of(self.encoder_fingerprint)

    @property
    def head_version(self) -> str:
        """A hash of the head weights (changes with every retraining; vectors stay valid)."""
        return state_fingerprint(self.head)

    @property
    def dim(self) -> int:
        return self.head.dim

    def architecture(self) -> dict[str, Any]:
        """Hyperparameters needed to rebuild the head (stored in the checkpoint config)."""
        return {
            "dim": self.head.dim,
            "hidden": self.head.hidden,
            "dropout": self.head.dropout,
            "finetune_encoder": self.finetune_encoder,
            "vector_dtype": self.vector_dtype,
        }

    # -- encoding -------------------------------------------------------------------------

    def _store(self, vectors: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(vectors, dtype=VECTOR_DTYPES[self.vector_dtype])

    def encode_articles(
        self,
        articles: Sequence[Sequence[str]],
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> list[np.ndarray]:
        """Embed every sentence of every article: the vectors to store with the index.

        All sentences go through one ``encode`` call (the encoder sorts them by length and
        batches across articles), then are split back per article.

        Args:
            articles: A articles, each a sequence of L_i sentences.
        Returns:
            A arrays, the i-th [L_i, d] in ``vector_dtype`` (float16 by default), rows as
            the encoder gives them (L2-normalised for MiniLM).
        """
        flat = [sentence for article in articles for sentence in article]
        dim = self.head.dim
        if flat:
            # encode_document adds the encoder's document prompt (e5: "passage: "), if any.
            embedded = self.encoder.encode_document(
                flat,
                batch_size=batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
            )
            embedded = self._store(np.asarray(embedded, dtype=np.float32))
        else:
            embedded = np.zeros((0, dim), dtype=VECTOR_DTYPES[self.vector_dtype])
        out, start = [], 0
        for article in articles:
            out.append(embedded[start : start + len(article)])
            start += len(article)
        return out

    def encode_query(self, text: str) -> Tensor:
        """Embed one query: [d] float32 on the model's device (truncated as the encoder does)."""
        return self.encode_queries([text])[0]

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        """Embed B queries: [B, d] float32 on the model's device, without autograd graphs."""
        with torch.inference_mode():
            vectors = self.encoder.encode_query(
                list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
            )
        return vectors.to(device=self.device, dtype=torch.float32).clone()

    def embed_with_grad(self, texts: Sequence[str]) -> Tensor:
        """Embed texts through the encoder WITH autograd (encoder fine-tuning): [B, d]."""
        features = self.encoder.preprocess(list(texts))
        features = {
            k: (v.to(self.device) if isinstance(v, Tensor) else v) for k, v in features.items()
        }
        return self.encoder(features)["sentence_embedding"].float()

    # -- scoring --------------------------------------------------------------------------

    def score(
        self, query_vec: Tensor, article_vectors: Sequence[np.ndarray | Tensor]
    ) -> RerankOutput:
        """Score N candidates from their precomputed sentence vectors, in one head pass.

        Args:
            query_vec: [d] from :meth:`encode_query`.
            article_vectors: N arrays, the i-th [L_i, d] from :meth:`encode_articles`.
        Returns:
            :class:`RerankOutput` with scores [N] and weights [L_i] per candidate.
        """
        if len(article_vectors) == 0:
            return RerankOutput(np.zeros(0, dtype=np.float32), [])
        lengths = [len(v) for v in article_vectors]
        sentences, mask = pad_sentence_vectors(article_vectors, device=self.device)
        if sentences.shape[-1] != self.head.dim:
            raise LexrerankError(
                f"article vectors are {sentences.shape[-1]}-d but this Paraformer expects "
                f"{self.head.dim}-d: they were computed by another encoder; reindex them"
            )
        query = torch.as_tensor(query_vec).to(device=self.device, dtype=torch.float32)
        with torch.inference_mode(), eval_mode(self.head):
            scores, weights = self.head(query, sentences, mask)
        scores_np = scores.float().cpu().numpy()
        weights_np = weights.float().cpu().numpy()
        return RerankOutput(
            scores_np.astype(np.float32),
            [weights_np[i, :n].copy() for i, n in enumerate(lengths)],
        )

    def prepare_query(self, query: str) -> EncodedQuery:
        """Encode one query for :meth:`rerank_prepared` (the query-side half of a rerank)."""
        _, truncated = truncate_query(self.encoder, query)
        return EncodedQuery(self.encode_query(query), truncated)

    def rerank_prepared(
        self, query: EncodedQuery, article_vectors: Sequence[np.ndarray | Tensor]
    ) -> RerankOutput:
        """Score the candidates' precomputed vectors for an already encoded query."""
        out = self.score(query.vector, article_vectors)
        out.query_truncated = query.truncated
        return out

    def rerank(self, query: str, article_vectors: Sequence[np.ndarray | Tensor]) -> RerankOutput:
        """Encode the query once and score the candidates' precomputed vectors."""
        return self.rerank_prepared(self.prepare_query(query), article_vectors)

    def rerank_reference(
        self,
        query: str,
        article_sentences: Sequence[Sequence[str]],
        *,
        round_to_storage: bool = True,
    ) -> RerankOutput:
        """The published algorithm: re-encode every candidate's sentences for this query.

        All candidates' sentences are encoded in one batched call, then scored like
        :meth:`score`. With ``round_to_storage`` (default) the fresh embeddings are rounded to
        ``vector_dtype`` as stored ones are, so a comparison with :meth:`rerank` isolates the
        precompute path; ``round_to_storage=False`` keeps full float32 and so also measures
        the effect of fp16 storage.
        """
        flat = [s for article in article_sentences for s in article]
        if flat:
            with torch.inference_mode():
                embedded = self.encoder.encode_document(
                    flat, convert_to_numpy=True, show_progress_bar=False, batch_size=64
                )
            embedded = np.asarray(embedded, dtype=np.float32)
            if round_to_storage:
                embedded = self._store(embedded).astype(np.float32)
        else:
            embedded = np.zeros((0, self.head.dim), dtype=np.float32)
        vectors, start = [], 0
        for article in article_sentences:
            vectors.append(embedded[start : start + len(article)])
            start += len(article)
        return self.rerank(query, vectors)
