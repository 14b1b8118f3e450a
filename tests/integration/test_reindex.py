"""`lexrerank reindex` / `rollback` against the real services, as a user runs them.

One module-scoped stack: a rerank worker and a gateway (private queues, shared Redis), plus a
separate embed worker (production layout: a reindex never queues ahead of searches), on a
unique alias. The tests run in order and build on each other: v1, v2 under a search loop, a
malformed corpus, a SIGKILLed embed worker then v3 resumed, rollback, v4 with --keep.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from opensearchpy import OpenSearch
from opensearchpy.helpers import scan

from lexrerank.config import get_settings
from lexrerank.reindex_progress import progress_key, read_progress
from tests.integration.conftest import (
    REPO,
    ServiceProcess,
    Stack,
    _gateway_articles,
    _wait_for,
    run_cli,
    served_version,
    unique_index,
)

ARTICLES = 80
QUERIES = ["A minor may rescind a juridical act performed without consent",
           "guardianship of an adult ward and the duties of the guardian",
           "the domicile of a person and the place of residence"]


def write_corpus(path: Path, amendment: str | None = None) -> Path:
    """The first ARTICLES civil-code articles as JSONL; ``amendment`` appended to the first
    article (a statute change: another checksum, another version)."""
    articles = _gateway_articles()[:ARTICLES]
    with path.open("w", encoding="utf-8") as fh:
        for i, a in enumerate(articles):
            sentences = list(a.sentences) + ([amendment] if amendment and i == 0 else [])
            fh.write(json.dumps({"id": a.doc_id, "caption": a.caption,
                                 "text": "\n".join(sentences), "sentences": sentences}) + "\n")
    return path


class ReindexStack:
    """Rerank worker + gateway (Stack) and an embed-only worker; the alias under test."""

    def __init__(self, tmp: Path, model: str) -> None:
        self.tmp = tmp
        self.alias = unique_index("test-reindex")
        self.stack = Stack(tmp, model, self.alias, get_settings().redis_url,
                           {"LEXRERANK_RERANK_TIMEOUT_MS": "10000"})
        args = self.stack.worker.args
        args[args.index("--queues") + 1] = self.stack.queue  # this one reranks only
        self.embed_node = f"embed-{uuid.uuid4().hex[:8]}@localhost"
        self.embed_worker = ServiceProcess(
            "embed-worker", [sys.executable, "-m", "lexrerank", "worker", "--pool", "solo",
                             "--hostname", self.embed_node, "--queues", self.stack.embed_queue,
                             "--no-preload", "--loglevel", "info"],
            self.stack.env, tmp / "embed-worker.log")
        self.redis = redis.Redis.from_url(get_settings().redis_url)

    def start_embed_worker(self) -> None:
        self.embed_worker.start()

        def ready() -> bool:
            try:
                return bool(self.stack.celery().control.ping(destination=[self.embed_node],
                                                             timeout=0.5))
            except Exception:  # noqa: BLE001 - not up yet
                return False

        _wait_for(ready, "embed worker", self.embed_worker.proc, self.embed_worker.log)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli(*args, env=self.stack.env, timeout=300)

    def reindex(self, corpus: Path, *extra: str) -> subprocess.CompletedProcess:
        return self.cli("reindex", "--alias", self.alias, "--corpus", str(corpus),
                        "--model", self.stack.env["LEXRERANK_MODEL"], "--chunk-size", "10",
                        "--json", *extra)

    def popen_reindex(self, corpus: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "lexrerank", "reindex", "--alias", self.alias, "--corpus",
             str(corpus), "--model", self.stack.env["LEXRERANK_MODEL"], "--chunk-size", "5",
             "--json", *extra], env=self.stack.env, cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def rx(tmp_path_factory: pytest.TempPathFactory, gateway_model: str, client: OpenSearch):
    tmp = tmp_path_factory.mktemp("reindex")
    running = ReindexStack(tmp, gateway_model)
    try:
        running.stack.start()
        running.start_embed_worker()
        yield running
    finally:
        running.embed_worker.stop()
        running.stack.stop()
        client.indices.delete(index=f"{running.alias}-v*", ignore_unavailable=True)
        running.redis.delete(progress_key(running.alias))


def alias_target(client: OpenSearch, alias: str) -> list[str]:
    return sorted(client.indices.get_alias(name=alias))


def reindex_meta(client: OpenSearch, index: str) -> dict[str, Any]:
    mapping = client.indices.get_mapping(index=index)
    return mapping[index]["mappings"]["_meta"]["lexrerank"]


def docs_lacking(client: OpenSearch, index: str, version: str) -> list[str]:
    client.indices.refresh(index=index)
    return [d["_id"] for d in scan(client, index=index, _source=[f"vectors.{version}.kind"],
                                   query={"query": {"match_all": {}}})
            if version not in (d.get("_source") or {}).get("vectors", {})]


def report_of(proc: subprocess.CompletedProcess | tuple[str, str, int]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_first_reindex_builds_v1_and_creates_the_alias(rx: ReindexStack, client: OpenSearch,
                                                       tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "v1.jsonl")
    report = report_of(rx.reindex(corpus))
    v1 = f"{rx.alias}-v1"
    assert report["index"] == v1 and report["documents"] == ARTICLES
    assert report["embedded"] == ARTICLES and report["chunks_failed"] == 0
    assert alias_target(client, rx.alias) == [v1]
    meta = reindex_meta(client, v1)
    job = meta["reindex"]
    import hashlib

    assert job["state"] == "swapped"
    assert job["source"]["sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert job["source"]["articles"] == ARTICLES and "@" in job["who"]
    version = served_version(rx.stack.env["LEXRERANK_MODEL"])
    assert [m["model_version"] for m in job["models"]] == [version]
    assert job["counts"]["vectors"] == {version: ARTICLES}
    assert meta["model_versions"][version]["documents"] == ARTICLES
    assert docs_lacking(client, v1, version) == []
    docs = client.indices.stats(index=v1, metric="docs")["_all"]["primaries"]["docs"]
    assert docs["deleted"] == 0  # the vector updates' old copies were expunged
    settings = client.indices.get_settings(index=v1)[v1]["settings"]["index"]
    assert settings.get("refresh_interval") != "-1"  # restored after the bulk load
    assert settings["number_of_replicas"] == "0"  # no live index before: the default
    progress = read_progress(rx.redis, rx.alias)
    assert progress is not None and progress["state"] == "swapped"
    assert progress["documents_total"] == ARTICLES
    assert progress["chunks_done"] == progress["chunks_total"] == report["chunks_total"]
    # Re-running with the same corpus and model is a no-op: the alias already serves it.
    again = report_of(rx.reindex(corpus))
    assert again["up_to_date"] is True and alias_target(client, rx.alias) == [v1]


class SearchLoop(threading.Thread):
    """Reranked searches through the gateway, back to back, until stopped."""

    def __init__(self, url: str, alias: str) -> None:
        super().__init__(daemon=True)
        self.url, self.alias = url, alias
        self.stop_event = threading.Event()
        self.statuses: Counter[str] = Counter()
        self.reasons: list[str] = []
        self.errors: list[str] = []
        self.indexes: list[str] = []

    def run(self) -> None:
        i = 0
        with httpx.Client(timeout=30) as http:
            while not self.stop_event.is_set():
                query = QUERIES[i % len(QUERIES)]
                i += 1
                body = {"size": 5, "query": {"match": {"content": query}},
                        "ext": {"rerank": {"query_context": {"query_text": query},
                                           "window_size": 20}}}
                try:
                    resp = http.post(f"{self.url}/{self.alias}/_search",
                                     params={"search_pipeline": "lexrerank"}, json=body)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                if resp.status_code != 200:
                    self.errors.append(f"{resp.status_code}: {resp.text[:200]}")
                    continue
                data = resp.json()
                info = data["ext"]["rerank"]
                self.statuses[info["status"]] += 1
                if info["status"] != "ok":
                    self.reasons.append(info.get("reason") or "")
                hit_indexes = {h["_index"] for h in data["hits"]["hits"]}
                assert len(hit_indexes) <= 1  # fully old or fully new
                self.indexes.extend(hit_indexes)


def test_reindex_under_a_search_loop_swaps_without_a_failed_search(
        rx: ReindexStack, client: OpenSearch, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "v2.jsonl", "This paragraph was added by an amendment.")
    loop = SearchLoop(rx.stack.url, rx.alias)
    loop.start()
    try:
        time.sleep(1.0)
        report = report_of(rx.reindex(corpus, "--keep", "5"))
        time.sleep(1.5)  # searches after the swap
    finally:
        loop.stop_event.set()
        loop.join(timeout=60)
    v1, v2 = f"{rx.alias}-v1", f"{rx.alias}-v2"
    assert report["index"] == v2 and report["previous"] == [v1]
    assert report["warmed"], "the rerank worker was not warmed before the swap"
    assert alias_target(client, rx.alias) == [v2]
    assert loop.errors == []
    assert loop.statuses["fallback"] == 0, loop.reasons[:3]
    assert loop.statuses["ok"] >= 5
    assert v1 in loop.indexes and loop.indexes[-1] == v2
    # Once v2 serves, a search never goes back to v1 (one atomic swap).
    first_new = loop.indexes.index(v2)
    assert v1 not in loop.indexes[first_new:]


def test_malformed_corpus_fails_before_the_swap(rx: ReindexStack, client: OpenSearch,
                                               tmp_path: Path) -> None:
    good = write_corpus(tmp_path / "good.jsonl").read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    good[4] = '{"id": "broken", "text": '  # line 5: cut off
    bad.write_text("\n".join(good) + "\n")
    before = alias_target(client, rx.alias)
    indexes_before = sorted(client.indices.get(index=f"{rx.alias}-v*"))
    proc = rx.reindex(bad)
    assert proc.returncode == 2
    assert f"{bad}:5:" in proc.stderr and "JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert alias_target(client, rx.alias) == before
    assert sorted(client.indices.get(index=f"{rx.alias}-v*")) == indexes_before


def _wait_progress(rx: ReindexStack, proc: subprocess.Popen, chunks: int,
                   timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = read_progress(rx.redis, rx.alias)
        if (record and record["index"] == f"{rx.alias}-v3"
                and record["chunks_done"] >= chunks):
            return record
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    pytest.fail(f"the job did not finish {chunks} chunks within {timeout}s")


def test_sigkilled_embed_worker_then_rerun_completes_exactly(
        rx: ReindexStack, client: OpenSearch, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "v3.jsonl", "A second amendment.")
    v2, v3 = f"{rx.alias}-v2", f"{rx.alias}-v3"
    version = served_version(rx.stack.env["LEXRERANK_MODEL"])
    job = rx.popen_reindex(corpus, "--stall-timeout", "20")
    record = _wait_progress(rx, job, chunks=2)
    assert record["chunks_total"] == ARTICLES // 5
    rx.embed_worker.proc.send_signal(signal.SIGKILL)
    rx.embed_worker.proc.wait(timeout=30)
    _, stderr = job.communicate(timeout=180)
    assert job.returncode == 2, stderr[-3000:]
    assert "no embed chunk finished" in stderr
    assert alias_target(client, rx.alias) == [v2]  # the live alias is untouched
    assert read_progress(rx.redis, rx.alias)["state"] == "failed"
    assert reindex_meta(client, v3)["reindex"]["state"] == "failed"
    done_before = ARTICLES - len(docs_lacking(client, v3, version))
    assert 0 < done_before < ARTICLES

    rx.start_embed_worker()
    report = report_of(rx.reindex(corpus))
    assert report["index"] == v3 and report["resumed"] is True
    assert report["loaded"] == 0  # the bulk load is not redone
    assert report["embedded"] <= ARTICLES - done_before  # nothing computed twice
    assert alias_target(client, rx.alias) == [v3]
    client.indices.refresh(index=v3)
    assert client.count(index=v3)["count"] == ARTICLES
    assert docs_lacking(client, v3, version) == []
    assert reindex_meta(client, v3)["reindex"]["counts"]["vectors"] == {version: ARTICLES}


def test_rollback_moves_the_alias_back(rx: ReindexStack, client: OpenSearch) -> None:
    v2, v3 = f"{rx.alias}-v2", f"{rx.alias}-v3"
    proc = rx.cli("rollback", "--alias", rx.alias)
    assert proc.returncode == 0, proc.stderr
    assert alias_target(client, rx.alias) == [v2]
    assert reindex_meta(client, v3)["reindex"]["state"] == "rolled_back"
    resp = httpx.post(f"{rx.stack.url}/{rx.alias}/_search",
                      params={"search_pipeline": "lexrerank"}, timeout=30,
                      json={"size": 3, "query": {"match": {"content": QUERIES[0]}},
                            "ext": {"rerank": {"query_context": {"query_text": QUERIES[0]}}}})
    assert resp.status_code == 200
    data = resp.json()
    assert data["ext"]["rerank"]["status"] == "ok", data["ext"]["rerank"]
    assert {h["_index"] for h in data["hits"]["hits"]} == {v2}


def test_keep_prunes_old_versions(rx: ReindexStack, client: OpenSearch,
                                  tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "v4.jsonl", "A third amendment.")
    report = report_of(rx.reindex(corpus, "--keep", "2"))
    v1, v2, v3, v4 = (f"{rx.alias}-v{n}" for n in range(1, 5))
    assert report["index"] == v4 and report["previous"] == [v2]
    # Kept: the live v4 and the index it replaced (v2); v3 was rolled back, v1 is older.
    assert sorted(report["pruned"]) == sorted([v1, v3])
    assert sorted(client.indices.get(index=f"{rx.alias}-v*")) == sorted([v2, v4])
    assert alias_target(client, rx.alias) == [v4]


def test_an_index_named_like_the_alias_is_refused_then_migrated(
        rx: ReindexStack, client: OpenSearch, tmp_path: Path) -> None:
    name = f"{rx.alias}-legacy"
    corpus = write_corpus(tmp_path / "legacy.jsonl")
    try:
        made = run_cli("index", "--corpus", str(corpus), "--index", name)
        assert made.returncode == 0, made.stderr
        args = ("reindex", "--alias", name, "--corpus", str(corpus), "--model",
                rx.stack.env["LEXRERANK_MODEL"], "--chunk-size", "40", "--json")
        refused = rx.cli(*args)
        assert refused.returncode == 2 and "--migrate" in refused.stderr
        assert not client.indices.exists_alias(name=name)
        report = report_of(rx.cli(*args, "--migrate"))
        assert report["index"] == f"{name}-v1" and report["previous"] == [name]
        assert client.indices.exists_alias(name=name)
        assert alias_target(client, name) == [f"{name}-v1"]
        assert client.count(index=name)["count"] == ARTICLES
    finally:
        client.indices.delete(index=f"{name}-v*", ignore_unavailable=True)
        client.indices.delete(index=name, ignore_unavailable=True)
        rx.redis.delete(progress_key(name))
