"""The batch reindex job: a new versioned index, vectors fanned out to workers, one alias swap.

``run_reindex`` builds ``<alias>-v<N>`` from a corpus and moves the alias onto it:

1. validate the whole corpus (a malformed file fails here, ``file:line: reason``, before any
   index is created) and hash it (sha256);
2. pick the index: resume the newest version when it is unfinished and was started from the
   same corpus checksum and models; otherwise create ``v<highest + 1>`` with 0 replicas and
   ``refresh_interval: -1`` (a bulk load's conventions on a multi-node cluster);
3. bulk-load it (:func:`indexer.bulk_load.load_articles`; skipped on resume once loaded: a
   bulk ``index`` would drop stored vectors);
4. fan the article-side vectors out to the ``embed`` queue: one ``lexrerank.embed`` task per
   chunk of ids still lacking each model version (a Celery group), with a progress bar;
5. verify: document count == the corpus's, every document holds every model's vectors;
6. restore replicas and refresh interval, wait for the shards, record the job in the index's
   ``_meta.lexrerank.reindex`` and the versions in ``_meta.lexrerank.model_versions``;
7. warm the rerank workers (``lexrerank.warm``: each process loads the new index's vectors);
8. swap the alias in one ``_aliases`` call; prune old versions beyond ``keep``.

Any failure before step 8 leaves the alias where it was and the index marked ``failed``;
re-running continues: loaded documents are not reloaded and embedded ones not recomputed.
Progress goes to Redis (:mod:`lexrerank.reindex_progress`) for ops, and to stderr.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from celery import Celery, group
from opensearchpy import OpenSearch
from opensearchpy.helpers import scan
from redis import Redis
from tqdm import tqdm

from indexer.aliases import (
    alias_targets,
    check_alias_name,
    is_concrete_index,
    swap_alias,
    version_name,
    version_of,
    versioned_indexes,
)
from indexer.article_vectors import index_meta
from indexer.articles import Article
from indexer.bulk_load import cluster_plugins, load_articles
from indexer.templates import index_body
from lexrerank.config import Settings
from lexrerank.errors import LexrerankError
from lexrerank.redis_tls import redis_client
from lexrerank.reindex_progress import new_record, write_progress

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 200
POLL_S = 0.5
# Meta states of a versioned index. Only "swapped" ones ever served; others may be resumed.
DONE_STATES = ("swapped", "rolled_back")


@dataclass(frozen=True)
class ModelSpec:
    """A model as the job records it: read from its checkpoint config, never loaded here."""

    name: str  # what workers are asked to load (a shipped name or a checkpoint directory)
    kind: str
    model_version: str
    encoder: str | None
    encoder_fingerprint: str | None
    weights_sha256: str | None

    @classmethod
    def from_checkpoint(cls, name: str, language: str | None = None) -> ModelSpec:
        from reranker.checkpoint import read_config
        from reranker.registry import checkpoint_path

        config = read_config(checkpoint_path(name, language))
        if not config.get("model_version") or not config.get("kind"):
            raise LexrerankError(f"checkpoint of {name!r} records no kind/model_version; "
                                 "re-save it with `lexrerank train`")
        return cls(name, config["kind"], config["model_version"], config.get("encoder"),
                   config.get("encoder_fingerprint"), config.get("weights_sha256"))


@dataclass
class ReindexOptions:
    """What to build. ``models``: names or checkpoint dirs the embed workers may load."""

    alias: str
    corpus: Path
    models: list[str]
    fmt: str | None = None
    language: str | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    keep: int | None = None  # versions to keep (live one included); None: keep all
    replicas: int | None = None  # after loading; None: the live index's, else 0
    migrate: bool = False  # replace a concrete index named like the alias
    stall_timeout_s: float = 600.0  # fail when no embed chunk finishes for this long
    warm_timeout_s: float = 300.0
    show_progress: bool = True


@dataclass
class ReindexReport:
    alias: str
    index: str
    previous: list[str]
    resumed: bool
    documents: int
    sentences: int
    loaded: int  # documents bulk-loaded by this run (0 when the load was done before)
    embedded: int  # (document, model) vectors computed by this run
    chunks_total: int
    chunks_failed: int
    pruned: list[str] = field(default_factory=list)
    warmed: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    bulk_docs_per_s: float | None = None
    up_to_date: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Source:
    path: str
    sha256: str
    fmt: str | None
    language: str
    articles: int
    sentences: int
    # doc id -> characters of its longest sentence: chunks group articles of similar length
    # (the encoder pads each batch to its longest sentence). Not recorded in the index.
    longest: dict[str, int] = field(default_factory=dict, repr=False)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def validate_corpus(path: Path, articles: Callable[[], Iterable[Article]],
                    language: str | None) -> _Source:
    """Parse the whole corpus once (raising ``file:line: reason`` on the first bad record)."""
    longest: dict[str, int] = {}
    sentences = 0
    first_language = None
    for article in articles():
        if article.doc_id in longest:
            raise LexrerankError(f"{path}: duplicate article id {article.doc_id!r}; ids must "
                                 "be unique")
        longest[article.doc_id] = max((len(s) for s in article.sentences), default=0)
        sentences += len(article.sentences)
        first_language = first_language or article.language
    if not longest:
        raise LexrerankError(f"{path}: the corpus holds no live articles; nothing to index")
    return _Source(str(path.resolve()), file_sha256(path), None,
                   language or first_language or "en", len(longest), sentences, longest)


def _update_meta(client: OpenSearch, index: str, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into ``_meta.lexrerank`` of ``index`` (``reindex`` merged one level)."""
    meta = index_meta(client, index)
    if "reindex" in changes:
        changes["reindex"] = {**meta.get("reindex", {}), **changes["reindex"]}
    meta = {**meta, **changes}
    client.indices.put_mapping(index=index, body={"_meta": {"lexrerank": meta}})
    return meta


