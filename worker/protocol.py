"""The rerank protocol between the gateway and the workers: the one place both sides import.

Everything the two sides must agree on lives here, and neither builds the other's messages
by hand:

- the task names (:data:`RERANK_TASK`, :data:`EMBED_TASK`, :data:`PING_TASK`,
  :data:`WARM_TASK`) and the embed task's argument names;
- the rerank task's request (:class:`RerankRequest`, one JSON object, the task's only
  argument) and its answer (:class:`RerankAnswer`, the task's JSON result), their JSON
  encoding and validation (:meth:`RerankRequest.from_json`, :func:`parse_answer`);
- the candidates handoff: its Redis key naming (:func:`handoff_key`, :func:`handoff_ttl_s`)
  and its messages (:func:`candidates_message`, :func:`abort_message`,
  :func:`parse_handoff`); the worker's side of the transport (a ``BLPOP``) is
  :mod:`worker.candidate_handoff`;
- the result key and pub/sub channel naming (:func:`result_key`) and the reading of a
  finished task's result meta (:func:`answer_of`);
- the closed set of fallback reason codes (:class:`ReasonCode`) and the one exception that
  carries a code (:class:`RerankFailed`), raised by every failure site on both sides.

One reranked search, in messages:

1. on arrival the gateway publishes ``lexrerank.rerank`` with ``[RerankRequest.to_json()]``:
   ``{"query", "model", "explain", "handoff", "wait_ms"}`` (no index, no candidates yet);
2. the worker encodes the query, then waits up to ``wait_ms`` on the ``handoff`` list for
   ``{"index", "candidates": [[doc_id, first_stage_score], ...]}`` (or ``{"abort": why}``),
   which the gateway pushes when OpenSearch has answered the first stage;
3. the worker returns a :class:`RerankAnswer`, or raises :class:`RerankFailed` whose
   ``code`` travels in the task's failure meta (``exc_message``: ``[code, message, kind]``).

Celery: publishing uses public API (``Celery.send_task``) through an app whose result
backend is disabled (``worker.celery_app.make_app(settings, publish_only=True)``; the workers
store and publish results with their own configuration): ``send_task`` on an app with the
Redis result backend would also subscribe a synchronous result consumer in the gateway,
which nothing would drain. Results are awaited by one internal that stays, on purpose: the gateway
subscribes to the Redis result backend's pub/sub channel itself
(:class:`gateway.result_listener.ResultListener`) and reads the result meta Celery
publishes there (``{"status", "result"}``, failures as ``{"exc_type", "exc_message",
"exc_module"}``). Celery's ``AsyncResult.get`` blocks a thread per waiting request; one
asyncio subscriber per gateway process keeps the latency and the thread count down. The
key/channel name comes from the backend's own ``get_key_for_task``; the meta shape is the
Redis backend's, read in :func:`answer_of` only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

from lexrerank.errors import LanguageMismatch, LexrerankError

if TYPE_CHECKING:
    from celery import Celery

RERANK_TASK = "lexrerank.rerank"
EMBED_TASK = "lexrerank.embed"
PING_TASK = "lexrerank.ping"
# Runs on the rerank queue: loads an index's vectors into the process that reranks.
WARM_TASK = "lexrerank.warm"
# The embed task's positional arguments (sent by indexer.embed_fanout), in order.
EMBED_ARGS = ("index", "ids", "model")

# Bounds of what a worker accepts (a request may come from anyone who reaches Redis).
MAX_CANDIDATES = 1000
MAX_QUERY_CHARS = 1_000_000
MAX_NAME_CHARS = 1000  # model and index names
MAX_DOC_ID_CHARS = 512  # OpenSearch's own limit on _id (bytes)
MAX_WAIT_MS = 600_000.0
MAX_EVIDENCE = 10_000  # sentences of one article
MAX_REASON_CHARS = 2000

HANDOFF_KEY_PREFIX = "lexrerank:candidates:"
MAX_HANDOFF_KEY_CHARS = len(HANDOFF_KEY_PREFIX) + 200
# A handoff key is kept this long after the deadline: long enough for a worker that took
# the task just in time.
HANDOFF_TTL_MARGIN_S = 5


class ReasonCode(StrEnum):
    """Why a reranked search fell back: ``ext.rerank.reason_code`` and the fallback metric's
    ``reason`` label. A closed set: every failure site on either side names one."""

    TIMEOUT = "timeout"  # no answer within the deadline (or expired in the queue)
    NO_WORKER = "no_worker"  # the same while the last readiness check found no worker
    DEADLINE_PASSED = "deadline_passed"  # no time left to start, or to hand candidates over
    REDIS_UNAVAILABLE = "redis_unavailable"  # the publish, handoff or result channel failed
    WORKER_ERROR = "worker_error"  # the task failed for another reason
    BAD_ANSWER = "bad_answer"  # the worker's answer is malformed or not for these candidates
    MIXED_INDEXES = "mixed_indexes"  # first-stage hits from several indexes (or same _id twice)
    HITS_WITHOUT_ID = "hits_without_id"  # first-stage hits carry no _id
    HITS_WITHOUT_SCORE = "hits_without_score"  # first-stage hits carry no _score
    NO_VECTORS = "no_vectors"  # the index has no article vectors for the model's version
    LANGUAGE_MISMATCH = "language_mismatch"  # no model for the index's language
    UNKNOWN_MODEL = "unknown_model"  # the worker does not serve the model named
    BAD_REQUEST = "bad_request"  # the worker refused the request or handoff as malformed
    CALLED_OFF = "called_off"  # the gateway called the rerank off (nothing to rerank)
    GATEWAY_ERROR = "gateway_error"  # a bug on the gateway's rerank side
    # Set by the search-pipeline plugin only (it calls POST /_lexrerank/rerank over HTTP):
    SERVICE_UNAVAILABLE = "service_unavailable"  # the rerank service could not be reached
    SERVICE_ERROR = "service_error"  # the rerank service answered an HTTP error (401, 5xx)


class RerankFailed(LexrerankError):
    """The rerank did not happen: ``code`` says why in a word, ``str(exc)`` in a sentence.

    Raised by the rerank task (Celery stores ``args`` = ``[code, message, kind]`` in the
    failure meta, so the code reaches the gateway without matching any text) and by the
    gateway's own failure sites. ``kind`` names the original error type of a worker-side
    failure (e.g. ``LanguageMismatch``), for the human-readable reason.
    """

    def __init__(self, code: ReasonCode | str, message: str, kind: str | None = None) -> None:
        code = ReasonCode(code)  # ValueError for a code outside the closed set
        super().__init__(code.value, message, kind)
        self.code, self.message, self.kind = code, message, kind

    def __str__(self) -> str:
        return self.message


def code_for(exc: BaseException) -> ReasonCode:
    """The reason code of an error raised while a worker reranks (the type says it)."""
    if isinstance(exc, RerankFailed):
        return exc.code
    if isinstance(exc, LanguageMismatch):
        return ReasonCode.LANGUAGE_MISMATCH
    return ReasonCode.WORKER_ERROR


def as_rerank_failed(exc: LexrerankError) -> RerankFailed:
    """``exc`` as the :class:`RerankFailed` the rerank task raises (its code by type)."""
    if isinstance(exc, RerankFailed):
        return exc
    return RerankFailed(code_for(exc), str(exc), type(exc).__name__)


def _bad(message: str) -> RerankFailed:
    return RerankFailed(ReasonCode.BAD_REQUEST, message)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS:
        raise _bad(f"{what} must be a non-empty string of at most {MAX_NAME_CHARS} "
                   "characters")
    return value


# ------------------------------------------------------------------------------- the request

@dataclass(frozen=True)
class RerankRequest:
    """The rerank task's one argument, published when a search arrives.

    The index and the candidates are not known yet: they follow on ``handoff`` (a
    :func:`handoff_key`) within ``wait_ms`` milliseconds, which is also the task's deadline.
    Without ``explain`` the answer's evidence lists are left empty (less to ship).
    """

    query: str
    model: str
    explain: bool
    handoff: str
    wait_ms: float

    def to_json(self) -> dict[str, Any]:
        """The JSON object the task receives."""
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any) -> RerankRequest:
        """Validate the task's argument; :class:`RerankFailed` (``bad_request``) if it is
        not a request this protocol sends (unknown or missing fields, wrong types, sizes)."""
        if not isinstance(obj, Mapping):
            raise _bad("the rerank request must be a JSON object")
        fields = set(cls.__dataclass_fields__)
        unknown, missing = set(obj) - fields, fields - set(obj)
        if unknown or missing:
            raise _bad(f"the rerank request has unknown fields {sorted(map(str, unknown))[:5]}"
                       f" or lacks {sorted(missing)}")
        query = obj["query"]
        if not isinstance(query, str) or not query.strip():
            raise _bad("the query text is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise _bad(f"the query text is longer than {MAX_QUERY_CHARS} characters")
        if not isinstance(obj["explain"], bool):
            raise _bad("explain must be true or false")
        wait_ms = obj["wait_ms"]
        if not _is_number(wait_ms) or not 0 <= wait_ms <= MAX_WAIT_MS:
            raise _bad(f"wait_ms must be a number of milliseconds, 0 to {MAX_WAIT_MS:.0f}")
        return cls(query=query, model=_name(obj["model"], "the model"),
                   explain=obj["explain"], handoff=check_handoff_key(obj["handoff"]),
                   wait_ms=float(wait_ms))


def request_model(args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> Any:
    """The model named by a rerank task's (unvalidated) arguments, or None."""
    request = (args[0] if args else None) or (kwargs or {}).get("request")
    return request.get("model") if isinstance(request, Mapping) else None


