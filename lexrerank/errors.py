"""Errors that the command line turns into one clear line (no traceback)."""


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
