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
    return _ReindexKill(model, index, deadline_ms, logs, _corpus(logs, articles)).run(
        timing, texts)


class _ReindexKill:
    """The fault's services and the steps it takes (see the module docstring)."""

    def __init__(self, model: str, index: str, deadline_ms: int, logs: Path,
                 corpus: Path) -> None:
        from indexer.parsers import parse_corpus
        from lexrerank.opensearch_client import opensearch_client
        from worker.celery_app import make_app

        self.model, self.index, self.deadline_ms, self.logs = model, index, deadline_ms, logs
        self.corpus = corpus
        self.articles = sum(1 for _ in parse_corpus(corpus))
        self.alias = f"fault-reindex-{uuid.uuid4().hex[:8]}"
        self.redis = PrivateRedis(logs)
        self.redis.start()
        self.services = Services(model, index, logs, prefix="faults-rx", env={
            "REDIS_URL": self.redis.url, "LEXRERANK_RERANK_TIMEOUT_MS": str(deadline_ms)})
        self.embed_env = {**self.services.env, "LEXRERANK_INDEX": self.alias}  # no preload yet
        self.app = make_app(self.services.settings())
        self.embed: subprocess.Popen | None = None
        self.job: subprocess.Popen | None = None
        self.client = opensearch_client(get_settings())
        self.progress_redis = redis_client(get_settings(), self.redis.url)
        self.at_kill: dict[str, Any] = {}
        self.rerun: dict[str, Any] = {}

    def run(self, timing: Any, texts: list[str]) -> dict[str, Any]:
        """Start everything, kill the job mid-embedding under load, re-run, count; clean up."""
        from bench.faults import inject_under_load, wait_ok
        from bench.loadgen import search_requests

        try:
            self.services.start()
            self.start_embed_worker()
            wait_ok(self.services.url, self.index, texts, self.deadline_ms,
                    self.logs / "worker.log")
            self.job = self.reindex_job()
            wait_until(self.mid_embedding, self.job, "reindex job (embedding)",
                       self.logs / "reindex.log", 600)
            requests = search_requests(self.services.url, self.index, texts, True,
                                       timeout_ms=self.deadline_ms)
            report = inject_under_load("reindex_kill", requests, timing, self.deadline_ms,
                                       self.inject, self.start_embed_worker,
                                       self.rerun_and_count)
            report.update(
                corpus_articles=self.articles,
                chunks_done_at_kill=self.at_kill.get("chunks_done"),
                chunks_total=self.at_kill.get("chunks_total"),
                rerun_returncode=self.rerun.get("returncode"),
                rerun_resumed=(self.rerun.get("report") or {}).get("resumed"),
                rerun_embedded=(self.rerun.get("report") or {}).get("embedded"),
                docs_without_vectors=_without_vectors(self.client, self.alias, self.model),
            )
            return report
        finally:
            self.stop()

    def start_embed_worker(self) -> float:
        node = f"faults-embed-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        self.embed = spawn([sys.executable, "-m", "lexrerank", "worker", "--hostname", node,
                            "--queues", self.services.embed_queue], self.embed_env,
                           self.logs / "embed-worker.log")
        # A control ping, not a task: a task would queue behind the job's pending chunks.
        return wait_until(lambda: _answers_ping(self.app, node), self.embed, "embed worker",
                          self.logs / "embed-worker.log")

    def reindex_job(self) -> subprocess.Popen:
        return spawn([sys.executable, "-m", "lexrerank", "reindex", "--alias", self.alias,
                      "--corpus", str(self.corpus), "--model", self.model, "--chunk-size",
                      str(CHUNK_SIZE), "--json"], self.services.env, self.logs / "reindex.log")

    def mid_embedding(self) -> bool:
        from lexrerank.reindex_progress import read_progress

        record = read_progress(self.progress_redis, self.alias) or {}
        return record.get("state") == "embedding" and record.get("chunks_done", 0) >= 1

    def inject(self) -> None:
        """SIGKILL the job and the embed worker together."""
        from lexrerank.reindex_progress import read_progress

        self.at_kill.update(read_progress(self.progress_redis, self.alias) or {})
        signal_group(self.job, signal.SIGKILL)
        signal_group(self.embed, signal.SIGKILL)

    def rerun_and_count(self) -> int:
        """Run the same command again; the corpus articles missing behind the alias."""
        proc = self.reindex_job()
        try:
            proc.wait(timeout=RERUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
        log = (self.logs / "reindex.log").read_text(errors="replace").splitlines()
        reports = [line for line in log if line.startswith("{")]
        self.rerun.update(returncode=proc.returncode,
                          report=json.loads(reports[-1]) if reports else None)
        self.client.indices.refresh(index=self.alias, ignore_unavailable=True)
        held = self.client.count(index=self.alias)["count"] if self.client.indices.exists(
            index=self.alias) else 0
        return self.articles - held

    def stop(self) -> None:
        from lexrerank.reindex_progress import progress_key

        signal_group(self.embed, signal.SIGTERM)
        self.services.stop()
        self.progress_redis.delete(progress_key(self.alias))
        self.redis.stop()
        self.client.indices.delete(index=f"{self.alias}-v*", ignore_unavailable=True,
                                   allow_no_indices=True)


def _without_vectors(client: Any, alias: str, model: str) -> int | None:
    """Documents behind ``alias`` lacking the vectors ``model`` has on the configured encoder
    backend (its served version, what the job's embed workers write; None: no alias)."""
    from indexer.embed_fanout import lacking_ids
    from indexer.reindex_inputs import ModelSpec

    if not client.indices.exists(index=alias):
        return None
    settings = get_settings()
    spec = ModelSpec.from_checkpoint(model, model_dir=settings.model_dir,
                                     backend=settings.encoder_backend)
    return len(lacking_ids(client, alias, spec.model_version))


def _answers_ping(app: Any, node: str) -> bool:
    try:
        return bool(app.control.ping(destination=[node], timeout=0.5))
    except Exception:  # noqa: BLE001 - Redis hiccup or not up yet: not ready
        return False