# ------------------------------------------------------------------------------- the handoff

def handoff_key(task_id: str) -> str:
    """The Redis list that carries task ``task_id``'s candidates."""
    return f"{HANDOFF_KEY_PREFIX}{task_id}"


def check_handoff_key(key: Any) -> str:
    """``key`` if it names a handoff list; :class:`RerankFailed` (``bad_request``) if not
    (a worker must never ``BLPOP`` on another key of the shared Redis)."""
    if (not isinstance(key, str) or not key.startswith(HANDOFF_KEY_PREFIX)
            or len(key) > MAX_HANDOFF_KEY_CHARS or len(key) == len(HANDOFF_KEY_PREFIX)):
        raise _bad(f"{str(key)[:100]!r} is not a candidates handoff key")
    return key


def handoff_ttl_s(timeout_s: float) -> int:
    """Seconds the handoff key is kept for a request with ``timeout_s`` left."""
    return math.ceil(timeout_s) + HANDOFF_TTL_MARGIN_S


@dataclass(frozen=True)
class Handoff:
    """The first stage's outcome for a waiting task: the concrete index and its window."""

    index: str
    candidates: list[tuple[str, float]]  # (doc_id, first-stage score), best first


def candidates_message(index: str, candidates: Sequence[Sequence[Any]]) -> bytes:
    """The message for a first stage that found ``candidates`` in the concrete ``index``."""
    return json.dumps({"index": index, "candidates": candidates},
                      separators=(",", ":")).encode()


