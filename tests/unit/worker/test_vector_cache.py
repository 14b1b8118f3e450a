"""The worker's vector cache: byte budget, on-demand fill, versions, on-the-fly vectors.

The index is an in-memory stand-in for the few OpenSearch calls the cache makes (``mget``,
conditional ``update``, ``search``/``scroll`` for a warm, ``get_mapping``), with per-document
``_seq_no``; the model is the real dense reranker on the default encoder.
"""

from __future__ import annotations

import copy
import gc
import threading
import tracemalloc
from typing import Any

import numpy as np
import pytest
from opensearchpy.exceptions import ConflictError

from reranker.article_side import precompute_articles
from reranker.dense import DenseReranker
from worker.protocol import ReasonCode, RerankFailed
from worker.vector_cache import (
    ENTRY_OVERHEAD_BYTES,
    ArticleVectorCache,
    CachedArticle,
    VectorMemory,
    entry_bytes,
    gather,
    warm,
)

INDEX = "idx"


class FakeIndex:
    """Documents with OpenSearch's per-document versions, and a log of what was read."""

    def __init__(self, model_versions: list[str]) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.seq_no = -1
        self.meta = {"lexrerank": {"model_versions": {v: {"kind": "dense"}
                                                      for v in model_versions}}}
        self.sources_read: list[str] = []  # ids whose _source an mget returned
        self.versions_checked: list[str] = []  # ids an mget asked with _source: false
        self.mgets = 0
        self.updates: list[str] = []
        self.scrolls = 0
        self.indices = self

    # -- writes
    def put(self, doc_id: str, source: dict[str, Any]) -> None:
        self.seq_no += 1
        self.docs[doc_id] = {"_source": copy.deepcopy(source), "_seq_no": self.seq_no,
                             "_primary_term": 1}

    # -- the client's API, as the cache calls it
    def get_mapping(self, index: str) -> dict[str, Any]:
        return {index: {"mappings": {"_meta": self.meta}}}

    def mget(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        self.mgets += 1
        out = []
        for spec in body["docs"]:
            doc_id = spec["_id"]
            doc = self.docs.get(doc_id)
            if doc is None:
                out.append({"_id": doc_id, "found": False})
                continue
            hit = {"_id": doc_id, "found": True, "_seq_no": doc["_seq_no"],
                   "_primary_term": doc["_primary_term"]}
            if spec["_source"] is False:
                self.versions_checked.append(doc_id)
            else:
                self.sources_read.append(doc_id)
                hit["_source"] = _included(doc["_source"], spec["_source"]["includes"])
            out.append(hit)
        return {"docs": out}

    def update(self, index: str, id: str, body: dict[str, Any], if_primary_term: int,
               if_seq_no: int) -> dict[str, Any]:
        doc = self.docs[id]
        if (doc["_primary_term"], doc["_seq_no"]) != (if_primary_term, if_seq_no):
            raise ConflictError(409, "version_conflict_engine_exception", {})
        self.updates.append(id)
        source = copy.deepcopy(doc["_source"])
        source.setdefault("vectors", {}).update(body["doc"]["vectors"])
        self.put(id, source)
        return {"_id": id, "_seq_no": self.docs[id]["_seq_no"], "_primary_term": 1}

    def search(self, body: Any, scroll: str, size: int, _source: list[str],
               seq_no_primary_term: bool, **_: Any) -> dict[str, Any]:
        self.scrolls += 1
        hits = [{"_id": d, "_seq_no": doc["_seq_no"], "_primary_term": 1,
                 "_source": _included(doc["_source"], _source)}
                for d, doc in self.docs.items()]
        self._pages = [hits[i:i + size] for i in range(0, len(hits), size)]
        return self.scroll()

    def scroll(self, body: Any = None, **_: Any) -> dict[str, Any]:
        page = self._pages.pop(0) if self._pages else []
        return {"_scroll_id": "s", "_shards": {"total": 1, "successful": 1},
                "hits": {"hits": page}}

    def clear_scroll(self, **_: Any) -> None:
        pass


def _included(source: dict[str, Any], includes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in includes:
        head, _, tail = path.partition(".")
        if head not in source:
            continue
        if tail:
            if tail in source[head]:
                out.setdefault(head, {})[tail] = source[head][tail]
        else:
            out[head] = source[head]
    return out


@pytest.fixture(scope="module")
def model(encoder) -> DenseReranker:
    return DenseReranker(encoder, device="cpu")


ARTICLES = {f"a{i}": [f"Sentence {i} about the lease of a thing number {i}.",
                      f"The lessee pays rent {i} times."] for i in range(12)}


def embedded_index(model: DenseReranker, ids: list[str] | None = None) -> FakeIndex:
    """An index of ARTICLES, each with the model's stored vectors."""
    index = FakeIndex([model.model_version])
    ids = ids or list(ARTICLES)
    records = precompute_articles(model, [ARTICLES[d] for d in ids], captions=[None] * len(ids))
    for doc_id, record in zip(ids, records, strict=True):
        index.put(doc_id, {"sentences": ARTICLES[doc_id],
                           "vectors": {model.model_version: record}})
    return index


def cache_on(index: FakeIndex, model: DenseReranker, budget: int = 10**9,
             compute_max: int = 4) -> ArticleVectorCache:
    return ArticleVectorCache(INDEX, model, VectorMemory(budget), index, compute_max)


def test_a_rerank_reads_only_its_missing_candidates_in_one_mget(model) -> None:
    index = embedded_index(model)
    cache = cache_on(index, model)
    first = gather(index, INDEX, {"m": cache}, ["a1", "a2", "a3"])
    assert sorted(index.sources_read) == ["a1", "a2", "a3"] and index.mgets == 1
    assert first.stats.read == 3 and not first.stats.from_memory
    index.sources_read.clear()
    second = gather(index, INDEX, {"m": cache}, ["a2", "a3", "a4"])
    assert index.sources_read == ["a4"]  # a2, a3: only their versions were checked
    assert sorted(index.versions_checked) == ["a2", "a3"] and index.mgets == 2
    assert (second.stats.held, second.stats.read) == (2, 1)
    assert [e.sentences for e in second.entries["m"]] == [ARTICLES[d]
                                                          for d in ("a2", "a3", "a4")]
    assert index.scrolls == 0 and len(cache) == 4


def test_entries_are_in_candidate_order_and_score_as_the_stored_vectors(model) -> None:
    index = embedded_index(model)
    cache = cache_on(index, model)
    ids = ["a5", "a0", "a9"]
    got = gather(index, INDEX, {"m": cache}, ids).entries["m"]
    stored = [model_side(index, model, d) for d in ids]
    for entry, expected in zip(got, stored, strict=True):
        assert entry.side.dtype == np.float16  # kept as stored
        np.testing.assert_array_equal(entry.side, expected)


def model_side(index: FakeIndex, model: DenseReranker, doc_id: str) -> np.ndarray:
    from reranker.article_side import article_side_from_record

    record = index.docs[doc_id]["_source"]["vectors"][model.model_version]
    return np.asarray(article_side_from_record(model, record))


def test_a_changed_document_is_re_read_never_served_stale(model) -> None:
    index = embedded_index(model)
    cache = cache_on(index, model)
    gather(index, INDEX, {"m": cache}, ["a1", "a2"])
    new_text = ["The lease of a1 was rewritten."]
    record = precompute_articles(model, [new_text], captions=[None])[0]
    index.put("a1", {"sentences": new_text, "vectors": {model.model_version: record}})
    index.sources_read.clear()
    again = gather(index, INDEX, {"m": cache}, ["a1", "a2"])
    assert index.sources_read == ["a1"]  # only the changed one
    assert again.stats.stale == 1 and again.stats.read == 1
    assert again.entries["m"][0].sentences == new_text
    np.testing.assert_array_equal(again.entries["m"][0].side, model_side(index, model, "a1"))


def test_an_article_without_vectors_is_computed_stored_and_cached(model) -> None:
    index = embedded_index(model)
    cache = cache_on(index, model)
    gather(index, INDEX, {"m": cache}, ["a1"])
    index.put("new", {"sentences": ["A brand new article on mortgages."]})  # no vectors
    got = gather(index, INDEX, {"m": cache}, ["a1", "new"])
    assert got.stats.computed == 1 and got.stats.stored == 1
    assert index.updates == ["new"] and index.scrolls == 0
    stored = index.docs["new"]["_source"]["vectors"][model.model_version]
    assert stored["model_version"] == model.model_version
    np.testing.assert_array_equal(got.entries["m"][1].side, model_side(index, model, "new"))
    # Cached at the version the update wrote: the next rerank reads nothing.
    index.sources_read.clear()
    third = gather(index, INDEX, {"m": cache}, ["a1", "new"])
    assert third.stats.from_memory and index.sources_read == []


def test_a_document_written_meanwhile_keeps_its_own_vectors(model, monkeypatch) -> None:
    index = embedded_index(model)
    cache = cache_on(index, model)
    index.put("new", {"sentences": ["Text one."]})
    real_update = index.update

    def racing_update(**kwargs: Any) -> dict[str, Any]:
        index.put("new", {"sentences": ["Text two, indexed while the worker encoded."]})
        return real_update(**kwargs)

    monkeypatch.setattr(index, "update", racing_update)
    got = gather(index, INDEX, {"m": cache}, ["new"])
    assert got.stats.computed == 1 and got.stats.stored == 0  # the conflict lost nothing
    assert "vectors" not in index.docs["new"]["_source"]
    monkeypatch.setattr(index, "update", real_update)
    # The newer text is seen on the next rerank (its version moved) and encoded then.
    again = gather(index, INDEX, {"m": cache}, ["new"])
    assert again.stats.stale == 1 and again.stats.computed == 1
    assert again.entries["m"][0].sentences == ["Text two, indexed while the worker encoded."]


def test_more_lacking_candidates_than_compute_max_fail_no_vectors(model) -> None:
    index = embedded_index(model, ids=["a0"])
    for i in range(3):
        index.put(f"n{i}", {"sentences": [f"Unembedded {i}."]})
    cache = cache_on(index, model, compute_max=2)
    with pytest.raises(RerankFailed) as failed:
        gather(index, INDEX, {"m": cache}, ["a0", "n0", "n1", "n2"])
    assert failed.value.code == ReasonCode.NO_VECTORS
    assert "3 candidates" in str(failed.value) and "lexrerank embed" in str(failed.value)
    assert index.updates == []


def test_a_candidate_gone_from_the_index_is_no_vectors_unless_held(model) -> None:
    index = embedded_index(model)
    cache = cache_on(index, model)
    gather(index, INDEX, {"m": cache}, ["a1"])
    del index.docs["a1"], index.docs["a2"]
    with pytest.raises(RerankFailed, match="no longer in"):
        gather(index, INDEX, {"m": cache}, ["a2"])
    held = gather(index, INDEX, {"m": cache}, ["a1"])  # the window's copy serves it once
    assert held.entries["m"][0].sentences == ARTICLES["a1"]
    assert "a1" not in cache


def test_the_budget_evicts_least_recently_used_entries(model) -> None:
    index = embedded_index(model)
    probe = cache_on(index, model)
    one = gather(index, INDEX, {"m": probe}, ["a0"]).entries["m"][0].nbytes
    cache = cache_on(index, model, budget=3 * one + one // 2)  # room for three
    gather(index, INDEX, {"m": cache}, ["a0", "a1", "a2"])
    gather(index, INDEX, {"m": cache}, ["a0"])  # a0 is now the most recent
    gather(index, INDEX, {"m": cache}, ["a3"])
    assert "a1" not in cache and {"a0", "a2", "a3"} <= {d for d in ARTICLES if d in cache}
    assert len(cache) == 3 and cache.nbytes() <= cache.memory.budget_bytes
    assert cache.memory.evicted(cache.key) == 1
    # A window larger than the budget is still served whole (from the mget's copies).
    wide = gather(index, INDEX, {"m": cache}, list(ARTICLES))
    assert len(wide.entries["m"]) == len(ARTICLES) and len(cache) == 3


def test_a_warm_fills_up_to_the_budget_and_stops(model) -> None:
    index = embedded_index(model)
    probe = cache_on(index, model)
    one = gather(index, INDEX, {"m": probe}, ["a0"]).entries["m"][0].nbytes
    index.put("lacking", {"sentences": ["No vectors yet."]})
    full = cache_on(index, model)
    assert warm(index, INDEX, {"m": full}) == len(ARTICLES)  # "lacking" is left to reranks
    assert "lacking" not in full
    small = cache_on(index, model, budget=5 * one)
    assert warm(index, INDEX, {"m": small}) == 5
    assert len(small) == 5 and small.memory.evicted(small.key) == 0
    # Warmed entries carry their versions: a rerank of them reads nothing.
    held = [d for d in ARTICLES if d in small]
    index.sources_read.clear()
    assert gather(index, INDEX, {"m": small}, held).stats.from_memory
    assert index.sources_read == []


def test_an_in_memory_cache_refuses_missing_candidates(model) -> None:
    side = np.zeros(4, dtype=np.float16)
    cache = ArticleVectorCache.from_entries(INDEX, model, {"x": (side, ["s"])})
    assert cache.get(["x"])[0][1] == ["s"]
    with pytest.raises(RerankFailed) as failed:
        cache.get(["x", "y"])
    assert failed.value.code == ReasonCode.NO_VECTORS


def test_memory_is_thread_safe_and_keeps_its_accounting() -> None:
    memory = VectorMemory(200 * 1024)
    key = (INDEX, "v")
    side = np.zeros(64, dtype=np.float16)

    def fill(worker: int) -> None:
        for i in range(400):
            memory.store(key, {f"{worker}-{i % 50}": CachedArticle.of(side, ["s"], (1, i))})
            memory.lookup(key, [f"{worker}-{i % 7}"])

    threads = [threading.Thread(target=fill, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    articles, nbytes = memory.usage(key)
    one = entry_bytes(side, ["s"])
    assert nbytes == articles * one == memory.used_bytes <= memory.budget_bytes
    assert articles == min(200, (200 * 1024) // one)


def test_entry_bytes_bound_what_an_entry_really_holds(model) -> None:
    """The budget's estimate against tracemalloc: at least what 1,000 entries allocate."""
    index = embedded_index(model)
    cache = cache_on(index, model)
    gather(index, INDEX, {"m": cache}, list(ARTICLES))
    template = gather(index, INDEX, {"m": cache}, ["a0"]).entries["m"][0]
    memory = VectorMemory(10**9)
    gc.collect()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for i in range(1000):
        sentences = [s + f" {i}" for s in template.sentences]
        memory.store((INDEX, "v"), {f"doc-{i:06d}": CachedArticle.of(
            template.side.copy(), sentences, (1, i))})
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    real = (after - before) / 1000
    counted = memory.used_bytes / 1000
    assert real <= counted <= real + ENTRY_OVERHEAD_BYTES
