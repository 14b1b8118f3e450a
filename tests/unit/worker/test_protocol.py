"""The rerank protocol (worker/protocol.py): encodings round-trip, hostile input is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lexrerank.errors import LanguageMismatch, LexrerankError
from worker import protocol
from worker.protocol import (
    AnswerError,
    Handoff,
    ReasonCode,
    RerankFailed,
    RerankRequest,
    answer_of,
    parse_answer,
    parse_handoff,
)


def request_json(**changes: Any) -> dict[str, Any]:
    base = RerankRequest("who may sign a contract", "paraformer", False,
                         protocol.handoff_key("task-1"), 980.5).to_json()
    return {**base, **changes}


def answer(**changes: Any) -> dict[str, Any]:
    hit = {"doc_id": "a", "score": 0.5, "first_stage_rank": 1, "first_stage_score": 3.0,
           "model_score": 0.2, "evidence": [{"sentence_index": 0, "sentence": "s",
                                              "weight": 1.0}]}
    return {"hits": [hit], "model": "paraformer", "model_version": "v1",
            "query_truncated": False, "timing_ms": {"rerank": 1.5}, **changes}


# ------------------------------------------------------------------------------- round trips

def test_the_request_round_trips_through_json() -> None:
    sent = request_json()
    assert set(sent) == {"query", "model", "explain", "handoff", "wait_ms"}
    again = RerankRequest.from_json(json.loads(json.dumps(sent)))
    assert again.to_json() == sent
    assert RerankRequest.from_json({**sent, "wait_ms": 5}).wait_ms == 5.0


def test_the_handoff_round_trips_through_json() -> None:
    message = protocol.candidates_message("statutes-v2", [["a", 1.5], ["b", 2]])
    assert parse_handoff(message) == Handoff("statutes-v2", [("a", 1.5), ("b", 2.0)])
    assert parse_handoff(message.decode()) == parse_handoff(message)
    with pytest.raises(RerankFailed, match="called the rerank off: no hits") as raised:
        parse_handoff(protocol.abort_message("no hits"))
    assert raised.value.code is ReasonCode.CALLED_OFF


def test_the_answer_is_checked_and_passed_on_uncopied() -> None:
    given = answer()
    assert parse_answer(given) is given
    assert answer_of({"status": "SUCCESS", "result": given}) is given
    parse_answer(answer(hits=[], model_version=None, timing_ms={}))


def test_a_worker_failure_carries_its_code_through_the_result_meta() -> None:
    failed = RerankFailed(ReasonCode.NO_VECTORS, "index 'x' has no article vectors")
    # What Celery's JSON result backend stores for a raised exception.
    meta = {"status": "FAILURE", "result": {"exc_type": type(failed).__qualname__,
                                            "exc_module": type(failed).__module__,
                                            "exc_message": list(failed.args)}}
    with pytest.raises(RerankFailed) as raised:
        answer_of(json.loads(json.dumps(meta)))
    assert raised.value.code is ReasonCode.NO_VECTORS
    assert str(raised.value) == "worker error: index 'x' has no article vectors"
    # Celery can rebuild it from its args too (what AsyncResult.get would do).
    assert str(RerankFailed(*failed.args)) == str(failed)


def test_library_errors_get_their_code_by_type() -> None:
    mismatch = protocol.as_rerank_failed(LanguageMismatch("model for en, index is vi"))
    assert mismatch.code is ReasonCode.LANGUAGE_MISMATCH and mismatch.kind == "LanguageMismatch"
    other = protocol.as_rerank_failed(LexrerankError("redelivered 3 times"))
    assert other.code is ReasonCode.WORKER_ERROR and other.kind == "LexrerankError"
    same = RerankFailed(ReasonCode.UNKNOWN_MODEL, "x")
    assert protocol.as_rerank_failed(same) is same
    with pytest.raises(RerankFailed) as raised:
        answer_of({"status": "FAILURE", "result": {
            "exc_type": "RerankFailed", "exc_module": "worker.protocol",
            "exc_message": list(mismatch.args)}})
    assert raised.value.code is ReasonCode.LANGUAGE_MISMATCH
    assert str(raised.value).startswith("worker error: LanguageMismatch: model for en")


def test_the_codes_are_a_closed_set_of_lower_case_words() -> None:
    values = [code.value for code in ReasonCode]
    assert len(values) == len(set(values))
    assert all(v.replace("_", "").isalpha() and v.islower() for v in values)
    for expected in ("timeout", "no_worker", "worker_error", "redis_unavailable", "bad_answer",
                     "mixed_indexes", "no_vectors", "language_mismatch", "deadline_passed"):
        assert ReasonCode(expected)  # the codes DESIGN.md names
    with pytest.raises(ValueError):
        RerankFailed("other", "a code outside the set")


# ----------------------------------------------------------------------- refusing bad input

@pytest.mark.parametrize("bad, message", [
    ("not an object", "must be a JSON object"),
    ([1, 2, 3], "must be a JSON object"),
    (request_json(index="statutes"), "unknown fields"),
    ({k: v for k, v in request_json().items() if k != "handoff"}, "lacks"),
    (request_json(query=""), "query text is empty"),
    (request_json(query="   "), "query text is empty"),
    (request_json(query=["a"]), "query text is empty"),
    (request_json(query="x" * (protocol.MAX_QUERY_CHARS + 1)), "longer than"),
    (request_json(model=""), "the model"),
    (request_json(model=7), "the model"),
    (request_json(model="m" * (protocol.MAX_NAME_CHARS + 1)), "the model"),
    (request_json(explain="yes"), "explain"),
    (request_json(explain=1), "explain"),
    (request_json(wait_ms="100"), "wait_ms"),
    (request_json(wait_ms=True), "wait_ms"),
    (request_json(wait_ms=-1), "wait_ms"),
    (request_json(wait_ms=float("nan")), "wait_ms"),
    (request_json(wait_ms=float("inf")), "wait_ms"),
    (request_json(wait_ms=protocol.MAX_WAIT_MS + 1), "wait_ms"),
    (request_json(handoff="celery"), "not a candidates handoff key"),
    (request_json(handoff=protocol.HANDOFF_KEY_PREFIX), "not a candidates handoff key"),
    (request_json(handoff=protocol.handoff_key("x" * 500)), "not a candidates handoff key"),
    (request_json(handoff=["lexrerank:candidates:1"]), "not a candidates handoff key"),
])
def test_requests_an_attacker_could_send_are_refused(bad: Any, message: str) -> None:
    with pytest.raises(RerankFailed, match=message) as raised:
        RerankRequest.from_json(bad)
    assert raised.value.code is ReasonCode.BAD_REQUEST


@pytest.mark.parametrize("raw, message", [
    (b"not json", "unreadable"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"candidates": []}', "names no index"),
    (b'{"index": "", "candidates": []}', "names no index"),
    (b'{"index": 5, "candidates": []}', "names no index"),
    (b'{"index": "i"}', "candidates must be a list"),
    (b'{"index": "i", "candidates": {"a": 1}}', "candidates must be a list"),
    (b'{"index": "i", "candidates": [["a"]]}', "bad candidate"),
    (b'{"index": "i", "candidates": [["a", 1, 2]]}', "bad candidate"),
    (b'{"index": "i", "candidates": [[1, 1.0]]}', "bad candidate"),
    (b'{"index": "i", "candidates": [["a", "1.0"]]}', "bad candidate"),
    (b'{"index": "i", "candidates": [["a", true]]}', "bad candidate"),
    (b'{"index": "i", "candidates": [["a", NaN]]}', "bad candidate"),
    (b'{"index": "i", "candidates": [["a", Infinity]]}', "bad candidate"),
])
def test_handoff_messages_an_attacker_could_send_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(RerankFailed, match=message) as raised:
        parse_handoff(raw)
    assert raised.value.code is ReasonCode.BAD_REQUEST


def test_huge_handoffs_are_refused() -> None:
    many = [[f"d{i}", 1.0] for i in range(protocol.MAX_CANDIDATES + 1)]
    with pytest.raises(RerankFailed, match="at most"):
        parse_handoff(protocol.candidates_message("i", many))
    long_id = [["x" * (protocol.MAX_DOC_ID_CHARS + 1), 1.0]]
    with pytest.raises(RerankFailed, match="bad candidate"):
        parse_handoff(protocol.candidates_message("i", long_id))
    assert len(parse_handoff(protocol.candidates_message("i", many[:-1])).candidates) == (
        protocol.MAX_CANDIDATES)


@pytest.mark.parametrize("bad, message", [
    ("hits", "not a JSON object"),
    (answer(hits={"a": 1}), "hits are not a list"),
    (answer(hits=[{"doc_id": "a"}] * (protocol.MAX_CANDIDATES + 1)), "hits are not a list"),
    (answer(hits=[["a", 1.0]]), "not an object with a doc_id"),
    (answer(hits=[{**answer()["hits"][0], "doc_id": 3}]), "not an object with a doc_id"),
    (answer(hits=[{**answer()["hits"][0], "score": "1"}]), "score is not a number"),
    (answer(hits=[{**answer()["hits"][0], "model_score": None}]), "model_score"),
    (answer(hits=[{**answer()["hits"][0], "first_stage_rank": 0}]), "first_stage_rank"),
    (answer(hits=[{**answer()["hits"][0], "first_stage_rank": 1.5}]), "first_stage_rank"),
    (answer(hits=[{**answer()["hits"][0], "evidence": "s"}]), "evidence is not a list"),
    (answer(hits=[{**answer()["hits"][0], "evidence": [{"weight": 1.0}]}]), "bad evidence"),
    (answer(model=None), "names no model"),
    (answer(model_version=3), "model_version"),
    (answer(query_truncated="no"), "query_truncated"),
    (answer(timing_ms={"rerank": "fast"}), "timing_ms"),
])
def test_malformed_answers_are_refused(bad: Any, message: str) -> None:
    with pytest.raises(AnswerError, match=message):
        parse_answer(bad)
    with pytest.raises(RerankFailed, match="bad worker answer") as raised:
        answer_of({"status": "SUCCESS", "result": bad})
    assert raised.value.code is ReasonCode.BAD_ANSWER


@pytest.mark.parametrize("exc_message", [
    ["no_such_code", "message", None],  # a code outside the closed set
    ["timeout", 5, None],
    ["timeout"],
    "timeout: message",
])
def test_worker_failures_of_unknown_shape_or_code_are_bad_answers(exc_message: Any) -> None:
    with pytest.raises(RerankFailed) as raised:
        answer_of({"status": "FAILURE", "result": {
            "exc_type": "RerankFailed", "exc_module": "worker.protocol",
            "exc_message": exc_message}})
    assert raised.value.code is ReasonCode.BAD_ANSWER


def test_only_our_exception_type_is_read_for_a_code() -> None:
    # Another module's class of the same name does not choose the code.
    with pytest.raises(RerankFailed) as raised:
        answer_of({"status": "FAILURE", "result": {
            "exc_type": "RerankFailed", "exc_module": "elsewhere",
            "exc_message": ["no_vectors", "m", None]}})
    assert raised.value.code is ReasonCode.WORKER_ERROR


def test_the_abort_reason_is_bounded() -> None:
    assert len(protocol.abort_message("x" * 100_000)) < protocol.MAX_REASON_CHARS + 50


def test_keys_and_task_names() -> None:
    assert protocol.handoff_key("t").startswith(protocol.HANDOFF_KEY_PREFIX)
    assert protocol.handoff_ttl_s(0.2) == 1 + protocol.HANDOFF_TTL_MARGIN_S
    assert protocol.handoff_ttl_s(0) >= protocol.HANDOFF_TTL_MARGIN_S
    assert protocol.RERANK_TASK == "lexrerank.rerank"
    from worker.celery_app import make_app

    assert protocol.result_key(make_app(), "abc") == b"celery-task-meta-abc"
    assert protocol.request_model([request_json()], {}) == "paraformer"
    assert protocol.request_model([], {"request": request_json(model="m")}) == "m"
    assert protocol.request_model(None, None) is None


def test_worker_failures_become_readable_reasons() -> None:
    answer = {"hits": [], "model": "m", "model_version": "v", "query_truncated": False,
              "timing_ms": {}}
    assert answer_of({"status": "SUCCESS", "result": answer}) == answer
    with pytest.raises(RerankFailed, match="LexrerankError: index 'x' has no") as failed:
        answer_of({"status": "FAILURE", "result": {
            "exc_type": "LexrerankError", "exc_message": ["index 'x' has no vectors"]}})
    assert failed.value.code is ReasonCode.WORKER_ERROR
    with pytest.raises(RerankFailed, match="expired in the rerank queue") as expired:
        answer_of({"status": "REVOKED", "result": {
            "exc_type": "TaskRevokedError", "exc_message": ["expired"]}})
    assert expired.value.code is ReasonCode.TIMEOUT
    with pytest.raises(RerankFailed, match="REVOKED"):
        answer_of({"status": "REVOKED", "result": None})
