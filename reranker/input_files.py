"""Reading a whole input file (corpus or query set) with the project's own errors."""

from __future__ import annotations

from pathlib import Path

from reranker.errors import InputError


def read_input(path: Path, what: str) -> bytes:
    """The bytes of ``path``; missing, a directory (``what`` names the file expected) or
    unreadable becomes :class:`InputError`."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(str(path), "file not found") from None
    except IsADirectoryError:
        raise InputError(str(path), f"is a directory; give {what}") from None
    except OSError as e:
        raise InputError(str(path), f"cannot read file ({e.strerror})") from None
