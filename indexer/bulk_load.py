"""Create a statute index and bulk-load articles into it with opensearch-py's streaming helper.

The corpus is validated in full before the first write, so a malformed file never touches the
live index; document ids are the articles' stable ids, so re-running a load is idempotent.
An article the index already holds exactly as parsed is not written again: writing replaces
the whole document, so it would drop the article vectors stored with it (of every model
version) and make every worker read it again, for nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.helpers import streaming_bulk
from tqdm import tqdm

from indexer.articles import Article
from indexer.templates import index_body
from lexrerank.errors import LexrerankError


@dataclass
class LoadReport:
    index: str
    created: bool
    articles: int
    indexed: int  # written now: new or changed
    failed: int
    seconds: float
    unchanged: int = 0  # already held exactly as parsed: not written, vectors kept


def cluster_plugins(client: OpenSearch) -> set[str]:
    """Names of the analysis plugins installed on every node of the cluster."""
    rows = client.cat.plugins(format="json")
    return {row["component"] for row in rows}


def index_language(client: OpenSearch, index: str) -> str | None:
    """The language recorded in an existing index's mapping metadata, or None if absent."""
    if not client.indices.exists(index=index):
        return None
    mapping = client.indices.get_mapping(index=index)
    for body in mapping.values():
        meta = body["mappings"].get("_meta", {}).get("lexrerank", {})
        if "language" in meta:
            return meta["language"]
    raise LexrerankError(f"index {index!r} exists but was not created by lexrerank; "
                         "choose another --index")


def ensure_index(client: OpenSearch, index: str, language: str, replicas: int = 0) -> bool:
    """Create ``index`` for ``language`` unless it exists; True if created now."""
    existing = index_language(client, index)
    if existing is not None:
        if existing != language:
            raise LexrerankError(
                f"index {index!r} holds {existing!r} articles, not {language!r}: "
                "use another --index, or --language " + existing)
        return False
    client.indices.create(index=index, body=index_body(language, cluster_plugins(client),
                                                       replicas))
    return True


def bulk_actions(index: str, articles: Iterable[Article]) -> Iterator[dict[str, Any]]:
    for article in articles:
        yield {"_op_type": "index", "_index": index, "_id": article.doc_id,
               "_source": article.to_source()}


def held_as_parsed(client: OpenSearch, index: str, articles: Iterable[Article],
                   chunk_size: int = 500) -> Iterator[tuple[Article, bool]]:
    """Each article, with whether ``index`` already holds its document with this exact
    source (stored vectors aside): one ``mget`` per ``chunk_size`` articles."""
    def compared(chunk: list[Article]) -> Iterator[tuple[Article, bool]]:
        resp = client.mget(index=index, body={"ids": [a.doc_id for a in chunk]},
                           _source_excludes=["vectors"])
        stored = {d["_id"]: d.get("_source") for d in resp["docs"] if d.get("found")}
        for article in chunk:
            yield article, stored.get(article.doc_id) == article.to_source()

    chunk: list[Article] = []
    for article in articles:
        chunk.append(article)
        if len(chunk) == chunk_size:
            yield from compared(chunk)
            chunk = []
    if chunk:
        yield from compared(chunk)


def load_articles(
    client: OpenSearch,
    index: str,
    articles: Callable[[], Iterable[Article]],
    language: str,
    chunk_size: int = 500,
    show_progress: bool = True,
) -> LoadReport:
    """Validate the corpus, then stream it into ``index`` (created if missing).

    ``articles`` is a factory that yields the corpus anew each call: one pass validates and
    counts (a parse error raises before anything is written), a second one loads the
    articles that are new or changed (:func:`held_as_parsed`); the others keep their
    documents, and the vectors stored with them.
    """
    start = time.monotonic()
    total = 0
    seen: set[str] = set()
    for article in articles():
        if article.doc_id in seen:
            raise LexrerankError(f"duplicate article id {article.doc_id!r} in the corpus")
        seen.add(article.doc_id)
        total += 1
    if total == 0:
        raise LexrerankError("the corpus holds no live articles; nothing was indexed")

    created = ensure_index(client, index, language)
    indexed = failed = unchanged = 0
    errors: list[str] = []
    with tqdm(total=total, unit="doc", desc=f"indexing {index}", file=sys.stderr,
              disable=not show_progress) as bar:
        def to_write() -> Iterator[Article]:
            nonlocal unchanged
            if created:  # nothing to compare with
                yield from articles()
                return
            for article, same in held_as_parsed(client, index, articles(), chunk_size):
                if same:
                    unchanged += 1
                    bar.update(1)
                else:
                    yield article

        # streaming_bulk retries 429 (rejected execution) with exponential back-off.
        for ok, item in streaming_bulk(client, bulk_actions(index, to_write()),
                                       chunk_size=chunk_size, max_retries=5,
                                       initial_backoff=1, raise_on_error=False):
            if ok:
                indexed += 1
            else:
                failed += 1
                if len(errors) < 5:
                    errors.append(str(item))
            bar.update(1)
    client.indices.refresh(index=index)
    if failed:
        raise LexrerankError(f"{failed} of {total} articles failed to index into {index!r}; "
                             f"first errors: {'; '.join(errors)}")
    return LoadReport(index, created, total, indexed, failed, time.monotonic() - start,
                      unchanged)
