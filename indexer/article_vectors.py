"""Compute the article-side vectors of a model and store them durably with the index.

Each document gets ``vectors.<model_version>`` (see :mod:`reranker.article_side`), and the
index's mapping ``_meta`` records which model versions it holds vectors for. The job is
resumable: documents that already carry this version are skipped, so a killed run continues
where it stopped.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError
from opensearchpy.helpers import scan, streaming_bulk
from tqdm import tqdm

from lexrerank.errors import LexrerankError
from reranker.article_side import precompute_articles
from reranker.types import Reranker


@dataclass
class EmbedReport:
    index: str
    model_version: str
    total: int
    computed: int
    skipped: int
    seconds: float
    missing: list[str] = field(default_factory=list)  # requested ids not in the index


def index_meta(client: OpenSearch, index: str) -> dict[str, Any]:
    """The ``_meta.lexrerank`` section of an index's mapping (resolving an alias)."""
    mapping = client.indices.get_mapping(index=index)
    if len(mapping) != 1:
        raise LexrerankError(f"{index!r} resolves to {len(mapping)} indexes; name one index")
    (body,) = mapping.values()
    return body["mappings"].get("_meta", {}).get("lexrerank", {})


def index_language(client: OpenSearch, index: str) -> str | None:
    """The corpus language an index records (``_meta.lexrerank.language``), or None (also for
    an index that does not exist, or an alias over several)."""
    try:
        return index_meta(client, index).get("language")
    except (LexrerankError, NotFoundError):
        return None


def record_model_version(client: OpenSearch, index: str, model: Reranker, count: int) -> None:
    """Note in the index metadata that every document holds vectors of ``model``."""
    meta = index_meta(client, index)
    versions = dict(meta.get("model_versions", {}))
    versions[model.model_version] = {
        "kind": model.kind,
        "encoder": getattr(model, "encoder_name", None),
        # the encoder runtime, part of the version (reranker/onnx_encoder.py)
        "encoder_backend": getattr(model, "encoder_backend", "torch"),
        "documents": count,
        "computed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    client.indices.put_mapping(index=index, body={
        "_meta": {"lexrerank": {**meta, "model_versions": versions}}})


Pending = tuple[str, list[str], str | None]  # (doc id, sentences, caption)
SOURCE = ["sentences", "caption"]


def _lacking(docs: Iterable[dict[str, Any]], version: str) -> Iterator[Pending]:
    """(id, sentences, caption) of the fetched documents that hold no vectors of ``version``."""
    for doc in docs:
        src = doc.get("_source") or {}
        if src.get("vectors", {}).get(version) is None:
            yield doc["_id"], src.get("sentences") or [], src.get("caption")


def _pending(client: OpenSearch, index: str, version: str) -> Iterator[Pending]:
    return _lacking(scan(client, index=index, query={"query": {"match_all": {}}},
                         _source=[*SOURCE, f"vectors.{version}.model_version"], size=500),
                    version)


def _pending_ids(client: OpenSearch, index: str, version: str, ids: Sequence[str],
                 missing: list[str], chunk: int = 500) -> Iterator[Pending]:
    """Like :func:`_pending` for the documents ``ids`` only; absent ids go to ``missing``."""
    unique = list(dict.fromkeys(ids))
    for i in range(0, len(unique), chunk):
        resp = client.mget(index=index, body={"ids": unique[i:i + chunk]},
                           _source_includes=[*SOURCE, f"vectors.{version}.model_version"])
        missing.extend(doc["_id"] for doc in resp["docs"] if not doc.get("found"))
        yield from _lacking((doc for doc in resp["docs"] if doc.get("found")), version)


def embed_index(client: OpenSearch, index: str, model: Reranker, batch_size: int = 128,
                show_progress: bool = True, ids: Sequence[str] | None = None,
                record: bool | None = None) -> EmbedReport:
    """Compute and store ``model``'s article-side vectors for every document lacking them.

    With ``ids``, only those documents are considered (a reindex job fans chunks of ids out
    to the ``embed`` queue); ids not in the index are reported in ``missing``. The index
    metadata records the model version (meaning "every document holds these vectors") only
    when the whole index was covered, unless ``record`` says otherwise: a job that embeds
    chunks records the version itself once all chunks are done. Resumable either way:
    documents that already carry this version are skipped.
    """
    start = time.monotonic()
    version = model.model_version
    missing: list[str] = []
    if ids is None:
        total = client.count(index=index)["count"]
        pending = list(_pending(client, index, version))
    else:
        pending = list(_pending_ids(client, index, version, ids, missing))
        total = len(set(ids)) - len(missing)
    empty = [doc_id for doc_id, sentences, _ in pending if not sentences]
    if empty:
        raise LexrerankError(f"{len(empty)} documents in {index!r} have no sentences "
                             f"(e.g. {empty[0]!r}); re-index them")
    with tqdm(total=len(pending), unit="doc", desc=f"embedding {index} ({model.kind})",
              file=sys.stderr, disable=not show_progress) as bar:
        for i in range(0, len(pending), batch_size):
            chunk = pending[i:i + batch_size]
            records = precompute_articles(model, [s for _, s, _ in chunk], batch_size=64,
                                          captions=[c for _, _, c in chunk])
            actions = ({"_op_type": "update", "_index": index, "_id": doc_id,
                        "doc": {"vectors": {version: record}}}
                       for (doc_id, _, _), record in zip(chunk, records, strict=True))
            for ok, item in streaming_bulk(client, actions, max_retries=5, initial_backoff=1,
                                           raise_on_error=False):
                if not ok:
                    raise LexrerankError(f"storing vectors failed: {item}")
            bar.update(len(chunk))
    client.indices.refresh(index=index)
    if record is None:
        record = ids is None
    if record:
        record_model_version(client, index, model, client.count(index=index)["count"])
    return EmbedReport(index, version, total, len(pending), total - len(pending),
                       time.monotonic() - start, missing)
