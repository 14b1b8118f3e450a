"""Article-side vectors in worker memory: a per-process byte budget, filled on demand.

A worker process holds one :class:`VectorMemory`: every cached article of every (index,
model version) it serves, least recently used evicted first, within a byte budget
(``LEXRERANK_VECTOR_CACHE_MB``). An :class:`ArticleVectorCache` is the view of one (index,
model version) on it. A rerank :func:`gather` s its window's vectors:

- the candidates already in memory are *validated* and the missing ones *read*, in one
  ``mget`` of the window (``_source: false`` for the held ones, the sentences, caption and
  ``vectors.<model_version>`` of each member for the others);
- an entry is current when the document's version (``_primary_term``, ``_seq_no``) is the
  one it was read at: any write to the document (new text, new vectors) moves ``_seq_no``,
  so a stale entry is re-read (one more ``mget`` of those documents only), never served;
- a candidate whose document holds no vectors of the model version yet (an article added
  since the index was embedded) gets them computed here by the loaded model, used, stored
  with the document (an update conditioned on the version read, so a newer write wins) and
  cached: at most ``compute_max`` per rerank, beyond that the rerank fails ``no_vectors``.

Nothing ever reloads an index: the only full read is :func:`warm` (a ``scan`` that stops
when this index's entries fill the budget), run at start-up and by a reindex before its
alias swap.

Vectors are kept as stored (fp16), decoded by :func:`reranker.article_side.
article_side_from_record`, which refuses a record of another model version: the cache is
keyed by model version, so a query is never scored against another version's vectors. An
index whose metadata does not list the model's version is refused at once
(:func:`check_index_versions`, a :class:`worker.protocol.RerankFailed` ``no_vectors``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConflictError, TransportError
from opensearchpy.helpers import scan
from tqdm import tqdm

from indexer.article_vectors import index_meta
from reranker.article_side import ArticleSide, article_side_from_record, precompute_articles
from reranker.types import Reranker
from worker.protocol import ReasonCode, RerankFailed

log = logging.getLogger(__name__)

DocVersion = tuple[int, int]  # (_primary_term, _seq_no) of the document when it was read
# Bytes an entry costs beyond its arrays and sentence strings: the key tuple and doc id,
# the LRU's node, the entry object, the ndarray headers and the sentence list (about 0.5
# KiB, measured with tracemalloc in tests/unit/worker/test_vector_cache.py).
ENTRY_OVERHEAD_BYTES = 640
WARM_PAGE = 500  # documents per scroll page of a warm
MIB = 2**20


def array_bytes(side: Any) -> int:
    """Bytes of the array data of one article side (an ndarray, or a record of ndarrays)."""
    if hasattr(side, "nbytes"):
        return int(side.nbytes)
    return sum(int(getattr(v, "nbytes", 0)) for v in vars(side).values())


def vector_bytes(entries: Iterable[tuple[Any, Sequence[str]]]) -> int:
    """Array bytes of cache entries ``(article side, sentences)``: ndarrays or their fields."""
    return sum(array_bytes(side) for side, _sentences in entries)


def entry_bytes(side: ArticleSide, sentences: Sequence[str]) -> int:
    """What one cached article counts against the budget: arrays, sentence strings, overhead.

    An upper bound of what it holds: members of an ensemble read from one document share
    its sentence list, which each of their entries counts.
    """
    return (array_bytes(side) + sum(sys.getsizeof(s) for s in sentences)
            + sys.getsizeof(sentences) + ENTRY_OVERHEAD_BYTES)


@dataclass(frozen=True, slots=True)
class CachedArticle:
    """One article's side for one model version, its sentences, and where it was read."""

    side: ArticleSide
    sentences: list[str]
    version: DocVersion | None  # None: not read from an index (in-memory caches)
    nbytes: int

    @classmethod
    def of(cls, side: ArticleSide, sentences: list[str], version: DocVersion | None
           ) -> CachedArticle:
        return cls(side, sentences, version, entry_bytes(side, sentences))


CacheKey = tuple[str, str]  # (index, model version)


