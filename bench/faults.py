"""`lexrerank bench faults`: inject faults under a steady load and report how search holds up.

Everything runs on private processes on loopback: a private ``redis-server``, a private
gateway and rerank worker on private queues, and for ``opensearch_stop`` a private
OpenSearch node (:mod:`bench.private_opensearch`); the shared stack is only read (the
configured index, for the first three faults). A steady, bounded load (``CONCURRENCY``
closed-loop clients with a short pause between requests) sends reranked searches through
the gateway before, during and after each fault:

- ``worker_kill``: SIGKILL the rerank worker (and its pool process) mid-load; restart it;
- ``redis_stop``: stop the private Redis (SIGTERM); start it again on the same port;
- ``worker_slow``: make every rerank take twice the deadline (the test hook
  :mod:`worker.fault_injection`), then normal again;
- ``opensearch_stop``: stop the private OpenSearch node; start it again (503s expected);
- ``reindex_kill``: kill a ``lexrerank reindex`` job and the embed worker mid-reindex, start
  a worker, re-run the job, count the documents (``docs_lost``);
- ``hostile_mix``: 4 clients mixing valid, invalid and hostile requests (oversized headers, a
  lone surrogate, a huge integer, an unknown method, an abandoned and a slow body) for
  ``hostile_s`` (60 s, 15 with ``--quick``): hung requests, unexpected 5xx, valid reranked
  searches answered (:mod:`bench.hostile_mix`; its report has its own keys).

Killed with SIGTERM or SIGINT, the run stops everything it started (private Redis, gateway,
worker, OpenSearch node) before it exits (:func:`bench.services.stopped_on_signals`).

Per fault: ``requests``, ``http_5xx``, ``no_answer`` (connection errors), ``fallbacks``,
``p95_ms`` (answers to requests sent while the fault lasted) and ``p95_after_ms`` (after
recovery), ``max_ms`` and ``over_deadline`` (200 answers slower than ``deadline_ms`` +
``MARGIN_MS``), ``http_5xx_when`` (per 5xx status: when its requests were sent, seconds after
the fault began, and one reason), ``restore_began_s`` (when the restart began, on the same
clock), ``restore_s`` (how long the failed component took to be back: process start
to ready), ``recovery_s`` (from then to the first reranked ``status: ok`` answer through the
gateway; None if none came within the recovery timeout) and ``docs_lost``.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import Sample, SteadyLoad, latency_stats, search_requests
from bench.services import (
    PrivateRedis,
    Services,
    query_texts,
    stopped_on_signals,
    wait_until,
)
from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError

FAULTS = ("worker_kill", "redis_stop", "worker_slow", "opensearch_stop", "reindex_kill",
          "hostile_mix")
CONCURRENCY = 4
THINK_S = 0.05
MARGIN_MS = 250
QUERIES = 60
PRIVATE_ARTICLES = 120  # the private OpenSearch's index: enough for windows, quick to embed
QUICK_REINDEX_ARTICLES = 240  # --quick reindexes the civil code's first articles only


@dataclass(frozen=True)
class Timing:
    """Seconds of load before the fault, of the fault, and after recovery."""

    pre_s: float
    fault_s: float
    post_s: float
    recovery_timeout_s: float = 120.0
    hostile_s: float = 60.0  # the hostile_mix scenario's length


FULL = Timing(pre_s=5, fault_s=10, post_s=10)
QUICK = Timing(pre_s=2, fault_s=4, post_s=3, hostile_s=15.0)


def reranked_ok(sample: Sample) -> bool:
    return sample.status == 200 and sample.rerank == "ok"


def _when_by_status(samples: list[Sample], t_fault: float) -> dict[str, dict[str, Any]]:
    """Per 5xx status: when its requests were sent (first and last, seconds after the fault
    began), their slowest answer, and one reason: whether they came at the stop, while the
    component was down, or as it came back."""
    out: dict[str, dict[str, Any]] = {}
    for status in sorted({s.status for s in samples if 500 <= s.status < 600}):
        these = [s for s in samples if s.status == status]
        out[str(status)] = {"first_s": round(min(s.at for s in these) - t_fault, 2),
                            "last_s": round(max(s.at for s in these) - t_fault, 2),
                            "max_ms": round(max(s.ms for s in these), 1),
                            "reason": (these[0].reason or "")[:160]}
    return out


def summarize(fault: str, samples: list[Sample], t_fault: float, t_end: float,
              recovered_at: float | None, deadline_ms: int, restore_s: float | None,
              docs_lost: int | None = None) -> dict[str, Any]:
    """The report line of one fault from its samples and timeline (monotonic seconds)."""
    during = [s for s in samples if t_fault <= s.at < t_end]
    after = [s for s in samples if recovered_at is not None and s.at >= recovered_at]
    answered = [s for s in samples if s.status == 200]
    fallbacks = [s for s in answered if s.rerank != "ok"]
    return {
        "fault": fault,
        "requests": len(samples),
        "http_5xx": sum(1 for s in samples if 500 <= s.status < 600),
        "http_5xx_codes": dict(Counter(str(s.status) for s in samples if s.status >= 500)),
        "http_5xx_when": _when_by_status(samples, t_fault),
        "no_answer": sum(1 for s in samples if s.status == 0),
        "other_errors": sum(1 for s in samples if s.status and s.status != 200
                            and not 500 <= s.status < 600),
        "fallbacks": len(fallbacks),
        "fallback_reasons": dict(Counter(re.sub(r"\d+", "N", s.reason or "")
                                         for s in fallbacks)),
        "fallback_reason_codes": dict(Counter(s.reason_code or "none" for s in fallbacks)),
        "p95_ms": latency_stats(during)["p95_ms"],
        "p95_after_ms": latency_stats(after)["p95_ms"],
        "max_ms": latency_stats(samples)["max_ms"],
        "deadline_ms": deadline_ms,
        "over_deadline": sum(1 for s in answered if s.ms > deadline_ms + MARGIN_MS),
        "restore_began_s": (None if restore_s is None
                            else round(t_end - restore_s - t_fault, 2)),
        "restore_s": None if restore_s is None else round(restore_s, 2),
        "recovery_s": (None if recovered_at is None
                       else round(max(recovered_at - t_end, 0.0), 2)),
        "docs_lost": docs_lost,
    }


def inject_under_load(fault: str, requests: list, timing: Timing, deadline_ms: int,
                      inject: Callable[[], None], restore: Callable[[], float],
                      docs_lost: Callable[[], int] | None = None) -> dict[str, Any]:
    """Run ``requests`` as a steady load; ``inject`` the fault, hold it, ``restore`` it
    (blocking until the component is back; returns the seconds that took), wait for the first
    reranked ``ok`` answer, keep the load ``post_s`` longer, and summarize."""
    load = SteadyLoad(requests, CONCURRENCY, THINK_S).start()
    try:
        time.sleep(timing.pre_s)
        t_fault = time.monotonic()
        inject()
        time.sleep(timing.fault_s)
        restore_s = restore()
        t_end = time.monotonic()
        recovered_at = _first_ok_after(load, t_end, timing.recovery_timeout_s)
        time.sleep(timing.post_s)
    finally:
        samples = load.stop()
    return summarize(fault, samples, t_fault, t_end, recovered_at, deadline_ms, restore_s,
                     docs_lost() if docs_lost else None)


def _first_ok_after(load: SteadyLoad, t_end: float, timeout_s: float) -> float | None:
    """When the first reranked ``ok`` answer to a request sent after ``t_end`` arrived."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ok = [s for s in load.samples_since(t_end) if reranked_ok(s)]
        if ok:
            first = min(ok, key=lambda s: s.at + s.ms / 1000)
            return first.at + first.ms / 1000
        time.sleep(0.05)
    return None


