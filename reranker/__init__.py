"""Rerankers for statute search: Paraformer and Attentive CNN (a pure library).

Nothing here talks to OpenSearch or Celery. Importing the package loads torch only; the
sentence encoder (``sentence_transformers``) is imported when a model is first built.

Typical use::

    from reranker import Paraformer, load_reranker

    model = Paraformer()                         # default encoder, fresh head
    vectors = model.encode_articles(sentences)   # once per article, stored with the index
    out = model.rerank("query text", [vectors[i] for i in candidate_rows])
    out.scores, out.weights                      # [N] float32, per-article sentence weights
"""

from reranker.attentive_cnn import (
    ArticleVectors,
    AttentiveCNN,
    AttentiveCNNReranker,
    WordVocab,
    init_embeddings_from_encoder,
)
from reranker.checkpoint import KINDS, load_reranker, read_config, save_checkpoint
from reranker.encoder import (
    DEFAULT_ENCODER,
    ENCODER_ENV,
    encoder_fingerprint,
    load_encoder,
    max_query_tokens,
    resolve_encoder_path,
    truncate_query,
)
from reranker.paraformer import EncodedQuery, Paraformer, ParaformerHead, RerankOutput
from reranker.sparsemax import masked_softmax, sparsemax
from reranker.training import TrainingExample, TrainingReport, mrr_of_gold, train_reranker

Reranker = Paraformer | AttentiveCNNReranker

__all__ = [
    "DEFAULT_ENCODER",
    "ENCODER_ENV",
    "KINDS",
    "ArticleVectors",
    "AttentiveCNN",
    "AttentiveCNNReranker",
    "EncodedQuery",
    "Paraformer",
    "ParaformerHead",
    "Reranker",
    "RerankOutput",
    "TrainingExample",
    "TrainingReport",
    "WordVocab",
    "encoder_fingerprint",
    "init_embeddings_from_encoder",
    "load_encoder",
    "load_reranker",
    "masked_softmax",
    "max_query_tokens",
    "mrr_of_gold",
    "read_config",
    "resolve_encoder_path",
    "save_checkpoint",
    "sparsemax",
    "train_reranker",
    "truncate_query",
]
