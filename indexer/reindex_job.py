"""The batch reindex job: a new versioned index, vectors fanned out to workers, one alias swap.

``run_reindex`` builds ``<alias>-v<N>`` from a corpus and moves the alias onto it:

1. validate the whole corpus (a malformed file fails here, ``file:line: reason``, before any
   index is created) and hash it (sha256) (:mod:`indexer.reindex_inputs`);
2. pick the index: resume the newest version when it is unfinished and was started from the
   same corpus checksum and models; otherwise create ``v<highest + 1>`` with 0 replicas and
   ``refresh_interval: -1`` (a bulk load's conventions on a multi-node cluster);
3. bulk-load it (:func:`indexer.bulk_load.load_articles`; skipped on resume once loaded: a
   bulk ``index`` would drop stored vectors);
4. fan the article-side vectors out to the ``embed`` queue: one ``lexrerank.embed`` task per
   chunk of ids still lacking each model version (a Celery group), with a progress bar
   (:mod:`indexer.embed_fanout`);
5. verify: document count == the corpus's, every document holds every model's vectors;
   then merge away the deleted copies the vector updates left (BM25 statistics count them;
   the index is closed and reopened to release them at once, nobody reads it yet), while it
   still has no replicas (:func:`indexer.article_vectors.expunge_deleted_copies`);
6. restore replicas and refresh interval, wait for the shards, record the job in the index's
   ``_meta.lexrerank.reindex`` (:mod:`indexer.reindex_meta`) and the versions in
   ``_meta.lexrerank.model_versions``;
7. warm the rerank workers (``lexrerank.warm``: each process loads the new index's vectors;
   :mod:`indexer.warm`);
8. swap the alias in one ``_aliases`` call; prune old versions beyond ``keep``
   (:mod:`indexer.prune`).

Any failure before step 8 leaves the alias where it was and the index marked ``failed``;
re-running continues: loaded documents are not reloaded and embedded ones not recomputed.
Progress goes to Redis (:mod:`lexrerank.reindex_progress`) for ops, and to stderr.
Rollback is :mod:`indexer.rollback`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from opensearchpy import OpenSearch
from redis import Redis

from indexer.aliases import (
    alias_targets,
    check_alias_name,
    is_concrete_index,
    swap_alias,
    version_name,
    version_of,
    versioned_indexes,
)
from indexer.article_vectors import expunge_deleted_copies, index_meta
from indexer.articles import Article
from indexer.bulk_load import cluster_plugins, load_articles
from indexer.embed_fanout import DEFAULT_CHUNK_SIZE, EmbedFanout, EmbedOutcome, lacking_ids
from indexer.prune import prune_versions
from indexer.reindex_inputs import CorpusSource, ModelSpec, job_models, validate_corpus
from indexer.reindex_meta import DONE_STATES, job_meta, now_iso, update_meta, who
from indexer.templates import index_body
from indexer.warm import warm_workers
from lexrerank.config import Settings
from lexrerank.errors import LexrerankError
from lexrerank.redis_tls import redis_client
from lexrerank.reindex_progress import new_record, write_progress

log = logging.getLogger(__name__)

ArticlesFn = Callable[[], Iterable[Article]]


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

    def check(self) -> None:
        """Raise :class:`LexrerankError` for options no job can run with."""
        check_alias_name(self.alias)
        if self.chunk_size < 1:
            raise LexrerankError("--chunk-size must be at least 1")
        if self.keep is not None and self.keep < 1:
            raise LexrerankError("--keep must be at least 1 (the live index)")
        if not self.models:
            raise LexrerankError("name at least one --model")


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
class _Target:
    """The index a run builds and what it knows of it."""

    index: str
    meta: dict[str, Any]  # its job record so far ({} for a new version)
    resumed: bool
    live: list[str]  # what the alias points at now
    migrate_from: str | None  # the concrete index named like the alias, replaced by the swap

    @property
    def previous(self) -> list[str]:
        """The indexes the swap takes the alias (or the name) from."""
        return self.live or ([self.migrate_from] if self.migrate_from else [])


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

    @contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        """Record the seconds the block took as ``seconds[step]`` of the report."""
        start = time.monotonic()
        yield
        self.seconds[step] = time.monotonic() - start

    # ------------------------------------------------------------------ main
    def run(self) -> ReindexReport:
        """Steps 1-8 of the module docstring; raises :class:`LexrerankError`."""
        from indexer.parsers import parse_corpus

        opts = self.opts
        opts.check()

        def articles() -> Iterable[Article]:
            return parse_corpus(opts.corpus, opts.fmt, opts.language)

        with self._timed("validate"):
            source = validate_corpus(Path(opts.corpus), articles, opts.language)
            source.fmt = opts.fmt
        # The models trained for the corpus' language; an ensemble needs its members' vectors.
        models = job_models(opts.models, source.language, self.settings.model_dir,
                            self.settings.encoder_backend)
        migrate_from = self._migrate_from()
        live = alias_targets(self.client, opts.alias)
        index, version_meta, resumed = self._choose_index(source, models, live)
        if index is None:
            report = self._up_to_date(live[0], source)
            if opts.keep:
                report.pruned = prune_versions(self.client, opts.alias, opts.keep)
            return report
        self.record = new_record(opts.alias, index, [m.name for m in models])
        self.record["documents_total"] = source.articles
        target = _Target(index, version_meta, resumed, live, migrate_from)
        try:
            return self._build(target, source, models, articles)
        except BaseException as exc:
            self._mark_failed(index, str(exc) or type(exc).__name__)
            raise

    def _migrate_from(self) -> str | None:
        """The concrete index named like the alias, when ``--migrate`` replaces it."""
        alias = self.opts.alias
        if not is_concrete_index(self.client, alias):
            return None
        if not self.opts.migrate:
            raise LexrerankError(
                f"{alias!r} is an index (made by `lexrerank index`), not an alias. "
                "Re-run with --migrate to build a versioned index and replace that index "
                "by an alias of the same name in one atomic call (the old index is "
                "deleted by that call, so there is nothing to roll back to), or choose "
                "another --alias and point your clients at it")
        return alias

    def _mark_failed(self, index: str, message: str) -> None:
        """Progress and job record say ``failed`` (never raising over the original error)."""
        self._progress(state="failed", error=message, eta_s=None)
        try:
            if self.client.indices.exists(index=index):
                update_meta(self.client, index, reindex={"state": "failed", "error": message,
                                                         "failed_at": now_iso()})
        except Exception as meta_exc:  # noqa: BLE001 - report the original failure
            log.warning("cannot mark %s failed: %s", index, meta_exc)

    def _choose_index(self, source: CorpusSource, models: list[ModelSpec], live: list[str]
                      ) -> tuple[str | None, dict[str, Any], bool]:
        """(index to build, its reindex meta, resumed?); index None: the live one is current."""
        versions = versioned_indexes(self.client, self.opts.alias)
        wanted = sorted(m.model_version for m in models)
        if versions:
            newest = versions[max(versions)]
            meta = job_meta(self.client, newest)
            same = (meta.get("source", {}).get("sha256") == source.sha256
                    and sorted(m["model_version"] for m in meta.get("models", [])) == wanted)
            if same and newest in live:
                return None, meta, False
            if same and meta.get("state") not in DONE_STATES and newest not in live:
                return newest, meta, True
        number = max(versions, default=0) + 1
        return version_name(self.opts.alias, number), {}, False

    def _up_to_date(self, index: str, source: CorpusSource) -> ReindexReport:
        """The alias already serves this corpus and these models: nothing to build."""
        if job_meta(self.client, index).get("state") == "ready":
            # A job killed between the swap and its last metadata write: finish the record.
            update_meta(self.client, index, reindex={"state": "swapped",
                                                     "swapped_at": now_iso()})
        docs = self.client.count(index=index)["count"]
        return ReindexReport(self.opts.alias, index, [], False, docs, source.sentences,
                             0, 0, 0, 0, seconds=self.seconds, up_to_date=True)

    # ------------------------------------------------------------------ steps 2-8
    def _build(self, target: _Target, source: CorpusSource, models: list[ModelSpec],
               articles: ArticlesFn) -> ReindexReport:
        index, previous = target.index, target.previous
        job = self._job(target, source, models)
        self._open(target, source, job)
        loaded, bulk_rate = self._load(index, source, articles)
        self._progress(state="embedding", documents_loaded=source.articles)
        with self._timed("embed"):
            embedded = self._embed(index, models, source.longest)
        self._progress(state="verifying", eta_s=None)
        with self._timed("verify"):
            vectors = self._verify(index, source, models)
        with self._timed("merge"):
            left = expunge_deleted_copies(self.client, index, serving=False)  # not live yet
            if left:
                log.warning("%s still holds %d deleted copies after expunging", index, left)
        with self._timed("settings"):
            self._restore_settings(index, previous)
            self._record(index, models, vectors, job, embedded.chunks)
        with self._timed("warm"):
            warmed = warm_workers(self.app, self.settings.rerank_queue, index,
                                  [m.name for m in models], evict_prefix=f"{self.opts.alias}-v",
                                  keep=[index, *previous], timeout_s=self.opts.warm_timeout_s)
        self._swap(target)
        pruned = self._prune()
        return ReindexReport(self.opts.alias, index, previous, target.resumed, source.articles,
                             source.sentences, loaded, embedded.computed, embedded.chunks,
                             embedded.failed, pruned, warmed, self.seconds, bulk_rate)

    def _job(self, target: _Target, source: CorpusSource, models: list[ModelSpec]
             ) -> dict[str, Any]:
        """The job record written into the index (``started_at`` kept on resume)."""
        return {"alias": self.opts.alias, "version": version_of(self.opts.alias, target.index),
                "who": who(), "started_at": target.meta.get("started_at") or now_iso(),
                "source": {k: v for k, v in asdict(source).items() if k != "longest"},
                "models": [asdict(m) for m in models], "previous": target.previous}

    def _open(self, target: _Target, source: CorpusSource, job: dict[str, Any]) -> None:
        """2. Create the new version, or record that this run resumes it."""
        if not target.resumed:
            self._create(target.index, source.language, job)
        else:
            update_meta(self.client, target.index,
                        reindex={"state": target.meta.get("state"), "resumed_at": now_iso(),
                                 "resumed_by": job["who"]})

    def _create(self, index: str, language: str, job: dict[str, Any]) -> None:
        body = index_body(language, cluster_plugins(self.client), replicas=0)
        # Bulk-load conventions: no replica copies and no periodic refresh until verified.
        body["settings"]["index"]["refresh_interval"] = "-1"
        body["mappings"]["_meta"]["lexrerank"]["reindex"] = {**job, "state": "loading",
                                                             "loaded": False}
        self.client.indices.create(index=index, body=body)

    def _load(self, index: str, source: CorpusSource, articles: ArticlesFn
              ) -> tuple[int, float | None]:
        """3. Bulk load, once (a killed load resumes: articles already held are not rewritten).

        Returns (documents loaded by this run, their docs/s); (0, None) when loaded before.
        """
        if job_meta(self.client, index).get("loaded"):
            return 0, None
        self._progress(state="loading")
        report = load_articles(self.client, index, self._counting(articles),
                               source.language, show_progress=self.opts.show_progress)
        self.seconds["load"] = report.seconds
        update_meta(self.client, index, reindex={"state": "embedding", "loaded": True})
        return report.indexed, report.indexed / report.seconds if report.seconds else None

    def _counting(self, articles: ArticlesFn) -> ArticlesFn:
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
               ) -> EmbedOutcome:
        """4. Fan the vectors out to the embed queue and wait (:mod:`indexer.embed_fanout`)."""
        fanout = EmbedFanout(self.client, self.app, self.settings.embed_queue,
                             chunk_size=self.opts.chunk_size,
                             stall_timeout_s=self.opts.stall_timeout_s,
                             show_progress=self.opts.show_progress, progress=self._progress)
        return fanout.run(index, models, longest)

    def _verify(self, index: str, source: CorpusSource, models: list[ModelSpec]
                ) -> dict[str, int]:
        """5. Counts match the corpus and every document holds every model's vectors."""
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
        """6. Replicas (``--replicas``, else the live index's, else 0) and refresh back."""
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
        """6. The model versions and the verified job (state ``ready``) into the index."""
        meta = index_meta(self.client, index)
        versions = dict(meta.get("model_versions", {}))
        for model in models:
            versions[model.model_version] = {"kind": model.kind, "encoder": model.encoder,
                                             "documents": vectors[model.model_version],
                                             "computed_at": now_iso()}
        counts = {"documents": next(iter(vectors.values())), "vectors": vectors,
                  "chunks": chunks}
        update_meta(self.client, index, model_versions=versions,
                    reindex={**job, "state": "ready", "verified_at": now_iso(),
                             "counts": counts})

    def _swap(self, target: _Target) -> None:
        """8. Move the alias in one call, then mark the index ``swapped``."""
        with self._timed("swap"):
            swap_alias(self.client, self.opts.alias, target.index, target.live,
                       remove_index=target.migrate_from)
        update_meta(self.client, target.index, reindex={"state": "swapped",
                                                        "swapped_at": now_iso(),
                                                        "error": None})
        self._progress(state="swapped", eta_s=0, error=None)

    def _prune(self) -> list[str]:
        """8. With ``--keep``, delete old versions; a failure only warns (the swap is done)."""
        if not self.opts.keep:
            return []
        try:
            return prune_versions(self.client, self.opts.alias, self.opts.keep)
        except Exception as exc:  # noqa: BLE001 - the new index serves; pruning can wait
            log.warning("pruning old versions of %s failed (re-run with --keep to retry): %s",
                        self.opts.alias, exc)
            return []


def run_reindex(client: OpenSearch, settings: Settings, options: ReindexOptions,
                celery_app: Celery | None = None) -> ReindexReport:
    """Run one reindex job (see the module docstring); raises :class:`LexrerankError`."""
    return ReindexJob(client, settings, options, celery_app).run()