class VectorMemory:
    """Every cached article of this process, within ``budget_bytes``; thread-safe.

    Least recently used entries (looked up or stored longest ago) are evicted first, across
    all (index, model version) pairs. An entry larger than the whole budget is not kept.
    """

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 1:
            raise ValueError("the vector cache budget must be at least one byte")
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str, str], CachedArticle] = OrderedDict()
        self._usage: dict[CacheKey, list[int]] = {}  # -> [articles, bytes]
        self._evicted: dict[CacheKey, int] = {}  # entries evicted so far, per pair
        self._used = 0

    @property
    def used_bytes(self) -> int:
        return self._used

    def room(self) -> int:
        """Bytes left before storing evicts anything."""
        return self.budget_bytes - self._used

    def usage(self, key: CacheKey) -> tuple[int, int]:
        """(articles, bytes) held for ``key``."""
        with self._lock:
            articles, nbytes = self._usage.get(key, (0, 0))
        return articles, nbytes

    def evicted(self, key: CacheKey) -> int:
        """Entries of ``key`` evicted for the budget since this memory was made."""
        return self._evicted.get(key, 0)

    def holds(self, key: CacheKey, doc_id: str) -> bool:
        return (*key, doc_id) in self._entries

    def lookup(self, key: CacheKey, doc_ids: Iterable[str]) -> dict[str, CachedArticle]:
        """The entries of ``doc_ids`` held for ``key`` (marked as just used)."""
        out: dict[str, CachedArticle] = {}
        with self._lock:
            for doc_id in doc_ids:
                entry = self._entries.get((*key, doc_id))
                if entry is not None:
                    self._entries.move_to_end((*key, doc_id))
                    out[doc_id] = entry
        return out

    def store(self, key: CacheKey, entries: Mapping[str, CachedArticle]) -> None:
        """Hold ``entries`` (replacing older ones of the same ids), evicting the least
        recently used entries until the budget holds."""
        with self._lock:
            for doc_id, entry in entries.items():
                self._pop((*key, doc_id))
                if entry.nbytes > self.budget_bytes:
                    continue
                self._entries[(*key, doc_id)] = entry
                self._account(key, 1, entry.nbytes)
            while self._used > self.budget_bytes and self._entries:
                (index, version, _), old = self._entries.popitem(last=False)
                self._account((index, version), -1, -old.nbytes)
                self._evicted[(index, version)] = self._evicted.get((index, version), 0) + 1

    def discard(self, key: CacheKey, doc_ids: Iterable[str]) -> None:
        with self._lock:
            for doc_id in doc_ids:
                self._pop((*key, doc_id))

    def drop_index(self, index: str) -> None:
        """Forget every entry of ``index`` (all model versions)."""
        with self._lock:
            for full_key in [k for k in self._entries if k[0] == index]:
                self._pop(full_key)
            for key in [k for k in self._usage if k[0] == index]:
                del self._usage[key]

    def _pop(self, full_key: tuple[str, str, str]) -> None:
        old = self._entries.pop(full_key, None)
        if old is not None:
            self._account(full_key[:2], -1, -old.nbytes)

    def _account(self, key: CacheKey, articles: int, nbytes: int) -> None:
        usage = self._usage.setdefault(key, [0, 0])
        usage[0] += articles
        usage[1] += nbytes
        self._used += nbytes


class ArticleVectorCache:
    """The cached articles of one (index, model version): a view on a :class:`VectorMemory`.

    ``client`` is where missing articles are read from; without one (an in-memory cache,
    :meth:`from_entries`) a missing candidate is a ``no_vectors`` failure.
    """

    def __init__(self, index: str, model: Reranker, memory: VectorMemory,
                 client: OpenSearch | None = None, compute_max: int = 0) -> None:
        self.index = index
        self.model = model
        self.model_version = model.model_version
        self.memory = memory
        self.client = client
        self.compute_max = compute_max

    @property
    def key(self) -> CacheKey:
        return (self.index, self.model_version)

    def __len__(self) -> int:
        return self.memory.usage(self.key)[0]

    def __contains__(self, doc_id: str) -> bool:
        return self.memory.holds(self.key, doc_id)

    def nbytes(self) -> int:
        """Bytes held, as the budget counts them (:func:`entry_bytes`)."""
        return self.memory.usage(self.key)[1]

    def get(self, doc_ids: Sequence[str]) -> list[tuple[ArticleSide, list[str]]]:
        """(side, sentences) of each of ``doc_ids``, in order, read or computed if missing."""
        entries = gather(self.client, self.index, {"": self}, doc_ids).entries[""]
        return [(e.side, e.sentences) for e in entries]

    @classmethod
    def from_entries(cls, index: str, model: Reranker,
                     entries: Mapping[str, tuple[ArticleSide, list[str]]]
                     ) -> ArticleVectorCache:
        """An in-memory cache of exactly ``entries`` (doc id -> (side, sentences))."""
        held = {d: CachedArticle.of(side, list(sentences), None)
                for d, (side, sentences) in entries.items()}
        cache = cls(index, model, VectorMemory(max(sum(e.nbytes for e in held.values()), 1)))
        cache.memory.store(cache.key, held)
        return cache

    @classmethod
    def load(cls, client: OpenSearch, index: str, model: Reranker,
             show_progress: bool = False, budget_bytes: int | None = None
             ) -> ArticleVectorCache:
        """A cache of its own, warmed with the index (all of it without ``budget_bytes``)."""
        check_index_versions(client, index, [model])
        cache = cls(index, model, VectorMemory(budget_bytes or sys.maxsize), client)
        warm(client, index, {"": cache}, show_progress=show_progress)
        return cache