def wait_ok(url: str, index: str, texts: list[str], deadline_ms: int, what: Path) -> None:
    """Block until a reranked search through ``url`` answers ``ok`` (the stack is healthy)."""
    from bench.loadgen import run_batch

    requests = search_requests(url, index, texts[:1], True, timeout_ms=deadline_ms)
    wait_until(lambda: reranked_ok(run_batch(requests, 1)[0][0]), None,
               "a reranked ok answer", what, 120, 0.5)


# ---------------------------------------------------------------------------- rerank side


def rerank_side_faults(names: list[str], timing: Timing, model: str, index: str,
                       deadline_ms: int, texts: list[str], logs: Path) -> list[dict[str, Any]]:
    """worker_kill, redis_stop, worker_slow on a private Redis, the configured index."""
    redis = PrivateRedis(logs)
    redis.start()
    delay_file = logs / "rerank-delay-ms"
    services = Services(model, index, logs, prefix="faults", env={
        "REDIS_URL": redis.url, "LEXRERANK_FAULT_DELAY_FILE": str(delay_file),
        "LEXRERANK_RERANK_TIMEOUT_MS": str(deadline_ms)})
    results = []
    try:
        services.start()
        requests = search_requests(services.url, index, texts, True, timeout_ms=deadline_ms)

        def restart_worker() -> float:
            return services.start_worker(wait=True)

        def start_redis() -> float:
            return redis.start()

        def slow() -> None:
            delay_file.write_text(str(2 * deadline_ms))

        def fast() -> float:
            delay_file.unlink(missing_ok=True)
            return 0.0

        plans = {"worker_kill": (services.kill_worker, restart_worker),
                 "redis_stop": (redis.stop, start_redis),
                 "worker_slow": (slow, fast)}
        for name in names:
            wait_ok(services.url, index, texts, deadline_ms, logs / "worker.log")
            inject, restore = plans[name]
            results.append(inject_under_load(name, requests, timing, deadline_ms, inject,
                                             restore))
    finally:
        services.stop()
        redis.stop()
    return results


