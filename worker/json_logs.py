"""JSON-lines logs for the workers, with the gateway's request id on a task's lines.

The gateway sends its request id as the task message header ``lexrerank_request_id``;
:func:`set_task_context` (called at ``task_prerun``) makes it, the task id and the task name
appear on every line logged while that task runs. Hooked into Celery's logging set-up through
the ``after_setup_logger`` / ``after_setup_task_logger`` signals.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from celery.signals import after_setup_logger, after_setup_task_logger

from lexrerank.json_logs import JsonLineFormatter

REQUEST_ID_HEADER = "lexrerank_request_id"
_task_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "lexrerank_task_context", default=None)


def request_id_of(request: Any) -> str | None:
    """The gateway request id carried by a task request (a custom message header)."""
    if request is None:
        return None
    value = getattr(request, REQUEST_ID_HEADER, None)
    if value is None:
        headers = getattr(request, "headers", None) or {}
        value = headers.get(REQUEST_ID_HEADER) if isinstance(headers, dict) else None
    return str(value) if value else None


def set_task_context(task_id: str | None, task_name: str | None,
                     request_id: str | None) -> None:
    """Tag the lines logged from now on (until :func:`clear_task_context`) with the task."""
    context = {"task_id": task_id, "task": task_name, "request_id": request_id}
    _task_context.set({k: v for k, v in context.items() if v})


def clear_task_context() -> None:
    _task_context.set(None)


class WorkerJsonFormatter(JsonLineFormatter):
    """One JSON object per line: ts, level, logger, msg, process, task context, extra fields."""

    def context(self, record: logging.LogRecord) -> dict[str, Any]:
        return {"pid": record.process, **(_task_context.get() or {})}


def use_json(logger: logging.Logger) -> None:
    """Give every handler of ``logger`` the JSON formatter."""
    for handler in logger.handlers:
        handler.setFormatter(WorkerJsonFormatter())


@after_setup_logger.connect
def _json_root_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    if logger is not None:
        use_json(logger)


@after_setup_task_logger.connect
def _json_task_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    if logger is not None:
        use_json(logger)
