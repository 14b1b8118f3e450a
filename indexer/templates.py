"""Index settings and explicit mappings for statute indexes, one analysis chain per language.

English: Porter stemming and English stop words (the reference BM25 setup). Vietnamese: the
ICU tokenizer; Japanese: kuromoji (search mode, base forms, part-of-speech and stop filtering)
*and* overlapping character bigrams in the sub-field ``content.bigram``, searched together
(:data:`lexrerank.index_fields.FIRST_STAGE_FIELDS`): that pair measured best of the chains
compared by ``lexrerank bench japanese-bm25`` in every rolling-origin fold (docs/japanese.md).
ICU and kuromoji come from the ``lexrerank-analysis-intl`` plugin (or the official
analysis-icu / analysis-kuromoji plugins on a production cluster); where a cluster has
neither, the standard tokenizer (Vietnamese) and CJK bigrams alone (Japanese) stand in.
"""

from __future__ import annotations

from typing import Any

from lexrerank.index_fields import BIGRAM_FIELD, CONTENT_FIELD

LANGUAGES = ("en", "vi", "ja")
SCHEMA_VERSION = 1
_BIGRAM_ANALYZER = {"type": "custom", "tokenizer": "standard",
                    "filter": ["cjk_width", "lowercase", "cjk_bigram"]}


def _english() -> dict[str, Any]:
    return {
        "filter": {
            "english_stop": {"type": "stop", "stopwords": "_english_"},
            "english_possessive": {"type": "stemmer", "language": "possessive_english"},
        },
        "analyzer": {
            "statute": {
                "type": "custom",
                "tokenizer": "standard",
                "filter": ["english_possessive", "lowercase", "english_stop", "porter_stem"],
            }
        },
    }


def _vietnamese(icu: bool) -> dict[str, Any]:
    # Diacritics carry meaning in Vietnamese (ma / má / mã), so no accent folding.
    tokenizer = "icu_tokenizer" if icu else "standard"
    filters = ["icu_normalizer"] if icu else ["lowercase"]
    return {"analyzer": {"statute": {"type": "custom", "tokenizer": tokenizer,
                                     "filter": filters}}}


def _japanese(kuromoji: bool) -> dict[str, Any]:
    if kuromoji:
        return {
            "analyzer": {
                "statute": {
                    "type": "custom",
                    "tokenizer": "kuromoji_tokenizer",  # mode "search" by default
                    "filter": ["kuromoji_baseform", "kuromoji_part_of_speech", "cjk_width",
                               "ja_stop", "kuromoji_stemmer", "lowercase"],
                },
                "statute_bigram": _BIGRAM_ANALYZER,
            }
        }
    return {"analyzer": {"statute": _BIGRAM_ANALYZER}}


def analysis_for(language: str, plugins: set[str]) -> dict[str, Any]:
    """The ``analysis`` settings for ``language`` given the cluster's installed plugins."""
    intl = "lexrerank-analysis-intl" in plugins
    if language == "en":
        return _english()
    if language == "vi":
        return _vietnamese(icu=intl or "analysis-icu" in plugins)
    if language == "ja":
        return _japanese(kuromoji=intl or "analysis-kuromoji" in plugins)
    raise ValueError(f"unknown language {language!r}; choose one of {', '.join(LANGUAGES)}")


def index_body(language: str, plugins: set[str], replicas: int = 0) -> dict[str, Any]:
    """Settings + strict mappings for a new statute index."""
    text = {"type": "text", "analyzer": "statute"}
    heading = {"type": "text", "analyzer": "statute"}
    analysis = analysis_for(language, plugins)
    content: dict[str, Any] = dict(text)
    if "statute_bigram" in analysis["analyzer"]:
        content["fields"] = {BIGRAM_FIELD.split(".")[1]: {"type": "text",
                                                          "analyzer": "statute_bigram"}}
    return {
        "settings": {
            "index": {
                "number_of_shards": 1,
                "number_of_replicas": replicas,
                # Lucene BM25 with the reference parameters, stated so nobody has to guess.
                "similarity": {"default": {"type": "BM25", "k1": 1.2, "b": 0.75}},
            },
            "analysis": analysis,
        },
        "mappings": {
            "dynamic": "strict",
            "_meta": {"lexrerank": {"schema": SCHEMA_VERSION, "language": language}},
            "properties": {
                "doc_id": {"type": "keyword"},
                "law_id": {"type": "keyword"},
                "article_id": {"type": "keyword"},
                "language": {"type": "keyword"},
                "caption": {**text, "copy_to": CONTENT_FIELD},
                "text": {**text, "copy_to": CONTENT_FIELD},
                CONTENT_FIELD: content,
                "headings": {
                    "properties": {
                        level: heading
                        for level in ("law", "part", "chapter", "section", "subsection",
                                      "division")
                    }
                },
                # The reranker's units; kept for display and embedding, not searched.
                "sentences": {"type": "text", "index": False},
                # Article-side model vectors (one entry per model version), opaque to search.
                "vectors": {"type": "object", "enabled": False},
            },
        },
    }
