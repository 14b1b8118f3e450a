"""Private services for benchmarks: a worker + gateway on private queues, a private Redis.

Everything started here is a process of our own, stopped by its own pid (or its own process
group: each is started in a new session), never by name; queues carry a random tag so a
benchmark never takes tasks from the shared stack or a parallel test run.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError
from lexrerank.redis_tls import redis_client
from lexrerank.stack import gateway_ready

READY_S = 180
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], bool], proc: subprocess.Popen | None, what: str, log: Path,
               timeout: float = READY_S, poll_s: float = 0.2) -> float:
    """Poll ``check`` until it is true; the seconds it took. Raises when ``proc`` exits."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise LexrerankError(f"{what} exited with {proc.returncode}; see {log}")
        if check():
            return time.monotonic() - start
        time.sleep(poll_s)
    raise LexrerankError(f"{what} not ready after {timeout:.0f}s; see {log}")


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``args`` in its own session (so its children can be signalled with it).

    Every process started here is also stopped when this one exits (:func:`stop_started`,
    run by ``atexit``), whatever the exit: a benchmark killed with SIGTERM or SIGINT inside
    :func:`stopped_on_signals` leaves nothing running.
    """
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True)
    _STARTED.append(proc)
    return proc


_STARTED: list[subprocess.Popen] = []


def stop_started() -> None:
    """SIGTERM (then SIGKILL) the process group of every :func:`spawn`-ed process still up."""
    while _STARTED:
        signal_group(_STARTED.pop(), signal.SIGTERM, 10)


atexit.register(stop_started)


class Stopped(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT inside :func:`stopped_on_signals`: a
    ``BaseException`` like ``KeyboardInterrupt``, so ``except Exception`` does not swallow it
    and every ``finally`` on the way out stops what it started."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def stopped_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`Stopped` inside the block (main thread only), so its
    ``finally`` clauses stop what it started; a second signal meanwhile is ignored, so the
    clean-up finishes. Then the process exits with 128 + the signal's number, as if killed
    by it (``SystemExit``: ``atexit`` still runs). Handlers are restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # the clean-up must not be cut short
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except Stopped as exc:
        print(f"{exc}: stopped what it started", file=sys.stderr)
        raise SystemExit(128 + exc.signum) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def signal_group(proc: subprocess.Popen | None, sig: int = signal.SIGKILL,
                 timeout: float = 30) -> None:
    """Send ``sig`` to ``proc``'s own process group (a prefork worker and its children) and
    reap it; escalate to SIGKILL when it does not exit in ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds process ``pid`` has used so far (``/proc/<pid>/stat``);
    None when it cannot be read (no such process, or no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class PrivateRedis:
    """A redis-server of our own on a free port, no persistence; restartable on that port."""

    def __init__(self, logs: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = logs / f"redis-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Start it; the seconds until it answers PING."""
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no"]
        self.proc = spawn(args, dict(os.environ), self.log)
        return wait_until(self.ping, self.proc, "redis-server", self.log, 20, 0.05)

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis_client(get_settings(), self.url, socket_connect_timeout=0.2,
                                     socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        signal_group(self.proc, signal.SIGTERM, 10)


class Services:
    """A private gateway and rerank worker (prefork, one process: the CPU default).

    ``env`` overrides go to both (e.g. ``REDIS_URL``, ``OPENSEARCH_URL``); queue names are
    private. The worker can be killed and restarted while the gateway keeps serving.
    """

    def __init__(self, model: str, index: str, logs: Path, env: dict[str, str] | None = None,
                 prefix: str = "bench", worker_processes: int = 1) -> None:
        tag = uuid.uuid4().hex[:8]
        self.url = f"http://127.0.0.1:{free_port()}"
        self.queue, self.embed_queue = f"{prefix}-rerank-{tag}", f"{prefix}-embed-{tag}"
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "LEXRERANK_MODEL": model,
                    "LEXRERANK_INDEX": index, "LEXRERANK_RERANK_QUEUE": self.queue,
                    "LEXRERANK_EMBED_QUEUE": self.embed_queue, **(env or {})}
        self.node = f"{prefix}-{tag}@{socket.gethostname()}"
        self.logs = logs
        self.gateway: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.worker_queues = self.queue
        self.worker_processes = worker_processes

    def _cli(self, name: str, args: list[str]) -> subprocess.Popen:
        return spawn([sys.executable, "-m", "lexrerank", *args], self.env,
                     self.logs / f"{name}.log")

    def settings(self):
        """Settings as the private processes see them (their Redis, their queues)."""
        base = get_settings()
        return dataclasses.replace(
            base, redis_url=self.env.get("REDIS_URL", base.redis_url),
            opensearch_url=self.env.get("OPENSEARCH_URL", base.opensearch_url),
            rerank_queue=self.queue, embed_queue=self.embed_queue)

    def start_gateway(self) -> None:
        port = self.url.rsplit(":", 1)[1]
        self.gateway = self._cli("gateway", ["serve", "--port", port, "--log-level", "warning"])

    def start_worker(self, wait: bool = True) -> float:
        """Start the worker; the seconds until it serves (model and vectors loaded)."""
        self.worker = self._cli("worker", ["worker", "--hostname", self.node,
                                           "--queues", self.worker_queues,
                                           "--concurrency", str(self.worker_processes)])
        return self.wait_worker() if wait else 0.0

    def wait_worker(self) -> float:
        return wait_until(self.worker_ready, self.worker, "worker", self.logs / "worker.log",
                          poll_s=0.2)

    def start(self) -> Services:
        self.start_gateway()
        self.start_worker(wait=False)
        wait_until(lambda: gateway_ready(self.url), self.gateway, "gateway",
                   self.logs / "gateway.log")
        self.wait_worker()
        return self

    def worker_ready(self) -> bool:
        from worker.celery_app import make_app, serving

        return serving(make_app(self.settings()), self.queue, timeout_s=1.0) is not None

    def kill_worker(self) -> None:
        """SIGKILL the worker and its pool children: a crash, not a shutdown."""
        signal_group(self.worker, signal.SIGKILL)

    def stop(self) -> None:
        signal_group(self.gateway, signal.SIGTERM)
        signal_group(self.worker, signal.SIGTERM)
        from worker.celery_app import delete_queues, make_app

        with contextlib.suppress(Exception):  # a private Redis may be gone already
            delete_queues(make_app(self.settings()), [self.queue, self.embed_queue])


def run_clients(concurrency: int, texts: list[str], call: Callable[[httpx.Client, str], Any]
                ) -> tuple[list[float], list[Any], int]:
    """Send every text once with ``concurrency`` clients; latencies (ms), results, errors."""
    def one(client: httpx.Client, text: str) -> tuple[float, Any]:
        start = time.perf_counter()
        try:
            result = call(client, text)
        except (httpx.HTTPError, ValueError, KeyError):
            result = None
        return (time.perf_counter() - start) * 1000, result

    chunks = [texts[i::concurrency] for i in range(concurrency)]

    def client_loop(chunk: list[str]) -> list[tuple[float, Any]]:
        with httpx.Client(timeout=30) as client:
            return [one(client, text) for text in chunk]

    with ThreadPoolExecutor(concurrency) as pool:
        done = [item for part in pool.map(client_loop, chunks) for item in part]
    ms = [m for m, r in done if r is not None]
    return ms, [r for _, r in done if r is not None], sum(1 for _, r in done if r is None)


def run_paired_clients(concurrency: int, texts: list[str], first: Callable, second: Callable
                       ) -> tuple[list[float], list[float], int]:
    """Like :func:`run_clients`, but each text is sent to ``first`` and to ``second`` back to
    back (alternating which goes first), so machine noise lands on both paths alike.

    Returns the latencies (ms) of ``first``, of ``second``, and the error count.
    """
    def one(client: httpx.Client, call: Callable, text: str) -> float | None:
        start = time.perf_counter()
        try:
            call(client, text)
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        return (time.perf_counter() - start) * 1000

    def client_loop(chunk: list[tuple[int, str]]) -> list[tuple[float | None, float | None]]:
        with httpx.Client(timeout=30) as a, httpx.Client(timeout=30) as b:
            pairs = []
            for i, text in chunk:
                if i % 2:
                    later, earlier = one(b, second, text), one(a, first, text)
                else:
                    earlier, later = one(a, first, text), one(b, second, text)
                pairs.append((earlier, later))
            return pairs

    numbered = list(enumerate(texts))
    chunks = [numbered[i::concurrency] for i in range(concurrency)]
    with ThreadPoolExecutor(concurrency) as pool:
        done = [pair for part in pool.map(client_loop, chunks) for pair in part]
    firsts = [f for f, _ in done if f is not None]
    seconds = [s for _, s in done if s is not None]
    return firsts, seconds, sum((f is None) + (s is None) for f, s in done)


def training_queries(limit: int, language: str = "en") -> list[Any]:
    """Up to ``limit`` training queries (``reranker.datasets.Query``, from ``LEXRERANK_DATA``)
    in ``language``, as users would ask them: COLIEE's for ``en`` and ``ja``, ALQAC's for
    ``vi``."""
    from bench.quality_data import COLIEE_QUERY_FILES, coliee_by_year
    from reranker.datasets import read_queries

    root = get_settings().data_dir
    if language == "vi":
        where = root / "alqac2023"
        queries = read_queries(where / "train.json") if (where / "train.json").is_file() else []
    elif language in COLIEE_QUERY_FILES:
        where = root / COLIEE_QUERY_FILES[language][0] / "train"
        queries = [q for year in coliee_by_year(root, language).values() for q in year]
    else:
        raise LexrerankError(f"no training queries in {language!r}: there are en, ja "
                             "(COLIEE) and vi (ALQAC)")
    if not queries:
        raise LexrerankError(f"no {language} training queries at {where}: set "
                             "LEXRERANK_DATA")
    return queries[:limit]


def query_texts(limit: int) -> list[str]:
    """The texts of :func:`training_queries` (English)."""
    return [q.text for q in training_queries(limit)]