# ---------------------------------------------------------------------------- OpenSearch


def first_coliee_articles(articles: int | None) -> list:
    """The English COLIEE civil code's first ``articles`` articles (None: all of them)."""
    from indexer.parsers import parse_corpus

    corpus = get_settings().data_dir / "coliee" / "civil_code_en-1to724-2.txt"
    if not corpus.exists():
        raise LexrerankError(f"COLIEE civil code not found at {corpus}: set LEXRERANK_DATA")
    chosen = []
    for article in parse_corpus(corpus):
        if articles is not None and len(chosen) == articles:
            break
        chosen.append(article)
    return chosen


def _index_private(url: str, index: str, model_name: str, articles: int) -> int:
    """Load the first ``articles`` COLIEE articles into ``index`` at ``url``, with vectors."""
    from indexer.article_vectors import embed_index
    from indexer.bulk_load import load_articles
    from lexrerank.opensearch_client import opensearch_client
    from reranker.checkpoint import load_reranker
    from reranker.registry import checkpoint_path

    settings = dataclasses.replace(get_settings(), opensearch_url=url)
    chosen = first_coliee_articles(articles)
    client = opensearch_client(settings)
    load_articles(client, index, lambda: iter(chosen), "en", show_progress=False)
    client.indices.refresh(index=index)
    model = load_reranker(checkpoint_path(model_name, model_dir=settings.model_dir),
                          device="cpu", cache_dir=settings.cache_dir,
                          backend=settings.encoder_backend)
    embed_index(client, index, model, show_progress=False)
    client.indices.flush(index=index)  # durable before the node is stopped
    return len(chosen)


def opensearch_stop_fault(timing: Timing, model: str, deadline_ms: int, texts: list[str],
                          logs: Path) -> dict[str, Any]:
    from bench.private_opensearch import PrivateOpenSearch

    node = PrivateOpenSearch()
    redis = PrivateRedis(logs)
    services = None
    index = "fault-statutes"
    try:
        node.start()
        redis.start()
        _index_private(node.url, index, model, PRIVATE_ARTICLES)
        services = Services(model, index, logs, prefix="faults-os", env={
            "REDIS_URL": redis.url, "OPENSEARCH_URL": node.url,
            "LEXRERANK_RERANK_TIMEOUT_MS": str(deadline_ms)}).start()
        wait_ok(services.url, index, texts, deadline_ms, logs / "worker.log")
        requests = search_requests(services.url, index, texts, True, timeout_ms=deadline_ms)
        report = inject_under_load("opensearch_stop", requests, timing, deadline_ms,
                                   node.stop, node.start)
        return {**report, "index": f"{index} on a private node ({PRIVATE_ARTICLES} articles)"}
    finally:
        if services is not None:
            services.stop()
        redis.stop()
        node.remove()


# ---------------------------------------------------------------------------- hostile mix


