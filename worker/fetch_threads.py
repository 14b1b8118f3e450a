"""The threads of a process that read a rerank's window (one ``mget``) while its query encodes.

Both the Celery task (:mod:`worker.tasks`: it also waits for the handoff there) and the
in-process :meth:`worker.rerank_service.RerankService.rerank` overlap that I/O with the
encode: the encoders (ONNX Runtime, torch) release the GIL, so the read costs the rerank
nothing but a thread switch. One pool per process, made in the process that uses it (a
prefork child), never inherited through a fork; one thread per rerank in flight (a threads
pool runs several at once), started only when needed.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

__all__ = ["FETCH_THREADS", "fetch_threads"]

FETCH_THREADS = 64
_pool: tuple[int, ThreadPoolExecutor] | None = None


def fetch_threads() -> ThreadPoolExecutor:
    """This process's fetch pool (a new one after a fork: threads do not survive it)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(FETCH_THREADS,
                                                 thread_name_prefix="rerank-fetch"))
    return _pool[1]
