"""Reading a ``_search`` request that names the ``lexrerank`` pipeline (pure, no I/O).

Decides whether a request is reranked, validates ``ext.rerank``, resolves the query text, and
builds the first-stage request that goes to OpenSearch: the user's own query with
``from=0, size=max(window_size, from+size)`` and without our parameters.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.request_body import is_unicode

if TYPE_CHECKING:
    from gateway.limits import Limits

PIPELINE = "lexrerank"
DEFAULT_WINDOW = 100
MAX_WINDOW = 1000
MAX_TIMEOUT_MS = 60_000
DEFAULT_SIZE = 10
RERANK_KEYS = {"query_context", "window_size", "model", "timeout_ms", "explain"}
# Query shapes whose text can stand in for ``query_context`` when it is not given.
_TEXT_QUERIES = ("match", "match_phrase", "match_bool_prefix")
_STRING_QUERIES = ("multi_match", "simple_query_string", "query_string", "combined_fields")


class RequestError(ValueError):
    """A malformed rerank request: answered 400 in OpenSearch's error shape."""


@dataclass(frozen=True)
class RerankOptions:
    """What the pipeline needs beyond the first-stage request: the ``ext.rerank`` options
    and the page asked for (what the worker is sent is :class:`worker.protocol.RerankRequest`)."""

    query_text: str | None  # None: not resolvable (only for index-default pipelines)
    window: int
    model: str
    timeout_ms: int
    explain: bool
    from_: int
    size: int

    @property
    def first_stage_size(self) -> int:
        """Hits fetched from OpenSearch: the whole window, and at least the asked page."""
        return max(self.window, self.from_ + self.size)


@dataclass(frozen=True)
class PlannedSearch:
    """A reranked search: the parsed options and the request to send to OpenSearch."""

    rerank: RerankOptions
    params: list[tuple[str, str]]  # query string for the first stage
    body: dict[str, Any]  # body for the first stage


def names_pipeline(params: Sequence[tuple[str, str]], body: Mapping[str, Any]) -> bool:
    """True when the request asks for our pipeline (query string or body)."""
    return (any(k == "search_pipeline" and v == PIPELINE for k, v in params)
            or body.get("search_pipeline") == PIPELINE)


def disables_pipelines(params: Sequence[tuple[str, str]], body: Mapping[str, Any]) -> bool:
    """``search_pipeline=_none`` (OpenSearch's way to skip an index's default pipeline)."""
    return (any(k == "search_pipeline" and v == "_none" for k, v in params)
            or body.get("search_pipeline") == "_none")


def incompatible_reason(params: Sequence[tuple[str, str]], body: Mapping[str, Any]
                        ) -> str | None:
    """Why a request cannot be reranked (it pages or orders by something else), or None."""
    keys = {k for k, _ in params}
    if "scroll" in keys:
        return "scroll requests are not reranked"
    if "filter_path" in keys:
        return "filter_path is not supported with the lexrerank pipeline"
    if "search_after" in body or "pit" in body:
        return "search_after / point-in-time paging is not reranked"
    stored = body.get("stored_fields")
    if (stored == "_none_" or (isinstance(stored, list) and "_none_" in stored)
            or any(k == "stored_fields" and "_none_" in v.split(",") for k, v in params)):
        return ('stored_fields "_none_" drops the hits\' _id, which reranking needs: '
                "leave it out (or name fields) to rerank")
    if "sort" in body and not _sorts_by_score(body["sort"]):
        return "requests sorted by a field are not reranked"
    for k, v in params:
        if k == "sort" and v not in ("_score", "_score:desc"):
            return "requests sorted by a field are not reranked"
    return None


def _sorts_by_score(sort: Any) -> bool:
    items = sort if isinstance(sort, list) else [sort]
    for item in items:
        if item == "_score":
            continue
        if isinstance(item, dict) and list(item) == ["_score"]:
            order = item["_score"]
            if order in ("desc", {"order": "desc"}) or order == {}:
                continue
        return False
    return True