def abort_message(reason: str) -> bytes:
    """The message that tells the task there is nothing to rerank, and why."""
    return json.dumps({"abort": reason[:MAX_REASON_CHARS]}).encode()


def validate_candidates(raw: Any) -> list[tuple[str, float]]:
    """``[[doc_id, first_stage_score], ...]`` (JSON gives lists, not tuples) as pairs;
    :class:`RerankFailed` (``bad_request``) for anything else or more than
    :data:`MAX_CANDIDATES`."""
    if not isinstance(raw, list) or len(raw) > MAX_CANDIDATES:
        raise _bad(f"candidates must be a list of at most {MAX_CANDIDATES} [doc_id, score] "
                   "pairs")
    out = []
    for item in raw:
        if (not isinstance(item, (list, tuple)) or len(item) != 2
                or not isinstance(item[0], str) or len(item[0]) > MAX_DOC_ID_CHARS
                or not _is_number(item[1])):
            raise _bad(f"bad candidate {str(item)[:100]}: expected [doc_id, score]")
        out.append((item[0], float(item[1])))
    return out


def parse_handoff(raw: bytes | str) -> Handoff:
    """The :class:`Handoff` of a message; :class:`RerankFailed` for an abort
    (``called_off``) or a message this protocol does not send (``bad_request``)."""
    try:
        message = json.loads(raw)
    except ValueError as exc:
        raise _bad(f"unreadable candidates message: {exc}") from None
    if not isinstance(message, dict):
        raise _bad("the candidates message is not a JSON object")
    if "abort" in message:
        raise RerankFailed(ReasonCode.CALLED_OFF, "the gateway called the rerank off: "
                           f"{str(message['abort'])[:MAX_REASON_CHARS]}")
    index = message.get("index")
    if not isinstance(index, str) or not index or len(index) > MAX_NAME_CHARS:
        raise _bad("the candidates message names no index")
    return Handoff(index, validate_candidates(message.get("candidates")))


