"""JSON-lines logging shared by the gateway and the workers: one object per line.

Lines are compact (``{"ts":"…","level":"info",…}``): the gateway writes one per request, so
they are encoded with orjson (the standard library where orjson refuses a value, e.g. an
integer beyond 64 bits) and the timestamp's seconds are formatted once per second.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson


class JsonLineFormatter(logging.Formatter):
    """``ts, level, logger, msg``, then :meth:`context`, the record's ``fields`` and ``exc``.

    Subclasses add what identifies the work in hand (a request id, a task) in ``context``.
    """

    _second: tuple[int, str] = (-1, "")  # the last second formatted, and its text

    def context(self, record: logging.LogRecord) -> dict[str, Any]:
        return {}

    def timestamp(self, record: logging.LogRecord) -> str:
        """Local time to the millisecond, ``2026-11-27T01:02:03.456``."""
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, self.formatTime(record, "%Y-%m-%dT%H:%M:%S"))
        return f"{self._second[1]}.{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(self.context(record))
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(entry, default=str).decode()
        except TypeError:  # orjson.JSONEncodeError: e.g. an integer beyond 64 bits
            return json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))
