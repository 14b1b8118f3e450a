"""The worker's ``/metrics`` endpoint: prometheus-client's HTTP server in the main process.

Served on ``LEXRERANK_WORKER_METRICS_PORT`` (default 9108; 0 disables), on all interfaces
unless ``LEXRERANK_WORKER_METRICS_HOST`` narrows it (docs/security.md). In multi-process mode
(``PROMETHEUS_MULTIPROC_DIR``, set by ``lexrerank worker``) it merges every child's values.
Started by :mod:`worker.task_signals` at ``worker_init``.
"""

from __future__ import annotations

import logging

from prometheus_client import multiprocess, start_http_server

from lexrerank.config import get_settings
from lexrerank.prometheus_dir import process_registry

log = logging.getLogger(__name__)
_server_started = False


def metrics_port() -> int:
    """``LEXRERANK_WORKER_METRICS_PORT`` (0 disables the endpoint)."""
    return get_settings().worker_metrics_port


def serve_metrics() -> None:
    """Start the endpoint once per process (a busy port is logged, not fatal)."""
    global _server_started
    port = metrics_port()
    if port == 0 or _server_started:
        return
    settings = get_settings()
    if not settings.prometheus_multiproc_dir:
        log.warning("PROMETHEUS_MULTIPROC_DIR is not set: /metrics shows the main process only "
                    "(start workers with `lexrerank worker`)")
    host = settings.worker_metrics_host
    try:
        start_http_server(port, addr=host, registry=process_registry())
    except OSError as exc:
        # A second worker on the same machine: it runs, without its own endpoint.
        log.warning("worker metrics not served on %s:%d: %s (set %s to a free port, 0 to "
                    "disable)", host, port, exc, "LEXRERANK_WORKER_METRICS_PORT")
        return
    _server_started = True
    log.info("worker metrics on http://%s:%d/metrics", host, port)


def mark_process_dead(pid: int) -> None:
    """Drop a stopped child's live gauges from the multi-process files."""
    if get_settings().prometheus_multiproc_dir:
        multiprocess.mark_process_dead(pid)
