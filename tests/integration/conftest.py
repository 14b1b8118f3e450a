"""Integration fixtures: the real OpenSearch and Redis of `lexrerank up` (see .ci/run)."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opensearchpy import OpenSearch

from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError
from lexrerank.opensearch_client import opensearch_client
from lexrerank.stack import gateway_ready

REPO = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    return get_settings().data_dir


@pytest.fixture(scope="session")
def client() -> OpenSearch:
    try:
        return opensearch_client(get_settings())
    except LexrerankError as exc:
        pytest.fail(f"{exc} (integration tests need the real stack)")


@pytest.fixture(scope="session")
def coliee_code() -> Path:
    path = data_dir() / "coliee" / "civil_code_en-1to724-2.txt"
    if not path.exists():
        pytest.skip(f"COLIEE data not found at {path} (set LEXRERANK_DATA)")
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600
            ) -> subprocess.CompletedProcess:
    """Run the real `lexrerank` command line in a subprocess, as a user would."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "lexrerank", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=REPO)


def served_version(model: str) -> str:
    """The model version the shipped English ``model`` has on this run's encoder backend
    (``LEXRERANK_ENCODER_BACKEND``, as the CLI and the workers the tests start read it)."""
    from indexer.reindex_inputs import ModelSpec

    return ModelSpec.from_checkpoint(model, backend=get_settings().encoder_backend).model_version


def unique_index(prefix: str) -> str:
    """A per-session index name, so concurrent test runs never share (or delete) an index."""
    return f"{prefix}-{os.getpid()}"


@pytest.fixture(scope="session")
def coliee_index(client: OpenSearch, coliee_code: Path) -> Iterator[str]:
    """A fresh test index holding the COLIEE civil code (the live `statutes` is left alone)."""
    name = unique_index("test-coliee")
    # No vectors: the tests store and refuse them model by model (`lexrerank embed`).
    proc = run_cli("index", "--corpus", str(coliee_code), "--index", name, "--no-vectors")
    assert proc.returncode == 0, proc.stderr
    yield name
    client.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture(scope="session")
def japanese_index(client: OpenSearch) -> Iterator[str]:
    """A fresh test index holding the Japanese civil code (COLIEE's civil.xml), BM25 only."""
    path = data_dir() / "coliee-ja" / "civil.xml"
    if not path.exists():
        pytest.skip(f"COLIEE Japanese data not found at {path} (set LEXRERANK_DATA)")
    name = unique_index("test-coliee-ja")
    proc = run_cli("index", "--corpus", str(path), "--index", name, "--no-vectors")
    assert proc.returncode == 0, proc.stderr
    assert "(ja)" in proc.stdout  # the .xml format's language
    yield name
    client.indices.delete(index=name, ignore_unavailable=True)


# ---------------------------------------------------------------------------- gateway, workers
# Real processes: a `lexrerank worker --pool solo` on private test queues, a `lexrerank serve`
# gateway on a free port, and (for the Redis outage test) a private redis-server.

GATEWAY_INDEX = unique_index("test-gateway")  # per run: parallel runs never share it
GATEWAY_ARTICLES = 80  # enough hits for windows and pages; small enough to embed in seconds
READY_S = 120


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_for(check, what: str, proc: subprocess.Popen, log: Path,
              timeout: float = READY_S) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{_log_tail(log)}")
        if check():
            return
        time.sleep(0.3)
    pytest.fail(f"{what} not ready after {timeout:.0f}s:\n{_log_tail(log)}")


class ServiceProcess:
    """A subprocess we own: started with a log file, stopped by its own pid only."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.args, self.env, self.log = name, args, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=REPO)

    def kill(self) -> None:
        """SIGKILL (a crash, not a shutdown) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


class Stack:
    """A worker + gateway pair (and optionally a private Redis) for one test module."""

    def __init__(self, tmp: Path, model: str, index: str, redis_url: str,
                 extra_env: dict[str, str] | None = None) -> None:
        import uuid

        tag = uuid.uuid4().hex[:8]
        self.redis_url = redis_url
        self.node = f"test-{tag}@localhost"
        self.queue, self.embed_queue = f"test-rerank-{tag}", f"test-embed-{tag}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "REDIS_URL": redis_url,
                    "LEXRERANK_RERANK_QUEUE": self.queue,
                    "LEXRERANK_EMBED_QUEUE": self.embed_queue,
                    "LEXRERANK_INDEX": index, "LEXRERANK_MODEL": model,
                    "LEXRERANK_RERANK_TIMEOUT_MS": "5000", **(extra_env or {})}
        cli = [sys.executable, "-m", "lexrerank"]
        self.worker = ServiceProcess(
            "worker", [*cli, "worker", "--pool", "solo", "--hostname", self.node,
                       "--queues", f"{self.queue},{self.embed_queue}", "--loglevel", "info"],
            self.env, tmp / f"worker-{tag}.log")
        self.gateway = ServiceProcess(
            "gateway", [*cli, "serve", "--port", str(self.port), "--log-level", "warning"],
            self.env, tmp / f"gateway-{tag}.log")

    @functools.cached_property
    def _celery(self):
        import dataclasses

        from worker.celery_app import make_app

        settings = dataclasses.replace(get_settings(), redis_url=self.redis_url,
                                       rerank_queue=self.queue, embed_queue=self.embed_queue)
        return make_app(settings)

    def celery(self):
        """A Celery app on this stack's Redis and queues (to send tasks, ping the worker)."""
        return self._celery

    def worker_ready(self) -> bool:
        """A process that runs this stack's tasks answers the ping task.

        Not ``control.ping``: a prefork worker's parent answers that at once, while its
        child may still be loading the model and warming the index (a first search then
        waits on that and can miss its deadline on a loaded machine).
        """
        from worker.celery_app import serving

        return serving(self.celery(), self.queue, timeout_s=1.0) is not None

    def gateway_ready(self) -> bool:
        return gateway_ready(self.url)

    def start_worker(self) -> None:
        self.worker.start()
        _wait_for(self.worker_ready, "worker", self.worker.proc, self.worker.log)

    def start_gateway(self) -> None:
        self.gateway.start()
        _wait_for(self.gateway_ready, "gateway", self.gateway.proc, self.gateway.log, 60)

    def start(self) -> Stack:
        # Both at once: the gateway starts while the worker loads its model.
        self.gateway.start()
        self.start_worker()
        _wait_for(self.gateway_ready, "gateway", self.gateway.proc, self.gateway.log, 60)
        return self

    def stop(self) -> None:
        from worker.celery_app import delete_queues

        self.gateway.stop()
        self.worker.stop()
        with contextlib.suppress(Exception):  # the private Redis may be gone already
            delete_queues(self.celery(), [self.queue, self.embed_queue])


