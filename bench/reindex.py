"""`lexrerank bench reindex`: a reindex job at scale, through real workers, against bare encode.

1. Generates a scale corpus (JSONL) from the COLIEE civil code: article ``i`` takes the caption
   of a random civil-code article and as many sentences as that article has, each drawn at
   random from all the code's sentences (seeded, so runs are comparable).
2. Starts a private worker (prefork, ``--concurrency`` processes, one torch thread each, the
   workers' default) on private queue names of the configured Redis, waits until it has
   loaded the model, and runs :class:`indexer.reindex_job.ReindexJob` on a private alias.
3. Times, on the same sentences and encode batch size (64) with the same torch threads per
   process: a bare ``SentenceTransformer.encode`` in this process (a seeded sample of
   ``bare_sample`` of the corpus's sentences, run once before and once after the job, since
   the machine is shared), against the job's embedding phase through the workers (fetch from
   OpenSearch, encode, store, Celery round trips). ``embed_ratio_vs_bare_encode`` = workers'
   sentences/s divided by (bare sentences/s x worker processes); the ``_cpu_`` figures do
   the same per CPU second, which a busy shared machine distorts less.
4. Measures the worker processes' peak RSS (``VmHWM``) and the vector cache: the memory an
   :class:`worker.vector_cache.ArticleVectorCache` of the new index holds once loaded
   (tracemalloc in this process: numpy arrays and sentence strings), per 100k articles.

Prints one JSON object; ``articles`` is the size actually run (nothing is extrapolated but
``cache_mb_per_100k_articles``, which is linear in the articles by construction).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from bench.services import process_cpu_seconds
from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError

READY_S = 300
REPO = Path(__file__).resolve().parents[1]
ENCODE_BATCH = 64  # precompute_articles' encode batch size, used by the embed task


def civil_code_path() -> Path:
    path = get_settings().data_dir / "coliee" / "civil_code_en-1to724-2.txt"
    if not path.exists():
        raise LexrerankError(f"the COLIEE civil code is not at {path}: set LEXRERANK_DATA")
    return path


def generate_corpus(out: Path, articles: int, seed: int = 13) -> tuple[int, int]:
    """Write ``articles`` recombined civil-code articles to ``out`` (JSONL): (articles,
    sentences)."""
    from indexer.parsers import parse_corpus

    base = list(parse_corpus(civil_code_path()))
    pool = [s for a in base for s in a.sentences]
    rng = random.Random(seed)
    sentences = 0
    with out.open("w", encoding="utf-8") as fh:
        for i in range(articles):
            model = rng.choice(base)
            chosen = [rng.choice(pool) for _ in model.sentences]
            sentences += len(chosen)
            fh.write(json.dumps({"id": f"gen-{i}", "caption": model.caption,
                                 "text": "\n".join(chosen), "sentences": chosen},
                                ensure_ascii=False) + "\n")
    return articles, sentences


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        kids += [int(p) for p in task.read_text().split()]
    return kids


class _Worker:
    """A private `lexrerank worker` (its own queues), stopped by its own pid."""

    def __init__(self, model: str, alias: str, concurrency: int, logs: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.rerank_queue, self.embed_queue = f"bench-rerank-{tag}", f"bench-embed-{tag}"
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "LEXRERANK_MODEL": model,
                    "LEXRERANK_INDEX": alias, "LEXRERANK_RERANK_QUEUE": self.rerank_queue,
                    "LEXRERANK_EMBED_QUEUE": self.embed_queue}
        self.node = f"bench-{tag}@{socket.gethostname()}"
        self.concurrency = concurrency
        self.log = logs / "worker.log"
        self.proc: subprocess.Popen | None = None
        self.settings = dataclasses.replace(get_settings(), rerank_queue=self.rerank_queue,
                                            embed_queue=self.embed_queue, default_model=model)

    def start(self) -> None:
        from worker.celery_app import make_app, serving

        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lexrerank", "worker", "--pool", "prefork",
                 "--concurrency", str(self.concurrency), "--hostname", self.node,
                 "--queues", f"{self.rerank_queue},{self.embed_queue}", "--loglevel",
                 "warning"], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=REPO)
        app = make_app(self.settings)
        deadline = time.monotonic() + READY_S
        answered: set[int] = set()
        # Each process answers the ping once its model is loaded (preload runs first).
        while len(answered) < self.concurrency and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LexrerankError(f"the bench worker exited; see {self.log}")
            reply = serving(app, self.rerank_queue, timeout_s=5.0)
            if reply:
                answered.add(reply["pid"])
        if len(answered) < self.concurrency:
            raise LexrerankError(f"the bench worker is not ready after {READY_S}s; see "
                                 f"{self.log}")

    def peak_rss_mb(self) -> dict[str, float]:
        from worker.process_memory import peak_rss_mb

        if self.proc is None:
            return {}
        peaks = {pid: peak_rss_mb(pid) for pid in _children(self.proc.pid)}
        return {str(pid): round(mb, 1) for pid, mb in peaks.items() if mb is not None}

    def stop(self) -> None:
        from worker.celery_app import delete_queues, make_app

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        with contextlib.suppress(Exception):  # Redis gone: nothing left to clean
            delete_queues(make_app(self.settings), [self.rerank_queue, self.embed_queue])


def _bare_encode(model: Any, sentences: list[str]) -> tuple[float, float]:
    """(sentences per wall second, per CPU second) of the model's SentenceTransformer alone."""
    model.encoder.encode(sentences[:ENCODE_BATCH], batch_size=ENCODE_BATCH)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    model.encoder.encode(sentences, batch_size=ENCODE_BATCH, convert_to_numpy=True,
                         show_progress_bar=False)
    return (len(sentences) / (time.perf_counter() - wall),
            len(sentences) / (time.process_time() - cpu))


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds consumed so far by ``pids`` (those still readable)."""
    return sum(filter(None, map(process_cpu_seconds, pids)))


def _cache_mb(client: Any, index: str, model: Any) -> float:
    """MiB held by a loaded vector cache of ``index`` (allocations still live after load)."""
    from worker.vector_cache import ArticleVectorCache

    gc.collect()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    cache = ArticleVectorCache.load(client, index, model)
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del cache
    return (after - before) / 2**20


@dataclasses.dataclass
class _Measured:
    """What one run measured: the job's report and the figures around it."""

    report: Any  # indexer.reindex_job.ReindexReport
    articles: int
    sentences: int
    worker_ready_s: float
    worker_cpu: float  # the worker processes' user+sys seconds over the job
    worker_peaks: dict[str, float]
    log_tail: str
    bare_runs: list[tuple[float, float]]  # (sentences/s, per CPU s), before and after
    bare_sample: int
    cache_mb: float


