"""The ``PROMETHEUS_MULTIPROC_DIR`` of a forking server (gateway ``--workers N``, Celery prefork).

prometheus-client's multi-process mode keeps each process's values in files in that
directory; it must be set before ``prometheus_client`` is imported and be empty at start-up
(prometheus-client's documentation). So this module imports prometheus-client only inside
:func:`process_registry`, never at import time: importing it must not load the library
before :func:`prepare_multiproc_dir` has set the variable (the children would then keep
their values in memory and the merged ``/metrics`` would be empty).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from lexrerank.config import get_settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiproc_dir(kind: str) -> Path:
    """Set up (and export) the directory for one server of ``kind`` ("gateway", "worker").

    A directory given in ``PROMETHEUS_MULTIPROC_DIR`` is used and emptied of metric files
    (give each server its own); otherwise a fresh private one is created.
    """
    given = get_settings().prometheus_multiproc_dir
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
    else:
        path = Path(tempfile.mkdtemp(prefix=f"lexrerank-{kind}-metrics-"))
        atexit.register(_remove_if_creator, path, os.getpid())
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def _remove_if_creator(path: Path, creator: int) -> None:
    # Forked children inherit atexit handlers: only the process that made the directory
    # removes it, when it exits.
    if os.getpid() == creator:
        shutil.rmtree(path, ignore_errors=True)


def process_registry() -> CollectorRegistry:
    """The registry a server exposes: its process's metrics, or every process's merged when
    ``PROMETHEUS_MULTIPROC_DIR`` is set (forking servers, :func:`prepare_multiproc_dir`)."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if get_settings().prometheus_multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY
