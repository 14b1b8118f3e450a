"""Rerankers for statute search: Paraformer, Attentive CNN, dense, ensembles (a pure library).

Nothing here talks to OpenSearch or Celery, and nothing imports the CLI or the services
(``lexrerank``, ``gateway``, ``worker``, ``indexer``); settings arrive as arguments. Importing
the package imports nothing: :mod:`reranker.model_names` and :mod:`reranker.errors` stay
torch-free for the gateway; the model modules load torch, and the sentence encoder
(``sentence_transformers``) is imported when a model is first built.

Where things live: base types shared by every model (:class:`~reranker.types.RerankOutput`,
:class:`~reranker.types.EncodedQuery`, the :class:`~reranker.types.Reranker` protocol,
fingerprints) in :mod:`reranker.types`; one model per module (:mod:`reranker.paraformer`,
:mod:`reranker.attentive_cnn`, :mod:`reranker.dense`, :mod:`reranker.ensemble`); loading and
saving in :mod:`reranker.checkpoint`; names -> checkpoint directories in
:mod:`reranker.registry`; the encoder in :mod:`reranker.encoder`; exceptions in
:mod:`reranker.errors`.

Typical use::

    from reranker.checkpoint import load_reranker
    from reranker.paraformer import Paraformer

    model = Paraformer()                         # default encoder, fresh head
    vectors = model.encode_articles(sentences)   # once per article, stored with the index
    out = model.rerank("query text", [vectors[i] for i in candidate_rows])
    out.scores, out.weights                      # [N] float32, per-article sentence weights
"""