def check_index_versions(client: OpenSearch, index: str, models: Iterable[Reranker]) -> None:
    """Raise ``no_vectors`` unless the index metadata lists every model's version."""
    versions = index_meta(client, index).get("model_versions", {})
    for model in models:
        if model.model_version not in versions:
            known = ", ".join(f"{v['kind']} {k}" for k, v in versions.items()) or "none"
            raise RerankFailed(
                ReasonCode.NO_VECTORS,
                f"index {index!r} has no article vectors for {model.kind} "
                f"{model.model_version} (it has: {known}); run `lexrerank embed --index "
                f"{index} --model {model.kind}`")


# --------------------------------------------------------------------------------- gather

@dataclass
class GatherStats:
    """What one :func:`gather` did (documents, not entries: one per ensemble document)."""

    requested: int = 0
    held: int = 0  # in memory and current
    read: int = 0  # sources read from OpenSearch (missing or stale)
    stale: int = 0  # held, but the document had changed since
    computed: int = 0  # vectors computed here (the document had none of a member's version)
    stored: int = 0  # of those, written back to the document

    @property
    def from_memory(self) -> bool:
        """Every candidate was served from memory (nothing read, nothing computed)."""
        return self.read == 0 and self.computed == 0


@dataclass
class Gathered:
    """The window's entries per member (in candidate order) and what it took."""

    entries: dict[str, list[CachedArticle]]
    stats: GatherStats = field(default_factory=GatherStats)


def _version(doc: Mapping[str, Any]) -> DocVersion | None:
    if "_seq_no" not in doc or "_primary_term" not in doc:
        return None
    return int(doc["_primary_term"]), int(doc["_seq_no"])


def _source_fields(caches: Mapping[str, ArticleVectorCache]) -> list[str]:
    return ["sentences", "caption",
            *dict.fromkeys(f"vectors.{c.model_version}" for c in caches.values())]


def _mget(client: OpenSearch, index: str, check: Sequence[str], read: Sequence[str],
          fields: list[str]) -> dict[str, dict[str, Any]]:
    """One ``mget``: the versions of ``check``, versions and ``fields`` of ``read``."""
    docs = ([{"_id": d, "_source": False} for d in check]
            + [{"_id": d, "_source": {"includes": fields}} for d in read])
    if not docs:
        return {}
    resp = client.mget(index=index, body={"docs": docs})
    return {doc["_id"]: doc for doc in resp["docs"]}


