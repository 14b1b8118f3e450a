"""Request ids and structured (JSON lines) logs for the gateway.

Every request gets an id: the client's ``X-Request-Id`` when it sends a sane one, else a new
one. The id is echoed in the response header and appears in every log line written while the
request is handled. One ``request`` line per request records method, path, status and
milliseconds, plus what the handler adds (rerank status and reason); never the query text.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lexrerank.json_logs import JsonLineFormatter

REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                       default=None)
# Fields a handler adds to its request's log line (e.g. rerank status); per request.
request_fields: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "request_fields", default=None)
access_log = logging.getLogger("lexrerank.gateway.access")


def annotate(**fields: Any) -> None:
    """Add ``fields`` to the current request's log line."""
    current = request_fields.get()
    if current is not None:
        current.update(fields)


class JsonFormatter(JsonLineFormatter):
    """One JSON object per line: time, level, logger, message, request id, extra fields."""

    def context(self, record: logging.LogRecord) -> dict[str, Any]:
        rid = request_id.get()
        return {"request_id": rid} if rid else {}


def setup_logging(level: str = "info") -> None:
    """JSON lines on stderr for the gateway's own loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("lexrerank")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class RequestIdMiddleware:
    """ASGI middleware: assigns the request id, echoes it, logs one line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"]
                      if k == REQUEST_ID_HEADER.encode()), None)
        rid = given if given and _SANE_ID.match(given) else uuid.uuid4().hex
        id_token = request_id.set(rid)
        fields: dict[str, Any] = {}
        fields_token = request_fields.set(fields)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != REQUEST_ID_HEADER.encode()]
                headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info("request", extra={"fields": {
                "method": scope["method"], "path": scope["path"], "status": status,
                "ms": round((time.perf_counter() - start) * 1000, 2), **fields}})
            request_fields.reset(fields_token)
            request_id.reset(id_token)
