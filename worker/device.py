"""Which device a worker process runs its model on, and how many processes a worker host runs.

A single-GPU or CPU host needs nothing: the model picks ``cuda`` (fp16) when present, else
``cpu``. With several GPUs, ``lexrerank worker`` starts one pool child per GPU and each child
takes the GPU of its pool index. On a CPU host it starts one child per core (at most
:data:`MAX_CPU_PROCESSES`).
"""

from __future__ import annotations

import os
import shutil
import subprocess


def gpu_count() -> int:
    """GPUs visible to this host, counted WITHOUT initialising CUDA in this process.

    The prefork parent must not touch CUDA (a CUDA context does not survive a fork), so this
    asks ``nvidia-smi`` and honours ``CUDA_VISIBLE_DEVICES``.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


# Each process holds its own model and vector cache (~0.8 GB with the COLIEE statutes):
# beyond a few, add worker hosts (or say --concurrency) rather than fill one host's memory.
MAX_CPU_PROCESSES = 4


def default_processes() -> int:
    """Worker processes when ``--concurrency`` is not given: one per GPU, else one per core.

    On CPU a process uses one core (one torch thread, :func:`torch_threads`); one process per
    core is what lets concurrent searches use the host. Measured on this project's shared
    2-core machine (`lexrerank bench pipeline`, 8 clients): reranked p50 272-288 ms with one
    process, 188-211 ms with two.
    """
    gpus = gpu_count()
    if gpus:
        return gpus
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_CPU_PROCESSES))


def child_device() -> str | None:
    """``cuda:<i>`` for the i-th pool child on a multi-GPU host; None = choose automatically."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count <= 1:
        return None
    from billiard.process import current_process

    index = getattr(current_process(), "index", None) or 0
    return f"cuda:{index % count}"


THREADS_ENV = "LEXRERANK_TORCH_THREADS"  # written by `lexrerank worker` for its children


def torch_threads() -> int:
    """torch threads per worker process: ``LEXRERANK_TORCH_THREADS``, default 1.

    One query is a small amount of work (a 6-layer encoder over ~30 tokens, then a small
    attention): intra-op threads gain little, and on a CPU shared with other jobs they
    oversubscribe the cores (README, "Gateway and workers", has the figures). Use more
    processes (``--concurrency``), not more threads, to use more cores.
    """
    from lexrerank.config import get_settings

    return get_settings().torch_threads


def apply_torch_threads() -> None:
    """Set this process's torch threads to :func:`torch_threads`."""
    import torch

    torch.set_num_threads(torch_threads())
