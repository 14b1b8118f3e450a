"""What the quality protocol reads: a corpus from its index, query sets, BM25 windows.

Everything comes from the real first stage: the statute index in OpenSearch, searched with
the same BM25 query `lexrerank search` and `eval` run (:func:`lexrerank.bm25.search_bm25`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opensearchpy import OpenSearch
from opensearchpy.helpers import scan
from tqdm import tqdm

from lexrerank.bm25 import search_bm25
from reranker.datasets import Query, read_queries
from reranker.training import TrainingExample

WINDOW = 100
HARD_DEPTH = 50


@dataclass(frozen=True)
class CorpusArticle:
    caption: str
    text: str
    sentences: tuple[str, ...]

    @property
    def passage(self) -> str:
        """What a bi-encoder reads of the article: caption and body, as BM25 does."""
        return f"{self.caption} {self.text}".strip()


@dataclass(frozen=True)
class Window:
    """One query's first-stage window: candidate ids and BM25 scores (best first), gold."""

    qid: str
    doc_ids: tuple[str, ...]
    bm25: tuple[float, ...]
    gold: tuple[str, ...]


def read_corpus(client: OpenSearch, index: str) -> dict[str, CorpusArticle]:
    """doc id -> article, for every document of ``index`` (one scan)."""
    out = {}
    for doc in scan(client, index=index, query={"query": {"match_all": {}}},
                    _source=["caption", "text", "sentences"], size=1000):
        src = doc["_source"]
        out[doc["_id"]] = CorpusArticle(src.get("caption") or "", src.get("text") or "",
                                        tuple(src.get("sentences") or ()))
    return out


#: language -> (folder under the data directory, file suffix) of the COLIEE query files.
COLIEE_QUERY_FILES = {"en": ("coliee", "en"), "ja": ("coliee-ja", "jp")}


def coliee_by_year(data_dir: Path, language: str = "en") -> dict[str, list[Query]]:
    """COLIEE query sets per year: ``coliee/train/riteval_<YEAR>_en.xml`` for English,
    ``coliee-ja/train/riteval_<YEAR>_jp.xml`` for Japanese (pairs without gold skipped)."""
    from bench.quality_folds import COLIEE_YEARS

    folder, suffix = COLIEE_QUERY_FILES[language]
    train = data_dir / folder / "train"
    return {year: read_queries([train / f"riteval_{year}_{suffix}.xml"])
            for year in COLIEE_YEARS if (train / f"riteval_{year}_{suffix}.xml").is_file()}


def bm25_windows(client: OpenSearch, index: str, queries: Sequence[Query],
                 depth: int = WINDOW) -> dict[str, Window]:
    """The first stage of every query: its top ``depth`` BM25 hits."""
    out = {}
    for q in tqdm(queries, desc=f"BM25 {index}", unit="q", file=sys.stderr):
        hits = search_bm25(client, index, q.text, depth)
        out[q.qid] = Window(q.qid, tuple(h.doc_id for h in hits),
                            tuple(h.score for h in hits), q.gold)
    return out


def training_examples(queries: Sequence[Query], windows: dict[str, Window],
                      corpus: dict[str, CorpusArticle], hard_depth: int = HARD_DEPTH
                      ) -> list[TrainingExample]:
    """Training queries with their gold (those in the corpus) and BM25 hard negatives."""
    out = []
    for q in queries:
        positives = [g for g in q.gold if g in corpus]
        if not positives:
            continue
        gold = set(q.gold)
        negatives = [d for d in windows[q.qid].doc_ids[:hard_depth] if d not in gold]
        out.append(TrainingExample(q.text, positives, negatives, qid=q.qid))
    return out
