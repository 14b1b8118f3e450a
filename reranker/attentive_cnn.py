"""Attentive CNN: a two-tower hierarchical encoder with word and sentence attention.

One tower encodes both queries and articles (a query is a list of 1+ sentences):

    words --embedding--> [T, E] --Conv1d(k=3)+tanh--> h [T, C]
        --additive attention over real words (softmax)--> sentence vector [C]
    sentences [L, C] --sparsemax attention with a learned context vector--> article vector [C]
        --L2 normalise--> [C]

Score = cos(query, article) * exp(log_scale) (a learned temperature, init 10). L2-normalising
makes the score a bounded cosine scaled to logit range: the listwise loss can train it, fusion
with BM25 sees a stable scale, and the stored vectors also work for cosine kNN.

The sentence attention does not look at the query, so an article's vector and its sentence
weights (the evidence) are computed once per article at index time
(:meth:`AttentiveCNNReranker.encode_articles`) and a rerank is one query encoding plus N dot
products.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lexrerank.errors import LexrerankError
from reranker.paraformer import (
    VECTOR_DTYPES,
    EncodedQuery,
    RerankOutput,
    eval_mode,
    state_fingerprint,
)
from reranker.sparsemax import masked_softmax, sparsemax

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "AdditiveAttention",
    "ArticleVectors",
    "AttentiveCNN",
    "AttentiveCNNReranker",
    "WordVocab",
    "init_embeddings_from_encoder",
    "split_sentences",
]

# Han ideographs and kana: Japanese/Chinese do not separate words with spaces, so each
# character is one token. Hangul is space-separated and stays in \w+ runs.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_TOKEN_RE = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+")
# Sentence ends for queries given as one string: Latin and CJK full stops, ?, !, newlines.
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\n+")


def split_sentences(text: str) -> list[str]:
    """Split a query string into sentences (light rules; the same for training and serving)."""
    parts = [p.strip() for p in _SENTENCE_RE.split(text)]
    return [p for p in parts if p] or [text.strip()]


class WordVocab:
    """A word vocabulary with language-agnostic tokenisation.

    Tokenisation: Unicode NFC (Vietnamese text arrives both composed and decomposed), lower
    case, then regex ``\\w+`` words, with every CJK character its own token. Id 0 is padding,
    id 1 is unknown.
    """

    PAD, UNK = 0, 1
    PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
    FORMAT = "lexrerank.word_vocab/1"

    def __init__(self, tokens: Sequence[str]) -> None:
        if list(tokens[:2]) != [self.PAD_TOKEN, self.UNK_TOKEN]:
            raise LexrerankError("a WordVocab's first two tokens must be '<pad>' and '<unk>'")
        self.tokens: list[str] = list(tokens)
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise LexrerankError("a WordVocab must not contain duplicate tokens")

    @staticmethod
    def tokenize(text: str) -> list[str]:
        """Split text into lower-case word tokens (CJK: one character per token)."""
        return _TOKEN_RE.findall(unicodedata.normalize("NFC", text).lower())

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, max_size: int = 50000) -> WordVocab:
        """Keep the ``max_size - 2`` most frequent tokens seen at least ``min_freq`` times.

        Ties break alphabetically so the same corpus always gives the same ids.
        """
        counts = Counter(tok for text in texts for tok in cls.tokenize(text))
        ranked = sorted((c, t) for t, c in counts.items() if c >= min_freq)
        ranked.sort(key=lambda ct: (-ct[0], ct[1]))
        kept = [t for _, t in ranked[: max(max_size - 2, 0)]]
        return cls([cls.PAD_TOKEN, cls.UNK_TOKEN, *kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordVocab) and other.tokens == self.tokens

    def ids(self, text: str, max_tokens: int | None = None) -> list[int]:
        """Token ids of ``text`` (unknown words -> 1), cut to ``max_tokens``."""
        toks = self.tokenize(text)
        if max_tokens is not None:
            toks = toks[:max_tokens]
        return [self.index.get(t, self.UNK) for t in toks]

    def to_json(self) -> str:
        """A JSON document (no pickle) that :meth:`from_json` reads back."""
        return json.dumps({"format": self.FORMAT, "tokens": self.tokens}, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str | dict) -> WordVocab:
        obj = json.loads(data) if isinstance(data, str) else data
        if not isinstance(obj, dict) or obj.get("format") != cls.FORMAT:
            raise LexrerankError(f"not a word vocabulary (expected format {cls.FORMAT!r})")
        return cls(obj["tokens"])


def _input_embeddings(sentence_transformer: SentenceTransformer) -> Tensor:
    hf_model = getattr(sentence_transformer, "transformers_model", None)
    if hf_model is None:
        hf_model = sentence_transformer[0].auto_model
    return hf_model.get_input_embeddings().weight.detach().float().cpu()


def init_embeddings_from_encoder(
    vocab: WordVocab, sentence_transformer: SentenceTransformer, seed: int = 0
) -> Tensor:
    """Initial word embeddings [V, E] from the encoder's input (word-piece) embeddings.

    A word that is one token of the encoder's tokenizer takes that token's embedding; a word
    split into several pieces takes their mean (unknown pieces skipped); the rest (and
    ``<unk>``) get N(0, 0.02) like BERT's own initialisation; ``<pad>`` is 0. E is the
    encoder's hidden size (384 for MiniLM).
    """
    table = _input_embeddings(sentence_transformer)
    tokenizer = sentence_transformer.tokenizer
    unk_id = tokenizer.unk_token_id
    gen = torch.Generator().manual_seed(seed)
    out = torch.randn(len(vocab), table.shape[1], generator=gen) * 0.02
    out[WordVocab.PAD] = 0.0
    words = vocab.tokens[2:]
    if words:
        pieces = tokenizer(words, add_special_tokens=False)["input_ids"]
        for i, ids in enumerate(pieces, start=2):
            known = [j for j in ids if j != unk_id]
            if known:
                out[i] = table[known].mean(dim=0)
    return out


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


class AttentiveCNN(nn.Module):
    """The hierarchical tower (see the module docstring).

    Args:
        vocab_size: V, including pad and unk.
        embedding_dim: E (the encoder's hidden size when initialised from it).
        channels: C, the convolution's output channels = the vector size H.
        kernel_size: odd width of the word convolution.
        attention_dim: size of both attention layers' tanh layer.
        dropout: on word embeddings (training only).
        init_scale: initial temperature multiplying the cosine.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 384,
        channels: int = 256,
        kernel_size: int = 3,
        attention_dim: int = 128,
        dropout: float = 0.1,
        init_scale: float = 10.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("kernel_size must be odd so the convolution keeps the length")
        self.config = {
            "vocab_size": vocab_size,
            "embedding_dim": embedding_dim,
            "channels": channels,
            "kernel_size": kernel_size,
            "attention_dim": attention_dim,
            "dropout": dropout,
            "init_scale": init_scale,
        }
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=WordVocab.PAD)
        self.dropout = nn.Dropout(dropout)
        # Zero padding of the convolution equals the zero embeddings of <pad>, so a sentence's
        # vector does not depend on how much padding its batch has.
        self.conv = nn.Conv1d(embedding_dim, channels, kernel_size, padding=kernel_size // 2)
        self.word_attention = AdditiveAttention(channels, attention_dim, "softmax")
        self.sentence_attention = AdditiveAttention(channels, attention_dim, "sparsemax")
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    @property
    def channels(self) -> int:
        return self.config["channels"]

    def encode(
        self, token_ids: Tensor, word_mask: Tensor, sentence_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Encode B texts.

        Args:
            token_ids: LongTensor [B, L, T] word ids (0 = pad).
            word_mask: BoolTensor [B, L, T], True for real words.
            sentence_mask: BoolTensor [B, L], True for real sentences.
        Returns:
            ``(vectors [B, C] L2-normalised, sentence_weights [B, L])``; a sentence without
            words, and padding, get weight 0; a text without words gets the zero vector.
        """
        b, n_sent, _ = token_ids.shape
        sentence_mask = sentence_mask & word_mask.any(dim=-1)
        flat_mask = sentence_mask.reshape(-1)
        rows = flat_mask.nonzero(as_tuple=True)[0]
        sentences = torch.zeros(b * n_sent, self.channels, device=token_ids.device)
        if rows.numel():
            # Only real sentences go through the convolution, trimmed to their longest one:
            # padding sentences are most of a batch of articles of uneven length.
            ids = token_ids.reshape(b * n_sent, -1)[rows]
            wmask = word_mask.reshape(b * n_sent, -1)[rows]
            t_max = int(wmask.sum(dim=-1).max())
            ids, wmask = ids[:, :t_max], wmask[:, :t_max]
            x = self.dropout(self.embedding(ids)) * wmask.unsqueeze(-1)
            # tanh, not ReLU: signed features let unrelated texts start near cosine 0; with
            # ReLU every vector lies in the positive orthant and all cosines start near 1.
            h = torch.tanh(self.conv(x.transpose(1, 2))).transpose(1, 2)  # [R, T, C]
            pooled, _ = self.word_attention(h, wmask)
            sentences = sentences.to(pooled.dtype).index_copy(0, rows, pooled)
        sentences = sentences.view(b, n_sent, self.channels)
        vectors, weights = self.sentence_attention(sentences, sentence_mask)
        return F.normalize(vectors, dim=-1), weights

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp()

    def score(self, queries: Tensor, articles: Tensor) -> Tensor:
        """Scaled cosine: queries [..., C] x articles [N, C] -> scores [..., N]."""
        return (queries @ articles.transpose(-1, -2)) * self.scale


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

    kind = "attentive-cnn"

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
            encoder: a SentenceTransformer or name/path (None = the configured default);
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
        fp = fingerprint(source or encoder_name) if (source or encoder_name) else None
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
        key = tuple((n, t.data_ptr(), t._version) for n, t in state.items())
        key += (json.dumps(self.architecture(), sort_keys=True), len(self.vocab))
        if key != self._version_key:
            arch = json.dumps(self.architecture(), sort_keys=True)
            self._version = state_fingerprint(state, self.vocab.to_json(), arch)
            self._version_key = key
        return self._version  # type: ignore[return-value]

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
        return split_sentences(query) if isinstance(query, str) else list(query)

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
        return out  # type: ignore[return-value]

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
