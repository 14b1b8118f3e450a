"""JSON-lines logging shared by the gateway and the workers: one object per line."""

from __future__ import annotations

import json
import logging
from typing import Any


class JsonLineFormatter(logging.Formatter):
    """``ts, level, logger, msg``, then :meth:`context`, the record's ``fields`` and ``exc``.

    Subclasses add what identifies the work in hand (a request id, a task) in ``context``.
    """

    def context(self, record: logging.LogRecord) -> dict[str, Any]:
        return {}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(self.context(record))
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