# -------------------------------------------------------------------------------- the answer

class Evidence(TypedDict):
    """An article sentence the model attended to, and how much."""

    sentence_index: int | None
    sentence: str
    weight: float


class AnswerHit(TypedDict):
    """One reranked candidate."""

    doc_id: str
    score: float  # fused
    first_stage_rank: int  # 1-based
    first_stage_score: float
    model_score: float
    evidence: list[Evidence]  # empty without ``explain``


class RerankAnswer(TypedDict):
    """The rerank task's JSON result.

    ``hits`` best first; ``model`` the name the model answered with (``default`` resolved);
    ``query_truncated``: the model read only the first tokens of a longer query;
    ``timing_ms``: ``rerank`` is the busy time (query encode + gather + score + fuse; the
    gather overlaps the encode), ``encode`` the query encode alone, ``wait`` the time until
    the handoff came (the query encodes meanwhile), ``load`` the vector gather (with the
    model loading of a cold process). A TypedDict, not a dataclass: the answer of a window of
    hits goes from JSON to the merge without being copied.
    """

    hits: list[AnswerHit]
    model: str
    model_version: str
    query_truncated: bool
    # Added by the task; absent from an in-process rerank's (the validators default it).
    timing_ms: NotRequired[dict[str, float]]


class AnswerError(ValueError):
    """A worker's answer that is not a :class:`RerankAnswer` (the search falls back)."""


_HIT_NUMBERS = ("score", "first_stage_score", "model_score")


def _check_hit(hit: Any) -> None:
    if not isinstance(hit, dict) or not isinstance(hit.get("doc_id"), str):
        raise AnswerError(f"a hit is not an object with a doc_id: {str(hit)[:100]}")
    for name in _HIT_NUMBERS:
        if not _is_number(hit.get(name)):
            raise AnswerError(f"hit {hit['doc_id'][:100]!r}: {name} is not a number")
    rank = hit.get("first_stage_rank")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise AnswerError(f"hit {hit['doc_id'][:100]!r}: first_stage_rank is not a rank")
    evidence = hit.get("evidence", [])
    if not isinstance(evidence, list) or len(evidence) > MAX_EVIDENCE:
        raise AnswerError(f"hit {hit['doc_id'][:100]!r}: evidence is not a list")
    for item in evidence:
        if (not isinstance(item, dict) or not isinstance(item.get("sentence"), str)
                or not _is_number(item.get("weight"))):
            raise AnswerError(f"hit {hit['doc_id'][:100]!r}: bad evidence {str(item)[:100]}")