def run(articles: int = 100_000, model: str = "paraformer", chunk_size: int = 200,
        concurrency: int = 1, keep_index: bool = False, bare_sample: int = 3000
        ) -> dict[str, Any]:
    """Run the benchmark; see the module docstring. Returns the figures."""
    from lexrerank.opensearch_client import opensearch_client

    alias = f"bench-reindex-{uuid.uuid4().hex[:8]}"
    client = opensearch_client(get_settings())
    measured = _measure(client, alias, articles, model, chunk_size, concurrency, bare_sample)
    result = _figures(measured, model, chunk_size, concurrency)
    if not keep_index:
        _delete_job(client, alias)
    return result


def _measure(client: Any, alias: str, articles: int, model: str, chunk_size: int,
             concurrency: int, bare_sample: int) -> _Measured:
    """Steps 1-4 of the module docstring, in a temporary directory."""
    from indexer.reindex_job import ReindexJob, ReindexOptions
    from reranker.checkpoint import load_reranker
    from reranker.registry import checkpoint_path
    from worker.device import apply_torch_threads

    with tempfile.TemporaryDirectory(prefix="lexrerank-bench-reindex-") as tmp:
        corpus = Path(tmp) / "scale.jsonl"
        n_articles, n_sentences = generate_corpus(corpus, articles)
        worker = _Worker(model, alias, concurrency, Path(tmp))
        start = time.monotonic()
        worker.start()
        worker_ready_s = time.monotonic() - start
        apply_torch_threads()  # the workers' torch threads per process
        loaded = load_reranker(checkpoint_path(model, model_dir=get_settings().model_dir),
                               cache_dir=get_settings().cache_dir,
                               backend=get_settings().encoder_backend)
        sentences = [s for line in corpus.open(encoding="utf-8")
                     for s in json.loads(line)["sentences"]]
        # The same sentences (a seeded sample when there are many), before and after the job:
        # the machine is shared, so the bare rate is the mean of two runs around the job.
        sample = random.Random(7).sample(sentences, min(len(sentences), bare_sample))
        bare_runs = [_bare_encode(loaded, sample)]
        try:
            worker_pids = _children(worker.proc.pid)
            cpu_before = _cpu_seconds(worker_pids)
            job = ReindexJob(client, worker.settings, ReindexOptions(
                alias=alias, corpus=corpus, models=[model], chunk_size=chunk_size,
                show_progress=sys.stderr.isatty()))
            report = job.run()
            worker_cpu = _cpu_seconds(worker_pids) - cpu_before
            worker_peaks = worker.peak_rss_mb()
        finally:
            worker.stop()
            log_tail = worker.log.read_text(errors="replace")[-2000:]
        bare_runs.append(_bare_encode(loaded, sample))
        cache_mb = _cache_mb(client, report.index, loaded)
    return _Measured(report, n_articles, n_sentences, worker_ready_s, worker_cpu,
                     worker_peaks, log_tail, bare_runs, len(sample), cache_mb)


