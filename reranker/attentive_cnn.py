"""Attentive CNN: a two-tower hierarchical encoder with word and sentence attention.

One tower encodes both queries and articles (a query is a list of 1+ sentences):

    words --embedding--> [T, E] --Conv1d(k=3)+tanh--> h [T, C]
        --additive attention over real words (softmax)--> sentence vector [C]
    sentences [L, C] --sparsemax attention with a learned context vector--> article vector [C]
        --L2 normalise--> [C]

Score = cos(query, article) * exp(log_scale) (a learned temperature, init 10). L2-normalising
makes the score a bounded cosine scaled to logit range: the listwise loss can train it, fusion
with BM25 sees a stable scale, and the stored vectors also work for cosine kNN.

The layers live in their own modules: the vocabulary and tokeniser in
:mod:`reranker.word_vocab`, the attention pooling in :mod:`reranker.additive_attention`, the
tower in :mod:`reranker.attentive_cnn_tower`; this module is the serving wrapper.

The sentence attention does not look at the query, so an article's vector and its sentence
weights (the evidence) are computed once per article at index time
(:meth:`AttentiveCNNReranker.encode_articles`) and a rerank is one query encoding plus N dot
products.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import torch
from torch import Tensor

from reranker.attentive_cnn_tower import AttentiveCNN, init_embeddings_from_encoder
from reranker.errors import LexrerankError
from reranker.types import VECTOR_DTYPES, EncodedQuery, RerankOutput, eval_mode, state_fingerprint
from reranker.word_vocab import WordVocab, split_query_sentences

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["ArticleVectors", "AttentiveCNNReranker"]


@dataclass(frozen=True)
class ArticleVectors:
    """The stored article side of the Attentive CNN.

    Attributes:
        vector: [H] in ``vector_dtype`` (float16 by default), L2-normalised.
        sentence_weights: [L_i] float32, one weight per article sentence (the sparsemax
            sentence attention; query-independent, used as evidence). Sentences beyond
            ``max_sentences`` get 0.
    """

    vector: np.ndarray
    sentence_weights: np.ndarray


class AttentiveCNNReranker:
    """Attentive CNN with its vocabulary and tensorisation; the same API as ``Paraformer``.

    ``model_version`` hashes the tower weights, the vocabulary and the truncation limits: any
    retraining changes it, and stored :class:`ArticleVectors` must then be recomputed.

    Args:
        model: the tower.
        vocab: its vocabulary (``len(vocab) == model vocab_size``).
        max_sentences: sentences read per text (more are ignored, weight 0).
        max_words: words read per sentence.
        vector_dtype: dtype of stored article vectors, "float16" (default) or "float32".
        encoder_name, encoder_fingerprint: provenance of the initial embeddings (recorded in
            checkpoints; the encoder itself is not needed to run this model).
        device: defaults to cuda when available, else cpu.
    """

    kind: ClassVar[str] = "attentive-cnn"

    def __init__(
        self,
        model: AttentiveCNN,
        vocab: WordVocab,
        *,
        max_sentences: int = 64,
        max_words: int = 128,
        vector_dtype: str = "float16",
        encoder_name: str | None = None,
        encoder_fingerprint: str | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if len(vocab) != model.config["vocab_size"]:
            raise LexrerankError(
                f"vocabulary has {len(vocab)} tokens but the model has "
                f"{model.config['vocab_size']} embeddings"
            )
        if vector_dtype not in VECTOR_DTYPES:
            raise LexrerankError(
                f"vector_dtype {vector_dtype!r} is not one of {sorted(VECTOR_DTYPES)}"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.max_sentences = max_sentences
        self.max_words = max_words
        self.vector_dtype = vector_dtype
        self.encoder_name = encoder_name
        self.encoder_fingerprint = encoder_fingerprint
        self.checkpoint_config: dict[str, Any] = {}
        self._version_key: tuple | None = None
        self._version: str | None = None

    @classmethod
    def from_corpus(
        cls,
        texts: Iterable[str],
        encoder: SentenceTransformer | str | None = None,
        *,
        min_freq: int = 1,
        max_size: int = 50000,
        channels: int = 256,
        kernel_size: int = 3,
        attention_dim: int = 128,
        dropout: float = 0.1,
        seed: int = 0,
        encoder_name: str | None = None,
        **kwargs: Any,
    ) -> AttentiveCNNReranker:
        """A fresh model whose vocabulary is the corpus words, initialised from an encoder.

        Args:
            texts: the corpus (article sentences; adding training queries is fine).
            encoder: a SentenceTransformer or name/path (None = the default encoder; one that
                is built into a cache must be passed loaded, ``load_encoder(..., cache_dir=)``);
                only its input embeddings and tokenizer are used.
            kwargs: forwarded to the constructor (max_sentences, max_words, device, ...).
        """
        from reranker.encoder import encoder_fingerprint as fingerprint
        from reranker.encoder import encoder_name as loaded_encoder_name
        from reranker.encoder import encoder_source, load_encoder

        if encoder is None or isinstance(encoder, str):
            encoder = load_encoder(encoder, device="cpu")
        source = encoder_source(encoder)
        encoder_name = encoder_name or loaded_encoder_name(encoder)
        vocab = WordVocab.build(texts, min_freq=min_freq, max_size=max_size)
        table = init_embeddings_from_encoder(vocab, encoder, seed=seed)
        torch.manual_seed(seed)
        model = AttentiveCNN(
            len(vocab),
            embedding_dim=table.shape[1],
            channels=channels,
            kernel_size=kernel_size,
            attention_dim=attention_dim,
            dropout=dropout,
        )
        with torch.no_grad():
            model.embedding.weight.copy_(table)
        fp = fingerprint(cast(str, source or encoder_name)) if (source or encoder_name) else None
        return cls(model, vocab, encoder_name=encoder_name, encoder_fingerprint=fp, **kwargs)

    # -- versions and configuration -------------------------------------------------------

    def architecture(self) -> dict[str, Any]:
        """Everything needed to rebuild the model (stored in the checkpoint config)."""
        return {
            **self.model.config,
            "max_sentences": self.max_sentences,
            "max_words": self.max_words,
            "vector_dtype": self.vector_dtype,
        }

    @property
    def model_version(self) -> str:
        """16-hex hash of weights + vocabulary + truncation limits + vector dtype."""
        state = self.model.state_dict()
        # Tensor version counters change on every in-place update (optimizer steps,
        # load_state_dict), so the ~10 MB hash is recomputed only when weights changed.
        key: tuple[Any, ...] = tuple((n, t.data_ptr(), t._version) for n, t in state.items())
        key += (json.dumps(self.architecture(), sort_keys=True), len(self.vocab))
        if key != self._version_key:
            arch = json.dumps(self.architecture(), sort_keys=True)
            self._version = state_fingerprint(state, self.vocab.to_json(), arch)
            self._version_key = key
        return cast(str, self._version)  # set with _version_key, on the first call at the latest

    # -- tensorisation --------------------------------------------------------------------

    def tensorize(self, texts: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor, Tensor, bool]:
        """Turn B texts (each a list of sentences) into the tower's inputs.

        Returns:
            ``(token_ids [B, L, T], word_mask [B, L, T], sentence_mask [B, L], truncated)``
            on the model's device; ``truncated`` says whether a limit cut anything.
        """
        truncated = False
        id_lists: list[list[list[int]]] = []
        for text in texts:
            sentences = list(text)
            if len(sentences) > self.max_sentences:
                truncated = True
                sentences = sentences[: self.max_sentences]
            rows = []
            for sentence in sentences:
                ids = self.vocab.ids(sentence)
                if len(ids) > self.max_words:
                    truncated = True
                    ids = ids[: self.max_words]
                rows.append(ids)
            id_lists.append(rows)
        b = len(id_lists)
        n_sent = max([len(rows) for rows in id_lists] + [1])
        n_word = max([len(ids) for rows in id_lists for ids in rows] + [1])
        token_ids = torch.zeros(b, n_sent, n_word, dtype=torch.long)
        sentence_mask = torch.zeros(b, n_sent, dtype=torch.bool)
        for i, rows in enumerate(id_lists):
            sentence_mask[i, : len(rows)] = True
            for j, ids in enumerate(rows):
                token_ids[i, j, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        word_mask = token_ids != WordVocab.PAD
        return (
            token_ids.to(self.device),
            word_mask.to(self.device),
            sentence_mask.to(self.device),
            truncated,
        )

    def encode_texts(self, texts: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor, bool]:
        """Tower forward (with autograd if enabled): (vectors [B, H], weights [B, L], cut)."""
        ids, wmask, smask, truncated = self.tensorize(texts)
        vectors, weights = self.model.encode(ids, wmask, smask)
        return vectors, weights, truncated

    @staticmethod
    def query_sentences(query: str | Sequence[str]) -> list[str]:
        """A query string is split into sentences; a list is taken as given."""
        return split_query_sentences(query) if isinstance(query, str) else list(query)

    # -- encoding -------------------------------------------------------------------------

    def _store(self, vectors: Tensor) -> np.ndarray:
        return vectors.float().cpu().numpy().astype(VECTOR_DTYPES[self.vector_dtype])

    def encode_articles(
        self,
        articles: Sequence[Sequence[str]],
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> list[ArticleVectors]:
        """Encode A articles (each a list of L_i sentences) into what the index stores.

        Returns:
            A :class:`ArticleVectors`: ``vector`` [H] ``vector_dtype``, ``sentence_weights``
            [L_i] float32.
        """
        from tqdm.auto import tqdm

        # Similar sizes per batch keep the padding (and the time spent on it) small.
        order = sorted(
            range(len(articles)), key=lambda i: (len(articles[i]), sum(len(s) for s in articles[i]))
        )
        out: list[ArticleVectors | None] = [None] * len(articles)
        with torch.inference_mode(), eval_mode(self.model):
            for start in tqdm(
                range(0, len(order), batch_size),
                desc="encode articles",
                disable=not show_progress,
                unit="batch",
            ):
                idx = order[start : start + batch_size]
                vectors, weights, _ = self.encode_texts([articles[i] for i in idx])
                stored = self._store(vectors)
                weights_np = weights.float().cpu().numpy()
                for row, i in enumerate(idx):
                    n = len(articles[i])
                    w = np.zeros(n, dtype=np.float32)
                    kept = min(n, weights_np.shape[1])
                    w[:kept] = weights_np[row, :kept]
                    out[i] = ArticleVectors(stored[row].copy(), w)
        return cast(list[ArticleVectors], out)  # every index is in ``order``: none left None

    def encode_query(self, query: str | Sequence[str]) -> Tensor:
        """Encode one query (string or list of sentences): [H] float32 on the device."""
        with torch.inference_mode(), eval_mode(self.model):
            vectors, _, _ = self.encode_texts([self.query_sentences(query)])
        return vectors[0].float().clone()

    # -- scoring --------------------------------------------------------------------------

    def score(
        self,
        query_vec: Tensor,
        article_vectors: Sequence[ArticleVectors | np.ndarray | Tensor],
    ) -> RerankOutput:
        """Score N candidates: scaled cosine of the query with each stored article vector.

        Args:
            query_vec: [H] from :meth:`encode_query`.
            article_vectors: N :class:`ArticleVectors` (or bare [H] vectors; their
                ``weights`` in the output are then empty).
        Returns:
            :class:`RerankOutput`: scores [N] float32, weights = the stored sentence weights.
        """
        if len(article_vectors) == 0:
            return RerankOutput(np.zeros(0, dtype=np.float32), [])
        vectors, weights = [], []
        for item in article_vectors:
            if isinstance(item, ArticleVectors):
                vectors.append(torch.as_tensor(np.asarray(item.vector, dtype=np.float32)))
                weights.append(np.asarray(item.sentence_weights, dtype=np.float32))
            else:
                vectors.append(torch.as_tensor(item).float())
                weights.append(np.zeros(0, dtype=np.float32))
        matrix = torch.stack(vectors).to(self.device, torch.float32)
        if matrix.ndim != 2 or matrix.shape[1] != self.model.channels:
            raise LexrerankError(
                f"article vectors have shape {tuple(matrix.shape[1:])} but this Attentive CNN "
                f"expects [{self.model.channels}]: they come from another model; reindex them"
            )
        query = torch.as_tensor(query_vec).to(self.device, torch.float32)
        with torch.inference_mode():
            scores = self.model.score(query, matrix)
        return RerankOutput(scores.float().cpu().numpy().astype(np.float32), weights)

    def prepare_query(self, query: str | Sequence[str]) -> EncodedQuery:
        """Encode one query for :meth:`rerank_prepared` (the query-side half of a rerank)."""
        with torch.inference_mode(), eval_mode(self.model):
            vectors, _, truncated = self.encode_texts([self.query_sentences(query)])
        return EncodedQuery(vectors[0].float().clone(), truncated)

    def rerank_prepared(
        self,
        query: EncodedQuery,
        article_vectors: Sequence[ArticleVectors | np.ndarray | Tensor],
    ) -> RerankOutput:
        """Score the candidates' stored vectors for an already encoded query."""
        out = self.score(query.vector, article_vectors)
        out.query_truncated = query.truncated
        return out

    def rerank(
        self,
        query: str | Sequence[str],
        article_vectors: Sequence[ArticleVectors | np.ndarray | Tensor],
    ) -> RerankOutput:
        """Encode the query once and score the candidates' stored vectors."""
        return self.rerank_prepared(self.prepare_query(query), article_vectors)

    def rerank_reference(
        self,
        query: str | Sequence[str],
        article_sentences: Sequence[Sequence[str]],
        *,
        round_to_storage: bool = True,
    ) -> RerankOutput:
        """Re-encode every candidate article for this query (one batched tower pass).

        With ``round_to_storage`` (default) the fresh article vectors are rounded to
        ``vector_dtype`` like stored ones, isolating the precompute path; False keeps float32.
        """
        if len(article_sentences) == 0:
            return RerankOutput(np.zeros(0, dtype=np.float32), [])
        with torch.inference_mode(), eval_mode(self.model):
            vectors, weights, _ = self.encode_texts(article_sentences)
        if round_to_storage:
            vectors = torch.as_tensor(self._store(vectors).astype(np.float32))
        weights_np = weights.float().cpu().numpy()
        items = []
        for i, article in enumerate(article_sentences):
            w = np.zeros(len(article), dtype=np.float32)
            kept = min(len(article), weights_np.shape[1])
            w[:kept] = weights_np[i, :kept]
            items.append(ArticleVectors(vectors[i].float().cpu().numpy(), w))
        return self.rerank(query, items)
