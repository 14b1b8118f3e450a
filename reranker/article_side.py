"""Article-side precompute: an article -> the JSON-safe record a model needs at query time.

Records are compact: arrays are stored as base64 of their raw little-endian bytes (float16 by
default), not as JSON float lists. Paraformer records hold the sentence embeddings [L, d];
dense records the article vector [d];
Attentive CNN records hold the article vector [H] and the sentence weights [L] (its
query-independent evidence). Each record carries the ``model_version`` it belongs to, so a
query is never scored against vectors of another model.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from reranker.attentive_cnn import ArticleVectors
from reranker.dense import DenseReranker
from reranker.errors import LexrerankError
from reranker.paraformer import Paraformer
from reranker.types import Reranker

ArticleSide = np.ndarray | ArticleVectors
_DTYPES = {"float16": np.float16, "float32": np.float32}


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """``{"dtype", "shape", "b64"}`` for a float16/float32 array."""
    name = str(array.dtype)
    if name not in _DTYPES:
        raise ValueError(f"cannot store a {name} array; use float16 or float32")
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return {"dtype": name, "shape": list(array.shape),
            "b64": base64.b64encode(data.tobytes()).decode("ascii")}


def decode_array(record: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array`; checks that the byte count matches the shape."""
    dtype = np.dtype(_DTYPES[record["dtype"]]).newbyteorder("<")
    raw = base64.b64decode(record["b64"])
    shape = tuple(int(n) for n in record["shape"])
    if len(raw) != dtype.itemsize * int(np.prod(shape)):
        raise ValueError(f"stored array has {len(raw)} bytes, not {shape} x {dtype}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def precompute_articles(model: Reranker, articles: Sequence[Sequence[str]],
                        batch_size: int = 64, show_progress: bool = False,
                        captions: Sequence[str | None] | None = None
                        ) -> list[dict[str, Any]]:
    """Records for A articles (each a list of L_i sentences; ``captions``: their captions,
    which the dense model reads with the sentences), in order."""
    version = model.model_version
    if isinstance(model, DenseReranker):
        vectors = model.encode_articles(articles, captions, batch_size=batch_size,
                                        show_progress=show_progress)
        return [{"kind": model.kind, "model_version": version, "vector": encode_array(v)}
                for v in vectors]
    encoded = model.encode_articles(articles, batch_size=batch_size,
                                    show_progress=show_progress)
    if isinstance(model, Paraformer):
        return [{"kind": model.kind, "model_version": version, "sentences": encode_array(e)}
                for e in encoded]
    return [{"kind": model.kind, "model_version": version,
             "vector": encode_array(e.vector),
             "sentence_weights": encode_array(e.sentence_weights)} for e in encoded]


def article_side_from_record(model: Reranker, record: Mapping[str, Any]) -> ArticleSide:
    """Decode one stored record for ``model``; refuses records of another model version."""
    if record.get("model_version") != model.model_version or record.get("kind") != model.kind:
        raise LexrerankError(
            f"stored article vectors belong to {record.get('kind')} "
            f"{record.get('model_version')}, not {model.kind} {model.model_version}: "
            "recompute them (`lexrerank embed`)")
    if isinstance(model, Paraformer):
        return decode_array(record["sentences"])
    if isinstance(model, DenseReranker):
        return decode_array(record["vector"])
    return ArticleVectors(decode_array(record["vector"]),
                          decode_array(record["sentence_weights"]))
