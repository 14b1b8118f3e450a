"""Limits on what the gateway accepts: body size, JSON nesting, query length, option ranges.

Hostile or careless input must get a clear 4xx in OpenSearch's error shape, never a 5xx, and
never take the process down. Every limit is configurable (``lexrerank.config``,
docs/security.md) and cheap: a header lookup per request, a C-speed bracket count per parsed body.

- :class:`BodyLimitMiddleware` (pure ASGI): a declared ``content-length`` above
  ``max_proxy_body_bytes`` (OpenSearch's own default, 100 MiB) is a 413 before the body is
  read; a chunked body is counted as it arrives. The smaller ``max_body_bytes`` bounds only
  the ``_search`` bodies the gateway parses itself (:class:`gateway.app.PlainProxyFastPath`
  decides which): a plain search of any size up to the proxy limit is OpenSearch's to answer.
- :func:`parse_search_body`: JSON that is not UTF-8, not JSON, or nested deeper than
  ``max_json_depth`` raises :class:`BodyError` (a 400), instead of a ``RecursionError``.
- :class:`Limits` carries the ranges that :func:`gateway.rerank_request.plan_search` checks
  (window, timeout, ``from + size``, query text length, the models workers may load).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.proxy import opensearch_error
from gateway.request_body import (
    EncodingError,
    decoded_body,
    has_lone_surrogate,
    may_hold_surrogates,
)
from lexrerank.config import Settings, default_of
from reranker.model_names import MODEL_NAMES as SHIPPED_MODELS  # torch-free: names only

#: The settings (``lexrerank.config``) a :class:`Limits` carries, with the same names.
LIMIT_SETTINGS = ("max_body_bytes", "max_proxy_body_bytes", "max_json_depth", "max_query_chars",
                  "max_result_window", "max_window", "max_timeout_ms", "max_header_bytes",
                  "max_header_read_ms", "max_body_read_ms", "max_connections")


@dataclass(frozen=True)
class Limits:
    """The gateway's input limits (build with :meth:`from_settings`).

    Each limit is the setting of the same name; its default and documentation are declared
    once, in :class:`lexrerank.config.Settings` (``LEXRERANK_MAX_*``). The HTTP edge's limits
    (``max_header_*``, ``max_body_read_ms``, ``max_connections``; :mod:`gateway.http_protocol`)
    are disabled by 0.
    """

    max_body_bytes: int = default_of("max_body_bytes")
    max_proxy_body_bytes: int = default_of("max_proxy_body_bytes")
    max_json_depth: int = default_of("max_json_depth")
    max_query_chars: int = default_of("max_query_chars")
    max_result_window: int = default_of("max_result_window")
    max_window: int = default_of("max_window")
    max_timeout_ms: int = default_of("max_timeout_ms")
    max_header_bytes: int = default_of("max_header_bytes")
    max_header_read_ms: int = default_of("max_header_read_ms")
    max_body_read_ms: int = default_of("max_body_read_ms")
    max_connections: int = default_of("max_connections")
    models: frozenset[str] = frozenset(SHIPPED_MODELS)

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits configured in ``settings``; the models are the shipped ones plus
        ``LEXRERANK_MODEL`` and ``LEXRERANK_MODELS`` (what the workers agree to load)."""
        return cls(**{name: getattr(settings, name) for name in LIMIT_SETTINGS},
                   models=frozenset((*SHIPPED_MODELS, "default", settings.default_model,
                                     *settings.extra_models)))


class BodyError(ValueError):
    """A body the gateway cannot read; ``response()`` is the 4xx to send.

    ``parsed`` is the decoded JSON when only the nesting limit failed (so the caller can still
    see whether it names the pipeline), else None.
    """

    def __init__(self, status: int, error_type: str, reason: str, parsed: Any = None) -> None:
        super().__init__(reason)
        self.status, self.error_type, self.reason, self.parsed = status, error_type, reason, parsed

    def response(self) -> JSONResponse:
        return opensearch_error(self.status, self.error_type, self.reason)


def json_depth_exceeds(value: Any, max_depth: int) -> bool:
    """True when ``value`` nests objects/arrays deeper than ``max_depth`` (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False


def parse_search_body(raw: bytes, max_depth: int, content_encoding: str | None = None,
                      max_bytes: int = Limits.max_body_bytes) -> Any:
    """The JSON in ``raw`` ({} when empty); raises :class:`BodyError` (400) when it is not
    UTF-8, not JSON, has a number too long to read or a lone surrogate, or nests deeper than
    ``max_depth``. A ``content_encoding`` (the request's header: gzip, deflate) is decoded
    first, to at most ``max_bytes`` (413 beyond; :mod:`gateway.request_body`)."""
    if content_encoding:
        try:
            raw = decoded_body(raw, content_encoding, max_bytes)
        except EncodingError as exc:
            raise BodyError(exc.status, exc.error_type, str(exc)) from None
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise BodyError(400, "parse_exception",
                        f"request body is not valid UTF-8 (byte {exc.start}): send UTF-8 JSON"
                        ) from None
    except json.JSONDecodeError as exc:
        raise BodyError(400, "parse_exception", f"request body is not JSON: {exc}") from None
    except ValueError:  # the only other: an integer literal past int()'s 4300 digits
        raise BodyError(400, "parse_exception",
                        "request body has a number with more digits than the gateway reads "
                        "(4300): send it as a string") from None
    except RecursionError:
        too_deep, value = True, None  # beyond Python's own recursion limit: far beyond ours
    else:
        # Fast path: a body with fewer brackets than the limit cannot nest deeper than it.
        too_deep = (raw.count(b"{") + raw.count(b"[") > max_depth
                    and json_depth_exceeds(value, max_depth))
    if too_deep:
        raise BodyError(400, "parse_exception",
                        f"request body nests JSON deeper than {max_depth} levels: flatten "
                        "the query (limit: LEXRERANK_MAX_JSON_DEPTH)",
                        parsed=value)
    if may_hold_surrogates(raw) and has_lone_surrogate(value):
        raise BodyError(400, "parse_exception",
                        "request body has a lone UTF-16 surrogate (an unpaired \\ud800-"
                        "\\udfff escape, or bytes ED A0-BF ..): it is not Unicode text; send "
                        "valid UTF-8", parsed=value)
    return value


def too_large(limit: int, env: str) -> JSONResponse:
    """The 413 for a body over ``limit`` bytes (``env`` names the setting that raises it)."""
    return opensearch_error(413, "content_too_long_exception",
                            f"request body is larger than {limit} bytes: send less "
                            f"(limit: {env})")


class _TooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes its limit."""


class BodyLimitMiddleware:
    """ASGI middleware: 413 for request bodies over ``max_proxy_body_bytes``."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, env = self.limits.max_proxy_body_bytes, "LEXRERANK_MAX_PROXY_BODY_BYTES"
        declared = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value
                break
        if declared is not None:
            # The server never delivers more than a declared length: checking it suffices.
            if not declared.isdigit() or int(declared) > limit:
                await too_large(limit, env)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send, limit, env)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int,
                       env: str) -> None:
        """A body without content-length (chunked): count it as it streams in."""
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            await too_large(limit, env)(scope, receive, send)