def _device() -> tuple[str, int]:
    """(the device name, torch threads of this process)."""
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        return device, torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a main dependency
        return "cpu", 1


def _figures(m: _Measured, model: str, chunk_size: int, concurrency: int) -> dict[str, Any]:
    """The printed JSON object."""
    report, n_sentences, worker_cpu = m.report, m.sentences, m.worker_cpu
    bare = sum(r[0] for r in m.bare_runs) / len(m.bare_runs)
    bare_cpu = sum(r[1] for r in m.bare_runs) / len(m.bare_runs)
    device, threads = _device()
    embed_rate = n_sentences / report.seconds["embed"]
    result = {
        "suite": "reindex", "model": model, "articles": m.articles, "sentences": n_sentences,
        "chunk_size": chunk_size, "worker_processes": concurrency, "torch_threads": threads,
        "cpus": os.cpu_count(), "device": device,
        "bulk_docs_per_s": round(report.bulk_docs_per_s or 0.0, 1),
        "embed_sentences_per_s": round(embed_rate, 1),
        "bare_encode_sentences_per_s": round(bare, 1),
        "embed_ratio_vs_bare_encode": round(embed_rate / (bare * concurrency), 3),
        "bare_encode_runs_sentences_per_s": [round(r[0], 1) for r in m.bare_runs],
        "bare_encode_sample_sentences": m.bare_sample,
        # Per CPU second (worker processes' user+sys over the job vs the bare encode's):
        # the workers' own overhead, whatever else the shared machine was running.
        "embed_sentences_per_cpu_s": round(n_sentences / worker_cpu, 1) if worker_cpu else None,
        "bare_encode_sentences_per_cpu_s": round(bare_cpu, 1),
        "embed_cpu_ratio_vs_bare_encode": (round(n_sentences / worker_cpu / bare_cpu, 3)
                                           if worker_cpu else None),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "worker_peak_rss_mb": max(m.worker_peaks.values(), default=None),
        "worker_peak_rss_mb_by_pid": m.worker_peaks,
        "cache_mb": round(m.cache_mb, 2),
        "cache_mb_per_100k_articles": round(m.cache_mb * 100_000 / m.articles, 1),
        "warm": report.warmed,
        "seconds": {k: round(v, 2) for k, v in report.seconds.items()},
        "worker_ready_s": round(m.worker_ready_s, 1),
        "index": report.index,
    }
    if not result["worker_peak_rss_mb"]:
        result["worker_log_tail"] = m.log_tail
    return result


def _delete_job(client: Any, alias: str) -> None:
    """Delete the alias's versions and its progress record."""
    from indexer.aliases import versioned_indexes
    from lexrerank.redis_tls import redis_client
    from lexrerank.reindex_progress import progress_key

    for name in versioned_indexes(client, alias).values():
        client.indices.delete(index=name)
    redis_client(get_settings()).delete(progress_key(alias))