def lacking_ids(client: OpenSearch, index: str, version: str) -> list[str]:
    """Ids of the documents of ``index`` holding no vectors of ``version``."""
    field_name = f"vectors.{version}.model_version"
    docs = scan(client, index=index, query={"query": {"match_all": {}}},
                _source=[field_name], size=1000)
    return [d["_id"] for d in docs
            if ((d.get("_source") or {}).get("vectors") or {}).get(version) is None]


def _chunks(ids: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


class ReindexJob:
    """One run of the job; see the module docstring for the steps."""

    def __init__(self, client: OpenSearch, settings: Settings, options: ReindexOptions,
                 celery_app: Celery | None = None, redis: Redis | None = None) -> None:
        from worker.celery_app import make_app

        self.client = client
        self.settings = settings
        self.opts = options
        self.app = celery_app or make_app(settings)
        self.redis = redis or redis_client(settings, socket_connect_timeout=2, socket_timeout=5)
        self.record: dict[str, Any] | None = None
        self.seconds: dict[str, float] = {}

    # ------------------------------------------------------------------ progress
    def _progress(self, **fields: Any) -> None:
        if self.record is None:
            return
        self.record.update(fields)
        try:
            write_progress(self.redis, self.record)
        except Exception as exc:  # noqa: BLE001 - progress for ops must not fail the job
            log.warning("cannot write progress to Redis: %s", exc)

    # ------------------------------------------------------------------ main
    def run(self) -> ReindexReport:
        from indexer.parsers import parse_corpus

        opts = self.opts
        check_alias_name(opts.alias)
        if opts.chunk_size < 1:
            raise LexrerankError("--chunk-size must be at least 1")
        if opts.keep is not None and opts.keep < 1:
            raise LexrerankError("--keep must be at least 1 (the live index)")
        if not opts.models:
            raise LexrerankError("name at least one --model")

        def articles() -> Iterable[Article]:
            return parse_corpus(opts.corpus, opts.fmt, opts.language)

        start = time.monotonic()
        source = validate_corpus(Path(opts.corpus), articles, opts.language)
        source.fmt = opts.fmt
        self.seconds["validate"] = time.monotonic() - start
        # The models trained for the corpus' language; an ensemble needs its members' vectors.
        from reranker.registry import member_names

        names = [m for name in opts.models for m in member_names(name, source.language)]
        models = [ModelSpec.from_checkpoint(m, source.language) for m in dict.fromkeys(names)]

        migrate_from = None
        if is_concrete_index(self.client, opts.alias):
            if not opts.migrate:
                raise LexrerankError(
                    f"{opts.alias!r} is an index (made by `lexrerank index`), not an alias. "
                    "Re-run with --migrate to build a versioned index and replace that index "
                    "by an alias of the same name in one atomic call (the old index is "
                    "deleted by that call, so there is nothing to roll back to), or choose "
                    "another --alias and point your clients at it")
            migrate_from = opts.alias
        live = alias_targets(self.client, opts.alias)
        index, version_meta, resumed = self._choose_index(source, models, live)
        if index is None:
            report = self._up_to_date(live[0], source)
            if opts.keep:
                report.pruned = prune_versions(self.client, opts.alias, opts.keep)
            return report
        self.record = new_record(opts.alias, index, [m.name for m in models])
        self.record["documents_total"] = source.articles
        try:
            return self._build(index, version_meta, resumed, source, models, live,
                               migrate_from, articles)
        except BaseException as exc:
            message = str(exc) or type(exc).__name__
            self._progress(state="failed", error=message, eta_s=None)
            try:
                if self.client.indices.exists(index=index):
                    _update_meta(self.client, index, reindex={"state": "failed",
                                                              "error": message,
                                                              "failed_at": _now_iso()})
            except Exception as meta_exc:  # noqa: BLE001 - report the original failure
                log.warning("cannot mark %s failed: %s", index, meta_exc)
            raise

    def _choose_index(self, source: _Source, models: list[ModelSpec], live: list[str]
                      ) -> tuple[str | None, dict[str, Any], bool]:
        """(index to build, its reindex meta, resumed?); index None: the live one is current."""
        versions = versioned_indexes(self.client, self.opts.alias)
        wanted = sorted(m.model_version for m in models)
        if versions:
            newest = versions[max(versions)]
            meta = index_meta(self.client, newest).get("reindex", {})
            same = (meta.get("source", {}).get("sha256") == source.sha256
                    and sorted(m["model_version"] for m in meta.get("models", [])) == wanted)
            if same and newest in live:
                return None, meta, False
            if same and meta.get("state") not in DONE_STATES and newest not in live:
                return newest, meta, True
        number = max(versions, default=0) + 1
        return version_name(self.opts.alias, number), {}, False

    def _up_to_date(self, index: str, source: _Source) -> ReindexReport:
        """The alias already serves this corpus and these models: nothing to build."""
        if index_meta(self.client, index).get("reindex", {}).get("state") == "ready":
            # A job killed between the swap and its last metadata write: finish the record.
            _update_meta(self.client, index, reindex={"state": "swapped",
                                                      "swapped_at": _now_iso()})
        docs = self.client.count(index=index)["count"]
        return ReindexReport(self.opts.alias, index, [], False, docs, source.sentences,
                             0, 0, 0, 0, seconds=self.seconds, up_to_date=True)

    def _build(self, index: str, meta: dict[str, Any], resumed: bool, source: _Source,
               models: list[ModelSpec], live: list[str], migrate_from: str | None,
               articles: Callable[[], Iterable[Article]]) -> ReindexReport:
        opts = self.opts
        previous = live or ([migrate_from] if migrate_from else [])
        job = {"alias": opts.alias, "version": version_of(opts.alias, index), "who": _who(),
               "started_at": meta.get("started_at") or _now_iso(),
               "source": {k: v for k, v in asdict(source).items() if k != "longest"},
               "models": [asdict(m) for m in models], "previous": previous}
        if not resumed:
            self._create(index, source.language, job)
        else:
            _update_meta(self.client, index, reindex={"state": meta.get("state"),
                                                      "resumed_at": _now_iso(),
                                                      "resumed_by": job["who"]})
        # 3. bulk load (once: a re-load would replace documents and drop their vectors)
        loaded = 0
        bulk_rate = None
        if not index_meta(self.client, index).get("reindex", {}).get("loaded"):
            self._progress(state="loading")
            report = load_articles(self.client, index, self._counting(articles),
                                   source.language, show_progress=opts.show_progress)
            loaded = report.indexed
            self.seconds["load"] = report.seconds
            bulk_rate = report.indexed / report.seconds if report.seconds else None
            _update_meta(self.client, index, reindex={"state": "embedding", "loaded": True})
        self._progress(state="embedding", documents_loaded=source.articles)
        # 4. embed fan-out
        start = time.monotonic()
        embedded, chunks_total, failed = self._embed(index, models, source.longest)
        self.seconds["embed"] = time.monotonic() - start
        # 5. verify
        self._progress(state="verifying", eta_s=None)
        start = time.monotonic()
        vectors = self._verify(index, source, models)
        self.seconds["verify"] = time.monotonic() - start
        # 6. serving settings back, job record
        start = time.monotonic()
        self._restore_settings(index, live or ([migrate_from] if migrate_from else []))
        self._record(index, models, vectors, job, chunks_total)
        self.seconds["settings"] = time.monotonic() - start
        # 7. warm the rerank workers, 8. swap
        start = time.monotonic()
        warmed = warm_workers(self.app, self.settings.rerank_queue, index,
                              [m.name for m in models], evict_prefix=f"{opts.alias}-v",
                              keep=[index, *previous], timeout_s=opts.warm_timeout_s)
        self.seconds["warm"] = time.monotonic() - start
        start = time.monotonic()
        swap_alias(self.client, opts.alias, index, live, remove_index=migrate_from)
        self.seconds["swap"] = time.monotonic() - start
        _update_meta(self.client, index, reindex={"state": "swapped", "swapped_at": _now_iso(),
                                                  "error": None})
        self._progress(state="swapped", eta_s=0, error=None)
        pruned: list[str] = []
        if opts.keep:
            try:
                pruned = prune_versions(self.client, opts.alias, opts.keep)
            except Exception as exc:  # noqa: BLE001 - the new index serves; pruning can wait
                log.warning("pruning old versions of %s failed (re-run with --keep to "
                            "retry): %s", opts.alias, exc)
        return ReindexReport(opts.alias, index, previous, resumed, source.articles,
                             source.sentences, loaded, embedded, chunks_total, failed, pruned,
                             warmed, self.seconds, bulk_rate)

    def _create(self, index: str, language: str, job: dict[str, Any]) -> None:
        body = index_body(language, cluster_plugins(self.client), replicas=0)
        # Bulk-load conventions: no replica copies and no periodic refresh until verified.
        body["settings"]["index"]["refresh_interval"] = "-1"
        body["mappings"]["_meta"]["lexrerank"]["reindex"] = {**job, "state": "loading",
                                                             "loaded": False}
        self.client.indices.create(index=index, body=body)

    def _counting(self, articles: Callable[[], Iterable[Article]]
                  ) -> Callable[[], Iterable[Article]]:
        """``articles`` whose second pass (the load; the first validates) reports progress."""
        passes = {"n": 0}

        def factory() -> Iterator[Article]:
            passes["n"] += 1
            reporting = passes["n"] >= 2
            last = time.monotonic()
            for i, article in enumerate(articles(), start=1):
                if reporting and time.monotonic() - last > 1.0:
                    self._progress(documents_loaded=i)
                    last = time.monotonic()
                yield article

        return factory

    def _embed(self, index: str, models: list[ModelSpec], longest: dict[str, int]
               ) -> tuple[int, int, int]:
        """Fan chunks out to the embed queue and wait: (vectors computed, chunks, failed).

        Ids are ordered by their longest sentence before chunking: each chunk is encoded in
        one call, and batches of similar lengths waste little on padding (on CPU, chunks of
        200 in file order cost ~25% more encoder time than one sorted pass; sorted, ~3%).
        """
        from worker.celery_app import EMBED_TASK

        self.client.indices.refresh(index=index)  # refresh_interval is -1: see every doc
        signatures = []
        for model in models:
            pending = sorted(lacking_ids(self.client, index, model.model_version),
                             key=lambda doc_id: longest.get(doc_id, 0))
            for ids in _chunks(pending, self.opts.chunk_size):
                signatures.append(self.app.signature(
                    EMBED_TASK, args=(index, ids, model.name),
                    queue=self.settings.embed_queue))
        total = len(signatures)
        self._progress(chunks_total=total, chunks_done=0, chunks_failed=0)
        if not total:
            return 0, 0, 0
        result = group(signatures, app=self.app).apply_async()
        pending = dict(enumerate(result.results))
        done = failed = computed = 0
        errors: list[str] = []
        started = last_change = time.monotonic()
        with tqdm(total=total, unit="chunk", desc=f"embedding {index}", file=sys.stderr,
                  disable=not self.opts.show_progress) as bar:
            try:
                while pending:
                    finished = [i for i, r in pending.items() if r.ready()]
                    for i in finished:
                        res = pending.pop(i)
                        if res.successful():
                            computed += int((res.result or {}).get("computed", 0))
                        else:
                            failed += 1
                            if len(errors) < 3:
                                errors.append(str(res.result))
                        res.forget()
                        done += 1
                    if finished:
                        last_change = time.monotonic()
                        bar.update(len(finished))
                        bar.set_postfix(vectors=computed, failed=failed)
                        rate = done / (time.monotonic() - started)
                        self._progress(chunks_done=done - failed, chunks_failed=failed,
                                       eta_s=round((total - done) / rate, 1) if rate else None)
                    elif time.monotonic() - last_change > self.opts.stall_timeout_s:
                        raise LexrerankError(
                            f"no embed chunk finished in {self.opts.stall_timeout_s:.0f}s "
                            f"({len(pending)} of {total} pending): is a worker consuming "
                            f"queue {self.settings.embed_queue!r}? Start one "
                            "(`lexrerank worker`) and re-run: the job resumes")
                    if pending:
                        time.sleep(POLL_S)
            except BaseException:
                result.revoke()  # nobody will wait for them; a re-run sends what is missing
                raise
        if failed:
            raise LexrerankError(f"{failed} of {total} embed chunks failed (first: "
                                 f"{'; '.join(errors)}); the alias was not moved. Fix the "
                                 "cause and re-run: finished chunks are kept")
        return computed, total, failed

    def _verify(self, index: str, source: _Source, models: list[ModelSpec]) -> dict[str, int]:
        """Counts match the corpus and every document holds every model's vectors."""
        self.client.indices.refresh(index=index)
        count = self.client.count(index=index)["count"]
        if count != source.articles:
            raise LexrerankError(f"{index} holds {count} documents, the corpus {source.articles}"
                                 "; the alias was not moved. Re-run to resume")
        vectors = {}
        for model in models:
            missing = lacking_ids(self.client, index, model.model_version)
            if missing:
                raise LexrerankError(
                    f"{len(missing)} documents of {index} lack {model.kind} "
                    f"{model.model_version} vectors (e.g. {missing[0]!r}); the alias was not "
                    "moved. Re-run to resume")
            vectors[model.model_version] = count
        return vectors

    def _restore_settings(self, index: str, previous: list[str]) -> None:
        """Replicas (``--replicas``, else the live index's, else 0) and refresh back."""
        replicas, refresh = self.opts.replicas, None
        if previous:
            current = self.client.indices.get_settings(index=previous[0])
            settings = next(iter(current.values()))["settings"]["index"]
            if replicas is None:
                replicas = int(settings.get("number_of_replicas", 0))
            refresh = settings.get("refresh_interval")
        replicas = replicas or 0
        self.client.indices.put_settings(index=index, body={"index": {
            "number_of_replicas": replicas, "refresh_interval": refresh}})
        self.client.indices.refresh(index=index)
        data_nodes = int(self.client.cluster.health()["number_of_data_nodes"])
        # Green needs a node per copy; on a smaller cluster wait for the primaries only.
        status = "green" if data_nodes > replicas else "yellow"
        health = self.client.cluster.health(index=index, wait_for_status=status,
                                            params={"timeout": "120s"}, request_timeout=150)
        if health.get("timed_out"):
            raise LexrerankError(f"{index} did not reach {status} within 120s after setting "
                                 f"{replicas} replicas; the alias was not moved. Check the "
                                 "cluster and re-run")

    def _record(self, index: str, models: list[ModelSpec], vectors: dict[str, int],
                job: dict[str, Any], chunks: int) -> None:
        meta = index_meta(self.client, index)
        versions = dict(meta.get("model_versions", {}))
        for model in models:
            versions[model.model_version] = {"kind": model.kind, "encoder": model.encoder,
                                             "documents": vectors[model.model_version],
                                             "computed_at": _now_iso()}
        counts = {"documents": next(iter(vectors.values())), "vectors": vectors,
                  "chunks": chunks}
        _update_meta(self.client, index, model_versions=versions,
                     reindex={**job, "state": "ready", "verified_at": _now_iso(),
                              "counts": counts})


def warm_workers(app: Celery, queue: str, index: str, models: list[str],
                 evict_prefix: str | None = None, keep: list[str] | None = None,
                 timeout_s: float = 300.0) -> list[dict[str, Any]]:
    """Have every process consuming ``queue`` load ``models``' vectors of ``index``.

    The processes are listed with ``inspect`` (each worker's pool pids); warm tasks are sent
    until each pid has answered once (a busy process may take two in a row, so the missing
    ones get more). Returns the answers (pid, documents, load_ms, memory). Without workers
    nothing is warmed and the list is empty: searches fall back until one starts.
    """
    from worker.celery_app import WARM_TASK

    inspect = app.control.inspect(timeout=1.0)
    queues = inspect.active_queues() or {}
    nodes = [n for n, qs in queues.items() if any(q.get("name") == queue for q in qs)]
    stats = inspect.stats() or {}
    expected: set[int] = set()
    for node in nodes:
        info = stats.get(node, {})
        expected |= set(info.get("pool", {}).get("processes") or [info.get("pid")]) - {None}
    answers: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while expected - answers.keys() and time.monotonic() < deadline:
        sent = [app.send_task(WARM_TASK, args=[index, models, evict_prefix, keep], queue=queue,
                              expires=max(deadline - time.monotonic(), 1.0))
                for _ in range(len(expected - answers.keys()))]
        for res in sent:
            try:
                answer = res.get(timeout=max(deadline - time.monotonic(), 0.1))
            except Exception as exc:  # noqa: BLE001 - a warm failure means the swap waits
                if "TimeoutError" in type(exc).__name__:
                    break
                raise LexrerankError(f"a rerank worker could not load {index}: {exc}; the "
                                     "alias was not moved") from exc
            finally:
                res.forget()
            answers[answer["pid"]] = answer
    if expected - answers.keys():
        log.warning("warmed %d of %d rerank processes of %s within %.0fs", len(answers),
                    len(expected), index, timeout_s)
    return list(answers.values())


def prune_versions(client: OpenSearch, alias: str, keep: int) -> list[str]:
    """Delete ``alias``'s versions older than the live one, keeping ``keep`` in all.

    Kept: the live index, then the index it replaced (the rollback target), then the newest
    other complete versions. Deleted: the rest of the older ones, including rolled-back,
    failed and abandoned unfinished ones. Never an index the alias points at, nor a version
    newer than the live one (a job may be building it).
    """
    live = set(alias_targets(client, alias))
    versions = versioned_indexes(client, alias)
    live_numbers = [n for n, name in versions.items() if name in live]
    if not live_numbers:
        return []
    older = {n: name for n, name in versions.items() if n < min(live_numbers)}
    recorded = []
    for name in live:
        recorded += index_meta(client, name).get("reindex", {}).get("previous") or []
    complete = [name for n, name in sorted(older.items(), reverse=True)
                if index_meta(client, name).get("reindex", {}).get("state")
                in ("swapped", "ready")]
    preferred = [n for n in dict.fromkeys([*recorded, *complete]) if n in older.values()]
    kept = set(preferred[:max(keep - len(live), 0)])
    doomed = [name for name in older.values() if name not in kept]
    for name in doomed:
        client.indices.delete(index=name)
    return sorted(doomed)


def rollback(client: OpenSearch, settings: Settings, alias: str,
             celery_app: Celery | None = None, warm_timeout_s: float = 300.0
             ) -> tuple[str, str]:
    """Point ``alias`` back at its previous completed version, atomically: (from, to).

    "Previous" is the index the live one replaced (recorded in its job), when it still
    exists; else the newest complete version below the live one. The index rolled back from
    is kept and marked ``rolled_back``; a later reindex builds a new version above it.
    """
    from worker.celery_app import make_app

    check_alias_name(alias)
    live = alias_targets(client, alias)
    if len(live) != 1:
        raise LexrerankError(f"alias {alias!r} points at {len(live) or 'no'} indexes; "
                             "rollback needs it on exactly one versioned index")
    current = live[0]
    current_version = version_of(alias, current)
    if current_version is None:
        raise LexrerankError(f"alias {alias!r} points at {current}, not one of its versions "
                             f"({alias}-v<N>): nothing to roll back to")
    versions = versioned_indexes(client, alias)
    # The index the live one replaced, when it is still there; else the newest complete one.
    recorded = index_meta(client, current).get("reindex", {}).get("previous") or []
    candidates = [name for name in recorded if name in versions.values() and name != current]
    for number, name in sorted(versions.items(), reverse=True):
        if number < current_version and index_meta(client, name).get(
                "reindex", {}).get("state") in ("swapped", "ready"):
            candidates.append(name)
    if not candidates:
        raise LexrerankError(f"no complete version of {alias!r} older than {current} is left "
                             "(pruned with --keep?): nothing to roll back to")
    target = candidates[0]
    meta = index_meta(client, target)
    models = [m["name"] for m in meta.get("reindex", {}).get("models", [])]
    if models:
        warm_workers(celery_app or make_app(settings), settings.rerank_queue, target, models,
                     evict_prefix=f"{alias}-v", keep=[target, current],
                     timeout_s=warm_timeout_s)
    swap_alias(client, alias, target, [current])
    _update_meta(client, current, reindex={"state": "rolled_back",
                                           "rolled_back_at": _now_iso()})
    _update_meta(client, target, reindex={"state": "swapped", "swapped_at": _now_iso()})
    return current, target


def run_reindex(client: OpenSearch, settings: Settings, options: ReindexOptions,
                celery_app: Celery | None = None) -> ReindexReport:
    """Run one reindex job (see the module docstring); raises :class:`LexrerankError`."""
    return ReindexJob(client, settings, options, celery_app).run()
