"""In-memory cache of an index's article-side vectors for one model version.

Loaded once from OpenSearch (one scan), then a rerank reads no vectors over the network. The
cache refuses an index whose metadata does not list the model's version: a query is never
scored with a query encoder that does not match the article vectors (a
:class:`worker.protocol.RerankFailed` with code ``no_vectors``, a ``LexrerankError``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.helpers import scan
from tqdm import tqdm

from indexer.article_vectors import index_meta
from reranker.article_side import ArticleSide, article_side_from_record
from reranker.types import Reranker
from worker.protocol import ReasonCode, RerankFailed


def vector_bytes(entries: Any) -> int:
    """Array bytes of cache entries ``(article side, sentences)``: ndarrays or their fields."""
    total = 0
    for side, _sentences in entries:
        if hasattr(side, "nbytes"):
            total += int(side.nbytes)
        else:
            total += sum(int(getattr(v, "nbytes", 0)) for v in vars(side).values())
    return total


class ArticleVectorCache:
    """doc id -> (article-side vectors, sentences) for one (index, model version)."""

    def __init__(self, index: str, model_version: str,
                 entries: dict[str, tuple[ArticleSide, list[str]]]) -> None:
        self.index = index
        self.model_version = model_version
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._entries

    def nbytes(self) -> int:
        """Array bytes held (the vectors, not the sentences)."""
        return vector_bytes(self._entries.values())

    def get(self, doc_ids: Sequence[str]) -> list[tuple[ArticleSide, list[str]]]:
        missing = [d for d in doc_ids if d not in self._entries]
        if missing:
            raise RerankFailed(
                ReasonCode.NO_VECTORS,
                f"{len(missing)} candidates of {self.index!r} have no vectors for model "
                f"{self.model_version} (e.g. {missing[0]!r}); run `lexrerank embed`")
        return [self._entries[d] for d in doc_ids]

    @classmethod
    def load(cls, client: OpenSearch, index: str, model: Reranker,
             show_progress: bool = False) -> ArticleVectorCache:
        version = model.model_version
        versions = index_meta(client, index).get("model_versions", {})
        if version not in versions:
            known = ", ".join(f"{v['kind']} {k}" for k, v in versions.items()) or "none"
            raise RerankFailed(
                ReasonCode.NO_VECTORS,
                f"index {index!r} has no article vectors for {model.kind} {version} "
                f"(it has: {known}); run `lexrerank embed --index {index} --model {model.kind}`")
        entries: dict[str, tuple[ArticleSide, list[str]]] = {}
        docs = scan(client, index=index, query={"query": {"match_all": {}}},
                    _source=["sentences", f"vectors.{version}"], size=500)
        for doc in tqdm(docs, desc=f"loading vectors of {index}", unit="doc", file=sys.stderr,
                        disable=not show_progress):
            record = doc["_source"].get("vectors", {}).get(version)
            if record is not None:
                entries[doc["_id"]] = (article_side_from_record(model, record),
                                       doc["_source"].get("sentences") or [])
        return cls(index, version, entries)