@pytest.fixture(scope="session")
def gateway_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The shipped Paraformer when its weights exist, else a tiny untrained one (plumbing)."""
    from reranker.registry import available_models

    if "paraformer" in available_models("en"):
        return "paraformer"
    from reranker.checkpoint import save_checkpoint
    from reranker.paraformer import Paraformer

    out = tmp_path_factory.mktemp("ckpt") / "paraformer-tiny"
    save_checkpoint(out, Paraformer(device="cpu"), {
        "fusion": {"kind": "minmax_linear", "alpha": 0.5},
        "cutoff": {"kind": "top_k", "value": 1, "max_k": 1}})
    return str(out)


def _gateway_articles() -> list:
    from indexer.parsers import parse_corpus

    coliee = data_dir() / "coliee" / "civil_code_en-1to724-2.txt"
    source = coliee if coliee.exists() else REPO / "lexrerank" / "sample" / "sample_statutes.jsonl"
    articles = []
    for article in parse_corpus(source):
        articles.append(article)
        if len(articles) == GATEWAY_ARTICLES:
            break
    return articles


@pytest.fixture(scope="session")
def gateway_service(client: OpenSearch, gateway_model: str):
    """A small embedded index (GATEWAY_INDEX) and the in-process RerankService over it."""
    from indexer.article_vectors import embed_index
    from indexer.bulk_load import load_articles
    from reranker.checkpoint import load_reranker
    from reranker.registry import checkpoint_path
    from worker.rerank_service import RerankService

    articles = _gateway_articles()
    client.indices.delete(index=GATEWAY_INDEX, ignore_unavailable=True)
    load_articles(client, GATEWAY_INDEX, lambda: iter(articles), "en", show_progress=False)
    client.indices.refresh(index=GATEWAY_INDEX)
    model = load_reranker(checkpoint_path(gateway_model), device="cpu",
                          cache_dir=get_settings().cache_dir,
                          backend=get_settings().encoder_backend)
    embed_index(client, GATEWAY_INDEX, model, show_progress=False)
    yield RerankService.for_model(client, GATEWAY_INDEX, model, gateway_model)
    client.indices.delete(index=GATEWAY_INDEX, ignore_unavailable=True)


JAPANESE_QUERY = "未成年者が親の同意を得ないでした契約は取り消すことができる"


@pytest.fixture(scope="session")
def japanese_gateway_index(client: OpenSearch) -> Iterator[str]:
    """The first 40 articles of the Japanese civil code (minors, guardians) with the article
    vectors of the shipped Japanese default model: what the gateway and pages rerank."""
    from indexer.bulk_load import load_articles
    from indexer.parsers import parse_corpus
    from lexrerank.cli import embed_models
    from reranker.registry import available_models

    civil = data_dir() / "coliee-ja" / "civil.xml"
    if not civil.exists():
        pytest.skip(f"COLIEE Japanese data not found at {civil} (set LEXRERANK_DATA)")
    if "ensemble" not in available_models("ja"):
        pytest.fail("the Japanese weights (reranker/weights/ja) are missing")
    articles = list(parse_corpus(civil))[:40]
    name = unique_index("test-gateway-ja")
    client.indices.delete(index=name, ignore_unavailable=True)
    load_articles(client, name, lambda: iter(articles), "ja", show_progress=False)
    client.indices.refresh(index=name)
    embed_models(client, name, "default", show_progress=False)
    yield name
    client.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, gateway_model: str, gateway_service,
          client: OpenSearch):
    """Worker + gateway on the shared Redis, private queues; GATEWAY_INDEX by default.

    The alias ``<index>-default`` is listed in LEXRERANK_DEFAULT_PIPELINE_INDEXES.
    """
    alias = f"{GATEWAY_INDEX}-default"
    client.indices.put_alias(index=GATEWAY_INDEX, name=alias)
    running = Stack(tmp_path_factory.mktemp("stack"), gateway_model, GATEWAY_INDEX,
                    get_settings().redis_url,
                    {"LEXRERANK_DEFAULT_PIPELINE_INDEXES": alias})
    try:
        yield running.start()
    finally:
        running.stop()