def resolve_path(body: Any, path: str) -> Any:
    """The value at dotted ``path`` in ``body`` (list positions as numbers), or None."""
    node = body
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif (isinstance(node, list) and part.isdecimal() and len(part) < 10
              and int(part) < len(node)):
            node = node[int(part)]
        else:
            return None
    return node


def infer_query_text(body: Mapping[str, Any], params: Sequence[tuple[str, str]]) -> str | None:
    """The text of a simple query (``match``, ``multi_match``, ``?q=`` ...), or None."""
    for k, v in params:
        if k == "q" and v.strip():
            return v
    query = body.get("query")
    if not isinstance(query, Mapping) or len(query) != 1:
        return None
    ((kind, spec),) = query.items()
    if kind in _TEXT_QUERIES and isinstance(spec, Mapping) and len(spec) == 1:
        (inner,) = spec.values()
        text = inner.get("query") if isinstance(inner, Mapping) else inner
        return text if isinstance(text, str) and text.strip() else None
    if kind in _STRING_QUERIES and isinstance(spec, Mapping):
        text = spec.get("query")
        return text if isinstance(text, str) and text.strip() else None
    return None


def _int(value: Any, name: str, low: int, high: int) -> int:
    """An integer option (JSON number or query-string digits) within [low, high]."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        # Digits int() refuses ("²"), or more than it converts (> 4300): an error below.
        with contextlib.suppress(ValueError):
            value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name} must be an integer, got {repr(value)[:100]}")
    if not low <= value <= high:
        raise RequestError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _query_text(options: Mapping[str, Any], body: Mapping[str, Any],
                params: Sequence[tuple[str, str]]) -> str | None:
    context = options.get("query_context")
    if context is None:
        return infer_query_text(body, params)
    if not isinstance(context, Mapping):
        raise RequestError("ext.rerank.query_context must be an object with query_text or "
                           "query_text_path")
    if "query_text" in context:
        text = context["query_text"]
        if not isinstance(text, str) or not text.strip():
            raise RequestError("ext.rerank.query_context.query_text must be a non-empty string")
        return text
    if "query_text_path" in context:
        path = context["query_text_path"]
        text = resolve_path(body, path) if isinstance(path, str) else None
        if not isinstance(text, str) or not text.strip():
            raise RequestError(f"ext.rerank.query_context.query_text_path {repr(path)[:100]} "
                               "does not lead to a non-empty string in the request body")
        return text
    raise RequestError("ext.rerank.query_context needs query_text or query_text_path")


def plan_search(params: Sequence[tuple[str, str]], body: Mapping[str, Any],
                default_model: str, default_timeout_ms: int, limits: Limits | None = None
                ) -> PlannedSearch:
    """Parse a reranked ``_search`` and build its first-stage request.

    ``params`` is the query string as pairs, ``body`` the parsed JSON body ({} when none).
    URL ``from``/``size`` win over the body's, as in OpenSearch. ``limits`` (the gateway's
    configured :class:`gateway.limits.Limits`) also bounds ``from + size``, the query text's
    length and the model names; without it only the built-in ranges apply.
    Raises :class:`RequestError`.
    """
    # Checked in this order: a request with several problems is told the first one.
    options = _rerank_options(body)
    from_, size = _page(params, body, limits)
    model = _model(options, default_model, limits)
    explain = _explain(options)
    max_window = limits.max_window if limits is not None else MAX_WINDOW
    query_text = _checked_query_text(options, body, params, limits)
    rerank = RerankOptions(
        query_text=query_text,
        window=_int(options.get("window_size", min(DEFAULT_WINDOW, max_window)),
                    "ext.rerank.window_size", 1, max_window),
        model=model,
        timeout_ms=_int(options.get("timeout_ms", default_timeout_ms), "ext.rerank.timeout_ms",
                        1, limits.max_timeout_ms if limits is not None else MAX_TIMEOUT_MS),
        explain=explain,
        from_=from_,
        size=size,
    )
    return _first_stage_request(params, body, rerank)


def _rerank_options(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """``ext.rerank`` of ``body`` ({} when absent), with no key we do not know."""
    ext = body.get("ext", {})
    if not isinstance(ext, Mapping):
        raise RequestError("ext must be an object")
    options = ext.get("rerank", {})
    if not isinstance(options, Mapping):
        raise RequestError("ext.rerank must be an object")
    unknown = set(options) - RERANK_KEYS
    if unknown:
        raise RequestError(f"unknown key(s) {sorted(unknown)} in ext.rerank; known: "
                           f"{sorted(RERANK_KEYS)}")
    return options


def _page(params: Sequence[tuple[str, str]], body: Mapping[str, Any],
          limits: Limits | None) -> tuple[int, int]:
    """``(from, size)`` asked for (the URL's win over the body's)."""
    url = dict(params)
    max_page = limits.max_result_window if limits is not None else 1_000_000
    from_ = _int(url.get("from", body.get("from", 0)), "from", 0, max_page)
    size = _int(url.get("size", body.get("size", DEFAULT_SIZE)), "size", 0, max_page)
    if limits is not None and from_ + size > max_page:
        raise RequestError(f"from + size must be at most {max_page}, got {from_ + size}: page "
                           "with a smaller from (limit: LEXRERANK_MAX_RESULT_WINDOW)")
    return from_, size


def _model(options: Mapping[str, Any], default_model: str, limits: Limits | None) -> str:
    model = options.get("model", default_model)
    if not isinstance(model, str) or not model.strip():
        raise RequestError("ext.rerank.model must be a non-empty string")
    if limits is not None and model not in limits.models:
        raise RequestError(f"unknown ext.rerank.model {model[:100]!r}: use one of "
                           f"{sorted(limits.models)} (more via LEXRERANK_MODELS)")
    return model


def _explain(options: Mapping[str, Any]) -> bool:
    explain = options.get("explain", False)
    if not isinstance(explain, bool):
        raise RequestError("ext.rerank.explain must be true or false")
    return explain


def _checked_query_text(options: Mapping[str, Any], body: Mapping[str, Any],
                        params: Sequence[tuple[str, str]], limits: Limits | None
                        ) -> str | None:
    """The query text (None: not resolvable), checked to be Unicode and short enough."""
    query_text = _query_text(options, body, params)
    if query_text is not None and not is_unicode(query_text):
        # Never sent to a worker: its tokenizer fails on it (a TypeError as the fallback).
        raise RequestError("the query text has a lone UTF-16 surrogate: it is not Unicode "
                           "text; send valid UTF-8")
    if limits is not None and query_text is not None and len(query_text) > limits.max_query_chars:
        raise RequestError(f"the query text has {len(query_text)} characters, more than "
                           f"{limits.max_query_chars}: shorten it "
                           "(limit: LEXRERANK_MAX_QUERY_CHARS)")
    return query_text


def _first_stage_request(params: Sequence[tuple[str, str]], body: Mapping[str, Any],
                         rerank: RerankOptions) -> PlannedSearch:
    """The user's request as it goes to OpenSearch: from 0, the whole window, no pipeline."""
    first = copy.deepcopy(dict(body))
    if first.get("search_pipeline") == PIPELINE:
        del first["search_pipeline"]
    if isinstance(first.get("ext"), dict):
        first["ext"].pop("rerank", None)
        if not first["ext"]:
            del first["ext"]
    first["from"] = 0
    first["size"] = rerank.first_stage_size
    forwarded = [(k, v) for k, v in params
                 if k not in ("from", "size") and not (k == "search_pipeline" and v == PIPELINE)]
    return PlannedSearch(rerank, forwarded, first)
