"""The worker's ``/metrics`` endpoint: prometheus-client's HTTP server in the main process.

Served on ``LEXRERANK_WORKER_METRICS_PORT`` (default 9108; 0 disables), on all interfaces
unless ``LEXRERANK_WORKER_METRICS_HOST`` narrows it (docs/security.md). In multi-process mode
(``PROMETHEUS_MULTIPROC_DIR``, set by ``lexrerank worker``) it merges every child's values.
Started by :mod:`worker.task_signals` at ``worker_init``.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PORT_ENV, HOST_ENV = "LEXRERANK_WORKER_METRICS_PORT", "LEXRERANK_WORKER_METRICS_HOST"
# All interfaces: Prometheus scrapes from another host/pod (LEXRERANK_WORKER_METRICS_HOST
# narrows it; docs/security.md).
DEFAULT_PORT, DEFAULT_HOST = 9108, "0.0.0.0"  # nosec B104
_server_started = False


def metrics_registry() -> CollectorRegistry:
    """What the worker's /metrics serves: all processes merged in multi-process mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def metrics_port() -> int:
    """``LEXRERANK_WORKER_METRICS_PORT`` (0 disables the endpoint)."""
    from lexrerank.config import get_settings

    return get_settings().worker_metrics_port


def serve_metrics() -> None:
    """Start the endpoint once per process (a busy port is logged, not fatal)."""
    global _server_started
    port = metrics_port()
    if port == 0 or _server_started:
        return
    if not os.environ.get(MULTIPROC_ENV):
        log.warning("%s is not set: /metrics shows the main process only (start workers "
                    "with `lexrerank worker`)", MULTIPROC_ENV)
    host = os.environ.get(HOST_ENV) or DEFAULT_HOST
    try:
        start_http_server(port, addr=host, registry=metrics_registry())
    except OSError as exc:
        # A second worker on the same machine: it runs, without its own endpoint.
        log.warning("worker metrics not served on %s:%d: %s (set %s to a free port, 0 to "
                    "disable)", host, port, exc, PORT_ENV)
        return
    _server_started = True
    log.info("worker metrics on http://%s:%d/metrics", host, port)


def mark_process_dead(pid: int) -> None:
    """Drop a stopped child's live gauges from the multi-process files."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
