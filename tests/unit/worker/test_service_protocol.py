"""The rerank service's request contract (worker/service_protocol.py)."""

from __future__ import annotations

import pytest

from worker.protocol import MAX_CANDIDATES
from worker.service_protocol import (
    PROTOCOL_VERSION,
    ServiceHit,
    ServiceRequest,
    ServiceRequestError,
    service_answer,
)


def body(**extra: object) -> dict[str, object]:
    return {"version": PROTOCOL_VERSION, "index": "statutes", "query_text": "minor",
            "hits": [{"_id": "1", "_score": 2}, {"_id": "2", "_score": 1.5, "_index": "s-1"}],
            **extra}


def test_a_minimal_request_takes_the_gateway_s_defaults() -> None:
    request = ServiceRequest.from_json(body())
    assert request.hits == (ServiceHit("1", 2.0, None), ServiceHit("2", 1.5, "s-1"))
    assert (request.model, request.explain, request.timeout_ms, request.window_size) == (
        None, False, None, None)


@pytest.mark.parametrize(("change", "message"), [
    ({"version": None}, "unsupported rerank protocol version None"),
    ({"version": True}, "unsupported rerank protocol version True"),
    ({"extra": 1}, "unknown key(s) ['extra']"),
    ({"index": ""}, "index must be a non-empty string"),
    ({"hits": [{"_id": "1"}]}, "hits[0]._score must be a finite number"),
    ({"hits": [{"_id": "1", "_score": float("nan")}]}, "hits[0]._score must be a finite"),
    ({"hits": [{"_id": 1, "_score": 1}]}, "hits[0]._id must be a non-empty string"),
    ({"hits": [{"_id": "1", "_score": 1, "_source": {}}]}, "hits[0] must be an object"),
    ({"hits": [{"_id": "1", "_score": 1}] * (MAX_CANDIDATES + 1)}, "at most 1000"),
    ({"explain": "yes"}, "explain must be true or false"),
    ({"timeout_ms": 0}, "timeout_ms must be a positive number"),
    ({"window_size": 1.5}, "window_size must be a positive integer"),
    ({"window_size": 1}, "2 hits were sent for a window_size of 1"),
    ({"model": ""}, "model must be a non-empty string"),
])
def test_malformed_requests_are_refused_naming_the_problem(change: dict, message: str) -> None:
    with pytest.raises(ServiceRequestError) as caught:
        ServiceRequest.from_json(body(**change))
    assert message in str(caught.value)


def test_not_an_object_is_refused() -> None:
    with pytest.raises(ServiceRequestError, match="must be a JSON object"):
        ServiceRequest.from_json([body()])


def test_the_answer_carries_the_version() -> None:
    assert service_answer("fallback", [], {"status": "fallback"}) == {
        "version": PROTOCOL_VERSION, "status": "fallback", "hits": [],
        "rerank": {"status": "fallback"}}