def gather(client: OpenSearch | None, index: str, caches: Mapping[str, ArticleVectorCache],
           doc_ids: Sequence[str], compute_max: int | None = None) -> Gathered:
    """The current entries of ``doc_ids`` for every member cache (see the module docstring).

    ``caches`` maps member names to caches of the same ``index``; all of them are filled
    from one ``mget``. Returns them in ``doc_ids`` order. Raises
    :class:`worker.protocol.RerankFailed` (``no_vectors``) for a candidate that is in no
    cache and cannot be read (no client, or the document is gone), or when more than
    ``compute_max`` (default: the caches') candidates hold no vectors.
    """
    if compute_max is None:
        compute_max = min(c.compute_max for c in caches.values())
    unique = list(dict.fromkeys(doc_ids))
    stats = GatherStats(requested=len(unique))
    held = {m: c.memory.lookup(c.key, unique) for m, c in caches.items()}
    complete = [d for d in unique if all(d in held[m] for m in caches)]
    complete_set = set(complete)
    missing = [d for d in unique if d not in complete_set]
    if client is None:
        if missing:
            raise _no_vectors(index, caches, missing)
        stats.held = len(complete)
        return Gathered({m: [held[m][d] for d in doc_ids] for m in caches}, stats)
    fields = _source_fields(caches)
    current = _mget(client, index, complete, missing, fields)
    stale = [d for d in complete if current.get(d, {}).get("found")
             and any(held[m][d].version != _version(current[d]) for m in caches)]
    gone = [d for d in unique if not current.get(d, {}).get("found")]
    if stale:  # re-read the documents that changed since they were cached
        current.update(_mget(client, index, [], stale, fields))
    stats.stale = len(stale)
    fresh = _fresh_entries(client, index, caches, [*missing, *stale], current, compute_max,
                           stats)
    for m, cache in caches.items():
        cache.memory.store(cache.key, fresh[m])
        cache.memory.discard(cache.key, [d for d in gone if d in held[m]])
    unreadable = [d for d in gone if d in missing]
    if unreadable:
        raise RerankFailed(ReasonCode.NO_VECTORS,
                           f"{len(unreadable)} candidates are no longer in {index!r} (e.g. "
                           f"{unreadable[0]!r}): deleted after the first stage")
    stats.held = len(unique) - len(missing) - len(stale)
    # Held documents deleted since the first stage are served as cached (this window only).
    merged = {m: {**held[m], **fresh[m]} for m in caches}
    return Gathered({m: [merged[m][d] for d in doc_ids] for m in caches}, stats)


def _no_vectors(index: str, caches: Mapping[str, ArticleVectorCache], ids: Sequence[str],
                detail: str = "") -> RerankFailed:
    versions = ", ".join(sorted({c.model_version for c in caches.values()}))
    return RerankFailed(ReasonCode.NO_VECTORS,
                        f"{len(ids)} candidates of {index!r} have no vectors for model "
                        f"{versions} (e.g. {ids[0]!r}){detail}; run `lexrerank embed`")


def _fresh_entries(client: OpenSearch, index: str, caches: Mapping[str, ArticleVectorCache],
                   doc_ids: Sequence[str], current: Mapping[str, Mapping[str, Any]],
                   compute_max: int, stats: GatherStats) -> dict[str, dict[str, CachedArticle]]:
    """Entries for the documents just read: decoded, or computed (and stored) when lacking."""
    fresh: dict[str, dict[str, CachedArticle]] = {m: {} for m in caches}
    lacking: list[str] = []
    for doc_id in doc_ids:
        doc = current.get(doc_id, {})
        if not doc.get("found"):
            continue
        stats.read += 1
        source = doc.get("_source") or {}
        sentences = list(source.get("sentences") or [])
        vectors = source.get("vectors") or {}
        version = _version(doc)
        if any(c.model_version not in vectors for c in caches.values()):
            lacking.append(doc_id)
            continue
        for m, cache in caches.items():
            fresh[m][doc_id] = CachedArticle.of(
                article_side_from_record(cache.model, vectors[cache.model_version]),
                sentences, version)
    if lacking:
        if len(lacking) > compute_max:
            raise _no_vectors(index, caches, lacking,
                              f": more than the {compute_max} a rerank computes itself")
        _compute(client, index, caches, lacking, current, fresh, stats)
    return fresh