def parse_answer(result: Any) -> RerankAnswer:
    """``result`` (a successful task's JSON) checked to be a :class:`RerankAnswer`;
    :class:`AnswerError` naming the first problem."""
    if not isinstance(result, dict):
        raise AnswerError("the answer is not a JSON object")
    hits = result.get("hits")
    if not isinstance(hits, list) or len(hits) > MAX_CANDIDATES:
        raise AnswerError(f"the answer's hits are not a list of at most {MAX_CANDIDATES}")
    for hit in hits:
        _check_hit(hit)
    if not isinstance(result.get("model"), str):
        raise AnswerError("the answer names no model")
    if not isinstance(result.get("model_version"), (str, type(None))):
        raise AnswerError("the answer's model_version is not a string")
    if not isinstance(result.get("query_truncated", False), bool):
        raise AnswerError("the answer's query_truncated is not true or false")
    timing = result.get("timing_ms", {})
    if not isinstance(timing, dict) or not all(_is_number(v) for v in timing.values()):
        raise AnswerError("the answer's timing_ms is not an object of numbers")
    return cast(RerankAnswer, result)  # checked field by field above


# ------------------------------------------------------------------- the result (Celery's)

def result_key(app: Celery, task_id: str) -> bytes:
    """The Redis key, and pub/sub channel, of task ``task_id``'s result meta
    (``celery-task-meta-<id>``: the Redis result backend's own naming)."""
    key = app.backend.get_key_for_task(task_id)
    return key if isinstance(key, bytes) else str(key).encode()


REVOKED_EXC = "TaskRevokedError"  # a worker reached the task after its ``expires``


def answer_of(meta: Mapping[str, Any]) -> RerankAnswer:
    """The answer of a finished rerank task's result meta, or :class:`RerankFailed` with
    the worker's code (``timeout`` for a task that expired in the queue, ``bad_answer`` for
    a code outside this protocol or a malformed answer)."""
    from celery import states

    status = meta.get("status")
    result = meta.get("result")
    if status == states.SUCCESS:
        try:
            return parse_answer(result)
        except AnswerError as exc:
            raise RerankFailed(ReasonCode.BAD_ANSWER, f"bad worker answer: {exc}") from None
    if not isinstance(result, dict) or "exc_type" not in result:
        raise RerankFailed(ReasonCode.WORKER_ERROR, f"worker error: task ended {status}")
    exc_type, message = result.get("exc_type"), result.get("exc_message")
    if exc_type == REVOKED_EXC:
        raise RerankFailed(ReasonCode.TIMEOUT, "the request expired in the rerank queue before "
                           "a worker took it (workers busy or slow)")
    if exc_type == RerankFailed.__qualname__ and result.get("exc_module") == __name__:
        raise _worker_failure(message)
    if isinstance(message, (list, tuple)):
        message = " ".join(str(m) for m in message)
    raise RerankFailed(ReasonCode.WORKER_ERROR, f"worker error: {exc_type}: {message}")


def _worker_failure(args: Any) -> RerankFailed:
    """The gateway's :class:`RerankFailed` for the ``exc_message`` of a worker's one."""
    if (not isinstance(args, list) or len(args) != 3 or not isinstance(args[1], str)
            or not isinstance(args[2], (str, type(None)))):
        return RerankFailed(ReasonCode.BAD_ANSWER, f"bad worker answer: a failure of "
                            f"unknown shape {str(args)[:200]}")
    code, message, kind = args
    try:
        code = ReasonCode(code)
    except ValueError:
        return RerankFailed(ReasonCode.BAD_ANSWER, f"bad worker answer: unknown reason code "
                            f"{str(code)[:100]!r} ({message[:MAX_REASON_CHARS]})")
    prefix = f"worker error: {kind}: " if kind else "worker error: "
    return RerankFailed(code, prefix + message[:MAX_REASON_CHARS], kind)
