"""The reranker library's exceptions (the whole tree is documented in :mod:`lexrerank.errors`).

Every error the library raises on purpose is a :class:`LexrerankError`: its message names the
problem and, where possible, the fix, so a caller can show it as one line. The library never
imports the command line or the services; they catch these types (the root keeps its name,
since every layer catches it).
"""

from __future__ import annotations

__all__ = ["InputError", "LanguageMismatch", "LexrerankError"]


class LexrerankError(Exception):
    """A user-facing error: the message names the problem and, where possible, the fix."""


class InputError(LexrerankError):
    """Malformed input: the message names the file, the line (where known) and the reason."""

    def __init__(self, path: str, reason: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = str(path)
        self.line = line
        self.reason = reason


class LanguageMismatch(LexrerankError):
    """No model fits the index's language: the one named was trained for another language,
    or none is trained for this one (the gateway's fallback category ``language_mismatch``)."""