def _compute(client: OpenSearch, index: str, caches: Mapping[str, ArticleVectorCache],
             doc_ids: Sequence[str], current: Mapping[str, Mapping[str, Any]],
             fresh: dict[str, dict[str, CachedArticle]], stats: GatherStats) -> None:
    """Compute the missing members' vectors of ``doc_ids`` with the loaded models, store
    them with each document (if it has not changed since it was read) and add the entries
    to ``fresh``."""
    sources = {d: current[d].get("_source") or {} for d in doc_ids}
    empty = [d for d in doc_ids if not sources[d].get("sentences")]
    if empty:
        raise _no_vectors(index, caches, empty, ": the article has no sentences to encode")
    sentences = {d: list(sources[d]["sentences"]) for d in doc_ids}
    records: dict[str, dict[str, Any]] = {d: {} for d in doc_ids}  # doc -> version -> record
    for cache in {c.model_version: c for c in caches.values()}.values():
        todo = [d for d in doc_ids
                if cache.model_version not in (sources[d].get("vectors") or {})]
        if not todo:
            continue
        made = precompute_articles(cache.model, [sentences[d] for d in todo],
                                   captions=[sources[d].get("caption") for d in todo])
        for doc_id, record in zip(todo, made, strict=True):
            records[doc_id][cache.model_version] = record
    for doc_id in doc_ids:
        version = _store(client, index, doc_id, records[doc_id], _version(current[doc_id]))
        stats.computed += 1
        stats.stored += version != _version(current[doc_id])
        stored = sources[doc_id].get("vectors") or {}
        for m, cache in caches.items():
            record = records[doc_id].get(cache.model_version) or stored[cache.model_version]
            fresh[m][doc_id] = CachedArticle.of(article_side_from_record(cache.model, record),
                                                sentences[doc_id], version)


def _store(client: OpenSearch, index: str, doc_id: str, records: Mapping[str, Any],
           read_at: DocVersion | None) -> DocVersion | None:
    """Write ``records`` into the document's ``vectors`` if it is still at ``read_at``; the
    document's new version, or ``read_at`` when it was not written (changed meanwhile, or a
    cluster that refuses the write: the vectors still serve this process)."""
    if read_at is None:
        return None
    try:
        resp = client.update(index=index, id=doc_id, body={"doc": {"vectors": records}},
                             if_primary_term=read_at[0], if_seq_no=read_at[1])
    except ConflictError:
        return read_at  # written meanwhile: the next rerank sees a new version and re-reads
    except TransportError as exc:
        log.warning("could not store the computed vectors of %s in %s: %s", doc_id, index,
                    exc)
        return read_at
    return _version(resp) or read_at


# ----------------------------------------------------------------------------------- warm

def warm(client: OpenSearch, index: str, caches: Mapping[str, ArticleVectorCache],
         show_progress: bool = False) -> int:
    """Fill ``caches`` from a scan of ``index``, stopping once its entries fill the budget.

    Documents lacking a member's vectors are skipped (a rerank computes them on demand).
    Returns the documents cached. The caches must share one :class:`VectorMemory`.
    """
    memories = {id(c.memory): c.memory for c in caches.values()}
    if len(memories) != 1:
        raise ValueError("warm needs caches on one VectorMemory")
    (memory,) = memories.values()
    fields = _source_fields(caches)
    warmed_bytes = warmed = 0
    docs = scan(client, index=index, query={"query": {"match_all": {}}}, _source=fields,
                size=WARM_PAGE, seq_no_primary_term=True)
    with contextlib.closing(docs), tqdm(desc=f"warming vectors of {index}", unit="doc",
                                        file=sys.stderr, disable=not show_progress) as bar:
        page: dict[str, dict[str, CachedArticle]] = {m: {} for m in caches}
        for doc in docs:
            entries = _decoded(caches, doc)
            if entries is None:
                continue
            size = sum(e.nbytes for e in entries.values())
            if warmed_bytes + size > memory.budget_bytes:
                break  # more would evict what this warm just cached
            warmed_bytes += size
            warmed += 1
            for m, entry in entries.items():
                page[m][doc["_id"]] = entry
            if len(page[next(iter(caches))]) >= WARM_PAGE:
                _store_page(caches, page)
                bar.update(WARM_PAGE)
        _store_page(caches, page)
    return warmed


def _decoded(caches: Mapping[str, ArticleVectorCache], doc: Mapping[str, Any]
             ) -> dict[str, CachedArticle] | None:
    source = doc.get("_source") or {}
    vectors = source.get("vectors") or {}
    if any(c.model_version not in vectors for c in caches.values()):
        return None
    sentences = list(source.get("sentences") or [])
    version = _version(doc)
    return {m: CachedArticle.of(article_side_from_record(c.model, vectors[c.model_version]),
                                sentences, version) for m, c in caches.items()}


def _store_page(caches: Mapping[str, ArticleVectorCache],
                page: dict[str, dict[str, CachedArticle]]) -> None:
    for m, cache in caches.items():
        cache.memory.store(cache.key, page[m])
        page[m] = {}
