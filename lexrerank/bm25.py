"""The lexical first stage as the CLI, evaluation, training and benchmarks run it: BM25 over
caption + body of a statute index.

The gateway does not use this module: it forwards the client's own query to OpenSearch.
:func:`bm25_body` is the query an OpenSearch client sends for a statute search (the CLI's
``--via-gateway`` path and the load benchmarks send it through the gateway);
:func:`bm25_response` and :func:`search_bm25` run it directly against OpenSearch.

Query text is only ever used as text to match (a ``multi_match`` over
:data:`lexrerank.index_fields.FIRST_STAGE_FIELDS`), never as query syntax; only its first
``MAX_QUERY_WORDS`` words, and of those the first ``MAX_QUERY_CHARS`` characters, are searched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError

from lexrerank.errors import LexrerankError
from lexrerank.index_fields import FIRST_STAGE_FIELDS

SOURCE_FIELDS = ["doc_id", "law_id", "article_id", "caption", "text", "sentences", "headings"]
# A match query makes one clause per analysed term and Lucene refuses more than 1024
# (indices.query.bool.max_clause_count): longer queries are cut to their first words.
MAX_QUERY_WORDS = 512
# Japanese has no spaces: one "word" may be a whole paragraph, and its character bigrams are
# one clause each. The longest COLIEE query has 847 characters (English), 294 (Japanese).
MAX_QUERY_CHARS = 1000


@dataclass(frozen=True)
class Hit:
    doc_id: str
    score: float
    source: dict[str, Any]


def bm25_body(query_text: str, size: int) -> dict[str, Any]:
    """The OpenSearch request body of a first-stage BM25 search."""
    return {
        "size": size,
        "query": {"multi_match": {"query": query_text, "fields": list(FIRST_STAGE_FIELDS),
                                  "type": "most_fields"}},
        "_source": SOURCE_FIELDS,
    }


def bm25_response(client: OpenSearch, index: str, query_text: str, size: int = 100
                  ) -> dict[str, Any]:
    """OpenSearch's whole ``_search`` response for the top ``size`` BM25 hits, best first.

    Raises :class:`LexrerankError` for an empty query or a missing index.
    """
    if not query_text.strip():
        raise LexrerankError("the query is empty: give some text to search for")
    query_text = " ".join(query_text.split()[:MAX_QUERY_WORDS])[:MAX_QUERY_CHARS]
    try:
        return client.search(index=index, body=bm25_body(query_text, size))
    except NotFoundError as exc:
        raise LexrerankError(f"index {index!r} does not exist: create it with "
                             f"`lexrerank index --corpus PATH --index {index}`") from exc


def search_bm25(client: OpenSearch, index: str, query_text: str, size: int = 100) -> list[Hit]:
    """Top ``size`` BM25 hits for ``query_text``, best first (errors: :func:`bm25_response`)."""
    resp = bm25_response(client, index, query_text, size)
    return [Hit(h["_id"], float(h["_score"]), h["_source"]) for h in resp["hits"]["hits"]]
