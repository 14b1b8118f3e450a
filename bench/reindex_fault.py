"""The ``reindex_kill`` fault of `lexrerank bench faults`: kill a reindex mid-way, re-run it.

A private Redis, a private gateway with its rerank worker (serving the configured index under
the steady load), and a separate ``embed`` worker (as production runs them). A
``lexrerank reindex`` job builds a fresh alias from the COLIEE civil code in small chunks;
once some chunks are embedded, the job and the embed worker are SIGKILLed together. A new
embed worker is started, the same command is run again (it resumes: loaded documents are not
reloaded, embedded ones not recomputed), and the alias's documents are counted against the
corpus: ``docs_lost`` = corpus articles - documents behind the alias (0 is the promise), with
``docs_without_vectors`` as well. The alias and its indexes are deleted afterwards.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from bench.services import PrivateRedis, Services, signal_group, spawn, wait_until
from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError
from lexrerank.redis_tls import redis_client

CHUNK_SIZE = 16
RERUN_TIMEOUT_S = 1800


def _corpus(logs: Path, articles: int | None) -> Path:
    """The COLIEE civil code, or a JSONL corpus of its first ``articles`` articles."""
    from indexer.parsers import parse_corpus

    path = get_settings().data_dir / "coliee" / "civil_code_en-1to724-2.txt"
    if not path.exists():
        raise LexrerankError(f"COLIEE civil code not found at {path}: set LEXRERANK_DATA")
    if articles is None:
        return path
    subset = logs / "reindex-corpus.jsonl"
    with subset.open("w") as out:
        for n, article in enumerate(parse_corpus(path)):
            if n == articles:
                break
            out.write(json.dumps({"id": article.doc_id, "text": article.text,
                                  "caption": article.caption,
                                  "sentences": list(article.sentences),
                                  "law_id": article.law_id,
                                  "article_id": article.article_id,
                                  "headings": article.headings}) + "\n")
    return subset


def reindex_kill(timing: Any, model: str, index: str, deadline_ms: int, texts: list[str],
                 logs: Path, articles: int | None = None) -> dict[str, Any]:
    """Run the fault (``timing``: :class:`bench.faults.Timing`) and report it; ``articles``
    limits the corpus to the civil code's first articles (None: all of it)."""
    from bench.faults import inject_under_load, wait_ok
    from bench.loadgen import search_requests
    from indexer.parsers import parse_corpus
    from lexrerank.opensearch_client import opensearch_client
    from lexrerank.reindex_progress import progress_key, read_progress
    from worker.celery_app import make_app

    corpus = _corpus(logs, articles)
    articles = sum(1 for _ in parse_corpus(corpus))
    tag = uuid.uuid4().hex[:8]
    alias = f"fault-reindex-{tag}"
    redis = PrivateRedis(logs)
    redis.start()
    services = Services(model, index, logs, prefix="faults-rx", env={
        "REDIS_URL": redis.url, "LEXRERANK_RERANK_TIMEOUT_MS": str(deadline_ms)})
    embed_env = {**services.env, "LEXRERANK_INDEX": alias}  # nothing to preload yet
    app = make_app(services.settings())
    embed: dict[str, subprocess.Popen] = {}
    client = opensearch_client(get_settings())

    def start_embed_worker() -> float:
        node = f"faults-embed-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        embed["proc"] = spawn([sys.executable, "-m", "lexrerank", "worker", "--hostname", node,
                               "--queues", services.embed_queue], embed_env,
                              logs / "embed-worker.log")
        # A control ping, not a task: a task would queue behind the job's pending chunks.
        return wait_until(lambda: _answers_ping(app, node), embed["proc"], "embed worker",
                          logs / "embed-worker.log")

    def reindex_job() -> subprocess.Popen:
        return spawn([sys.executable, "-m", "lexrerank", "reindex", "--alias", alias,
                      "--corpus", str(corpus), "--model", model, "--chunk-size",
                      str(CHUNK_SIZE), "--json"], services.env, logs / "reindex.log")

    progress_redis = redis_client(get_settings(), redis.url)
    at_kill: dict[str, Any] = {}
    rerun: dict[str, Any] = {}
    try:
        services.start()
        start_embed_worker()
        wait_ok(services.url, index, texts, deadline_ms, logs / "worker.log")
        job = reindex_job()

        def mid_embedding() -> bool:
            record = read_progress(progress_redis, alias) or {}
            return record.get("state") == "embedding" and record.get("chunks_done", 0) >= 1

        wait_until(mid_embedding, job, "reindex job (embedding)", logs / "reindex.log", 600)

        def inject() -> None:
            at_kill.update(read_progress(progress_redis, alias) or {})
            signal_group(job, signal.SIGKILL)
            signal_group(embed["proc"], signal.SIGKILL)

        def rerun_and_count() -> int:
            proc = reindex_job()
            try:
                proc.wait(timeout=RERUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                signal_group(proc, signal.SIGKILL)
            log = (logs / "reindex.log").read_text(errors="replace").splitlines()
            reports = [line for line in log if line.startswith("{")]
            rerun.update(returncode=proc.returncode,
                         report=json.loads(reports[-1]) if reports else None)
            client.indices.refresh(index=alias, ignore_unavailable=True)
            held = client.count(index=alias)["count"] if client.indices.exists(
                index=alias) else 0
            return articles - held

        requests = search_requests(services.url, index, texts, True, timeout_ms=deadline_ms)
        report = inject_under_load("reindex_kill", requests, timing, deadline_ms, inject,
                                   start_embed_worker, rerun_and_count)
        report.update(
            corpus_articles=articles,
            chunks_done_at_kill=at_kill.get("chunks_done"),
            chunks_total=at_kill.get("chunks_total"),
            rerun_returncode=rerun.get("returncode"),
            rerun_resumed=(rerun.get("report") or {}).get("resumed"),
            rerun_embedded=(rerun.get("report") or {}).get("embedded"),
            docs_without_vectors=_without_vectors(client, alias, model),
        )
        return report
    finally:
        signal_group(embed.get("proc"), signal.SIGTERM)
        services.stop()
        progress_redis.delete(progress_key(alias))
        redis.stop()
        client.indices.delete(index=f"{alias}-v*", ignore_unavailable=True,
                              allow_no_indices=True)


def _without_vectors(client: Any, alias: str, model: str) -> int | None:
    """Documents behind ``alias`` lacking ``model``'s current vectors (None: no alias)."""
    from indexer.embed_fanout import lacking_ids
    from reranker.checkpoint import read_config
    from reranker.registry import checkpoint_path

    if not client.indices.exists(index=alias):
        return None
    version = read_config(checkpoint_path(model)).get("model_version")
    return len(lacking_ids(client, alias, version))


def _answers_ping(app: Any, node: str) -> bool:
    try:
        return bool(app.control.ping(destination=[node], timeout=0.5))
    except Exception:  # noqa: BLE001 - Redis hiccup or not up yet: not ready
        return False
