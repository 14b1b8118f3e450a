"""`lexrerank bench rerank`: the cost of one rerank with precomputed article vectors.

For each training query in the index's language (COLIEE's English or Japanese, ALQAC's
Vietnamese) the BM25 window (``--window`` candidates) is fetched once, untimed; then:

- ``encode``: encoding the query alone (the floor of any query-time neural rerank; for an
  ensemble, once per distinct encoder), with the served encoder backend
  (``LEXRERANK_ENCODER_BACKEND``), and interleaved with it, query by query, the same model
  loaded with ``torch`` fp32 (``encode_ms_*_torch_fp32``, ``encode_over_torch_fp32_p50``): the
  backend's speed-up measured side by side in one run;
- ``rerank``: the whole serving path of :class:`worker.rerank_service.RerankService`
  (encode the query, gather the cached article vectors, score in one batched pass, fuse
  with BM25, extract evidence);
- ``reference`` (a subset of queries, it is slow): the published algorithm, which encodes
  every candidate's sentences per query, batched here to be fair. Its raw model scores are
  compared with the precomputed path's: ``max_abs_score_diff`` with the fresh embeddings
  rounded to the storage dtype (fp16) as stored ones are, which isolates the precompute;
  ``max_abs_score_diff_vs_float32_reference`` keeps them in float32, so it also shows what
  storing the vectors in fp16 costs.

Prints one JSON object; timings are medians / 95th percentiles in milliseconds on the
device the model runs on, with the worker's torch threads per process (ONNX Runtime gets as
many intra-op threads). ``peak_rss_mb`` includes the torch copy loaded for the comparison.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from bench.services import training_queries
from indexer.article_vectors import index_language
from lexrerank.bm25 import search_bm25
from lexrerank.config import get_settings
from lexrerank.evaluation import percentile
from lexrerank.opensearch_client import opensearch_client
from reranker.checkpoint import load_reranker
from reranker.dense import DenseReranker
from reranker.registry import checkpoint_path
from worker.device import apply_torch_threads
from worker.rerank_service import RerankService


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000, result


def _stats(prefix: str, values: list[float]) -> dict[str, float]:
    return {f"{prefix}_ms_p50": round(percentile(values, 50), 3),
            f"{prefix}_ms_p95": round(percentile(values, 95), 3)}


def query_encoders(members: Mapping[str, Any]) -> list[Any]:
    """One model per distinct query encoder among ``members`` (an ensemble's, or one model's).

    A Paraformer and a dense model that share an encoder share its query encoding: encoding
    the query once per distinct encoder is the floor an ensemble is measured against.
    """
    return list({id(getattr(m, "encoder", m)): m for m in members.values()}.values())


def run(window: int = 100, queries: int = 200, reference_queries: int = 10,
        model: str = "paraformer", index: str | None = None) -> dict[str, Any]:
    apply_torch_threads()  # the same threads per process as a worker (LEXRERANK_TORCH_THREADS)
    settings = get_settings()
    index = index or settings.index
    client = opensearch_client(settings)
    language = index_language(client, index)
    query_set = training_queries(queries, language)
    service = RerankService.load(client, index, model)
    reranker = service.model
    members = service.members  # an ensemble's models, else the one model
    encoders = query_encoders(members)
    # The torch fp32 reference of the same checkpoint, for the backend's ratio.
    torch_model = load_reranker(checkpoint_path(model, language, settings.model_dir),
                                device="cpu", cache_dir=settings.cache_dir)
    torch_encoders = query_encoders(getattr(torch_model, "members", {model: torch_model}))
    hits = {q.text: search_bm25(client, index, q.text, window) for q in query_set}
    captions = {h.doc_id: h.source.get("caption") for found in hits.values() for h in found}
    windows = [(q.text, [(h.doc_id, h.score) for h in hits[q.text]]) for q in query_set]
    for text, candidates in windows[:5]:  # warm-up: lazy init, allocator, caches
        service.rerank(text, candidates)
    for text, _ in windows[:5]:
        [m.encode_query(text) for m in torch_encoders]
    encode_ms, torch_encode_ms, rerank_ms = [], [], []
    for text, candidates in windows:
        encode_ms.append(_timed(lambda t=text: [m.encode_query(t) for m in encoders])[0])
        torch_encode_ms.append(
            _timed(lambda t=text: [m.encode_query(t) for m in torch_encoders])[0])
        rerank_ms.append(_timed(lambda t=text, c=candidates: service.rerank(t, c))[0])
    ratios = [r / e for r, e in zip(rerank_ms, encode_ms, strict=True)]

    reference_ms, fast_ms, diffs, storage_diffs = [], [], [], []
    for text, candidates in windows[:reference_queries]:
        ref_total = fast_total = 0.0
        for name, member in members.items():
            entries = service.caches[name].get([d for d, _ in candidates])
            sentences = [s for _, s in entries]
            sides = [side for side, _ in entries]
            # The dense model reads the caption too (the others only the sentences).
            extra = ({"captions": [captions.get(d) for d, _ in candidates]}
                     if isinstance(member, DenseReranker) else {})
            ms, ref = _timed(lambda t=text, s=sentences, m=member, e=extra:
                             m.rerank_reference(t, s, **e))
            fast, out = _timed(lambda t=text, s=sides, m=member: m.rerank(t, s))
            full = member.rerank_reference(text, sentences, round_to_storage=False, **extra)
            ref_total += ms
            fast_total += fast
            diffs.append(float(np.max(np.abs(ref.scores - out.scores))))
            storage_diffs.append(float(np.max(np.abs(full.scores - out.scores))))
        reference_ms.append(ref_total)
        fast_ms.append(fast_total)
    return {
        "suite": "rerank",
        "model": model,
        "model_version": service.model_version,
        "device": str(getattr(reranker, "device", "cpu")),
        "torch_threads": torch.get_num_threads(),
        "window": window,
        "queries": len(windows),
        **_stats("rerank", rerank_ms),
        "encoder_backend": settings.encoder_backend,
        # What it serves for this model (``auto`` chooses by the checkpoint's language).
        "encoder_variants": sorted({str(getattr(m, "encoder_backend", "torch"))
                                    for m in encoders}),
        **_stats("encode", encode_ms),
        "encode_ms_p50_torch_fp32": round(percentile(torch_encode_ms, 50), 3),
        "encode_ms_p95_torch_fp32": round(percentile(torch_encode_ms, 95), 3),
        "encode_over_torch_fp32_p50": round(percentile(encode_ms, 50)
                                            / percentile(torch_encode_ms, 50), 3),
        "rerank_over_encode_p50": round(percentile(ratios, 50), 3),
        "rerank_over_encode_p95": round(percentile(ratios, 95), 3),
        "reference_queries": len(reference_ms),
        **_stats("reference", reference_ms),
        "speedup_vs_reference": round(float(np.median(reference_ms)) / float(np.median(fast_ms)),
                                      1),
        "max_abs_score_diff": max(diffs),
        "max_abs_score_diff_vs_float32_reference": max(storage_diffs),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
