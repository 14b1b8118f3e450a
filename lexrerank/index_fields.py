"""Field names of a statute index that both its writer and its readers rely on.

:mod:`indexer.templates` maps them (``caption`` and ``text`` are copied into
:data:`CONTENT_FIELD`; Japanese indexes add the bigram sub-field); the first-stage query
(:mod:`lexrerank.bm25`, the search page of the gateway) searches :data:`FIRST_STAGE_FIELDS`.
Renaming one is a schema change: existing indexes would need a reindex.
"""

from __future__ import annotations

# Fields the first stage searches: caption and body together, as one BM25 document.
CONTENT_FIELD = "content"
# Japanese only: the same text as character bigrams, scored beside kuromoji's words.
BIGRAM_FIELD = f"{CONTENT_FIELD}.bigram"
#: What the first stage queries (a ``most_fields`` multi_match: the scores add up). Indexes
#: without the bigram sub-field (English, Vietnamese) simply have no hits in it.
FIRST_STAGE_FIELDS = (CONTENT_FIELD, BIGRAM_FIELD)