def _private_index(client: Any, name: str, model: str, articles: int) -> None:
    """``name`` on the shared OpenSearch: the first ``articles`` COLIEE articles with the
    vectors of ``model`` (each member of an ensemble)."""
    from indexer.bulk_load import load_articles
    from lexrerank.cli import embed_models

    chosen = first_coliee_articles(articles)
    load_articles(client, name, lambda: iter(chosen), "en", show_progress=False)
    client.indices.refresh(index=name)
    embed_models(client, name, model, show_progress=False)


def hostile_mix(timing: Timing, model: str, deadline_ms: int, texts: list[str],
                logs: Path) -> dict[str, Any]:
    """The ``hostile_mix`` scenario on a private Redis, gateway and worker, over a private
    index of its own on the shared OpenSearch (deleted at the end); an abandoned ``PUT``
    must not create its probe index."""
    from bench.hostile_mix import run_mix, summarize_mix
    from lexrerank.opensearch_client import opensearch_client

    tag = uuid.uuid4().hex[:8]
    index, probe = f"hostile-mix-{tag}", f"hostile-probe-{tag}"
    client = opensearch_client(get_settings())
    redis = PrivateRedis(logs)
    services = Services(model, index, logs, prefix="faults-hostile", env={
        "REDIS_URL": redis.url, "LEXRERANK_RERANK_TIMEOUT_MS": str(deadline_ms)})
    try:
        _private_index(client, index, model, PRIVATE_ARTICLES)
        redis.start()
        services.start()
        wait_ok(services.url, index, texts, deadline_ms, logs / "worker.log")
        port = int(services.url.rsplit(":", 1)[1])
        outcomes, _ = run_mix(port, index, texts, deadline_ms, timing.hostile_s, probe)
        wait_ok(services.url, index, texts, deadline_ms, logs / "worker.log")  # still healthy
        applied = bool(client.indices.exists(index=probe))
        return {**summarize_mix(outcomes, deadline_ms, timing.hostile_s, applied),
                "index": f"{index} ({PRIVATE_ARTICLES} articles)"}
    finally:
        services.stop()
        redis.stop()
        client.indices.delete(index=f"{index},{probe}", ignore_unavailable=True)


# ---------------------------------------------------------------------------- entry point


def run(quick: bool = False, faults: tuple[str, ...] = FAULTS, model: str = "paraformer",
        index: str | None = None, timeout_ms: int | None = None,
        hostile_s: float | None = None) -> dict[str, Any]:
    """``{"faults": [...]}``, one report per fault in ``faults`` (see the module doc);
    ``hostile_s`` overrides the hostile_mix scenario's length."""
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise LexrerankError(f"unknown fault(s) {sorted(unknown)}: choose from {FAULTS}")
    settings = get_settings()
    index = index or settings.index
    deadline_ms = timeout_ms or settings.rerank_timeout_ms
    timing = QUICK if quick else FULL
    if hostile_s is not None:
        timing = dataclasses.replace(timing, hostile_s=hostile_s)
    texts = query_texts(QUERIES)
    with stopped_on_signals():
        reports = _run_faults(faults, timing, model, index, deadline_ms, texts, quick)
    return {"suite": "faults", "quick": quick, "model": model, "index": index,
            "concurrency": CONCURRENCY, "think_s": THINK_S, "margin_ms": MARGIN_MS,
            "timing": dataclasses.asdict(timing), "faults": reports}


def _run_faults(faults: tuple[str, ...], timing: Timing, model: str, index: str,
                deadline_ms: int, texts: list[str], quick: bool) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lexrerank-faults-") as tmp:
        logs = Path(tmp)
        rerank_side = [f for f in faults if f in ("worker_kill", "redis_stop", "worker_slow")]
        if rerank_side:
            reports += rerank_side_faults(rerank_side, timing, model, index, deadline_ms,
                                          texts, logs)
        if "opensearch_stop" in faults:
            reports.append(opensearch_stop_fault(timing, model, deadline_ms, texts, logs))
        if "reindex_kill" in faults:
            from bench.reindex_fault import reindex_kill

            reports.append(reindex_kill(timing, model, index, deadline_ms, texts, logs,
                                        articles=QUICK_REINDEX_ARTICLES if quick else None))
        if "hostile_mix" in faults:
            reports.append(hostile_mix(timing, model, deadline_ms, texts, logs))
    return reports
