"""This process's memory, read from ``/proc/self/status`` (Linux; no extra dependency)."""

from __future__ import annotations

from pathlib import Path


def _status_kib(field: str, pid: int | str = "self") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident set size of ``pid`` (default: this process) in MiB, None where unknown."""
    kib = _status_kib("VmRSS", pid)
    return None if kib is None else kib / 1024


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """Peak resident set size (``VmHWM``) of ``pid`` in MiB, None where unknown."""
    kib = _status_kib("VmHWM", pid)
    return None if kib is None else kib / 1024
