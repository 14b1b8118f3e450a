"""`lexrerank bench query-batching`: would encoding concurrent queries together pay on CPU?

A worker process that served several reranks at once (a threads pool) could encode their
queries as one batch. This measures the encode side of that trade with each encoder backend,
at the workers' torch threads: for groups of ``group`` COLIEE queries, ``group`` single
encodes against one padded batch of the same queries, interleaved group by group. A batch
that is not clearly cheaper than the singles (before the waiting time a batcher adds) is
not worth a batching queue.

Prints one JSON object: per backend the p50 milliseconds of the singles and of the batch per
group, and their ratio.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bench.rerank import query_encoders
from bench.services import training_queries
from lexrerank.config import get_settings
from reranker.checkpoint import load_reranker
from reranker.model_names import ENCODER_BACKENDS
from reranker.registry import checkpoint_path
from worker.device import apply_torch_threads


def run(group: int = 8, queries: int = 96, model: str = "default", language: str = "en",
        backends: Sequence[str] = ENCODER_BACKENDS) -> dict[str, Any]:
    apply_torch_threads()
    settings = get_settings()
    texts = [q.text for q in training_queries(queries)]
    groups = [texts[i:i + group] for i in range(0, len(texts) - group + 1, group)]
    result: dict[str, Any] = {"suite": "query-batching", "model": model, "group": group,
                              "groups": len(groups), "torch_threads": torch.get_num_threads()}
    for backend in backends:
        loaded = load_reranker(checkpoint_path(model, language, settings.model_dir),
                               device="cpu", cache_dir=settings.cache_dir, backend=backend)
        encoders = [m.encoder for m in
                    query_encoders(getattr(loaded, "members", {model: loaded}))]
        for text in texts[:group]:  # warm-up
            [e.encode_query([text]) for e in encoders]
        singles, batches = [], []
        for chunk in groups:
            start = time.perf_counter()
            for text in chunk:
                [e.encode_query([text]) for e in encoders]
            singles.append(time.perf_counter() - start)
            start = time.perf_counter()
            [e.encode_query(chunk, batch_size=len(chunk)) for e in encoders]
            batches.append(time.perf_counter() - start)
        single_ms, batch_ms = 1000 * np.median(singles), 1000 * np.median(batches)
        result[backend] = {"singles_ms_p50": round(float(single_ms), 2),
                           "batch_ms_p50": round(float(batch_ms), 2),
                           "batch_over_singles": round(float(batch_ms / single_ms), 3)}
    return result
