"""Calling the rerank workers from the event loop, under a deadline, never blocking it.

A rerank is published the moment a search arrives, before its candidates exist
(:meth:`RerankClient.begin_rerank`): the worker encodes the query while OpenSearch runs the
first stage, then gets the candidates through a Redis list (the handoff of
:mod:`worker.protocol`, which also defines every message). Results come back over the
process's one pub/sub connection (:class:`gateway.result_listener.ResultListener`). Every
failure becomes :class:`worker.protocol.RerankFailed` with a reason code and a reason the
gateway reports in its fallback:

- no result before the deadline (``timeout``; ``no_worker`` while the last readiness check
  found no worker serving), or no time left to start (``deadline_passed``);
- Redis down (``redis_unavailable``): the async client connects with a short timeout and the
  publish runs with ``retry=False``, so an outage costs milliseconds, not the deadline;
- the task failed: the worker's own code (e.g. ``no_vectors``), see
  :func:`worker.protocol.answer_of`.

The publish is ``send_task`` of a result-less Celery app (see :mod:`worker.protocol` why) in
a small thread pool: kombu's producer is synchronous. Tasks carry ``expires`` = the
deadline, so a worker that comes back after an outage skips the requests nobody waits for
any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Celery
from kombu.exceptions import KombuError, OperationalError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway import fast_json
from gateway.request_log import request_id
from gateway.result_listener import ResultListener
from lexrerank.config import Settings
from lexrerank.redis_tls import async_redis_client
from worker import protocol
from worker.celery_app import REDIS_CONNECT_TIMEOUT_S, REDIS_SOCKET_TIMEOUT_S, make_app
from worker.json_logs import REQUEST_ID_HEADER
from worker.protocol import RERANK_TASK, ReasonCode, RerankAnswer, RerankFailed, RerankRequest

PUBLISH_THREADS = 8
MAX_REDIS_CONNECTIONS = 256
# After a failed workers check, fallbacks for "no answer" count as "no_worker" this long.
NO_WORKER_HOLD_S = 30.0


# What a Redis outage raises: on the pub/sub or handoff side (redis-py) or the publish (kombu).
REDIS_ERRORS = (RedisError, OSError, OperationalError, KombuError)


class RerankClient:
    """Publishes ``lexrerank.rerank`` tasks and awaits their results asynchronously."""

    def __init__(self, settings: Settings, celery_app: Celery | None = None) -> None:
        """``celery_app``: the app whose result backend names the result keys (default: the
        workers' configuration); tasks are published through a result-less copy."""
        self.settings = settings
        self.app = celery_app or make_app(settings)
        self._publishing_app = make_app(settings, publish_only=True)
        self.queue = settings.rerank_queue
        # Unix time until which a timeout counts as "no_worker" (set by gateway.readiness).
        self.no_worker_until = 0.0
        # A socket timeout: a Redis that accepts and never answers must not hold a request's
        # clean-up (the deadline bounds the request itself) or pile up connections.
        self.redis = async_redis_client(
            settings, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S, socket_keepalive=True,
            max_connections=MAX_REDIS_CONNECTIONS, health_check_interval=30)
        self._publisher = ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="publish")
        # The result connection is read by its listener's task alone: no health-check PING
        # and no retrying reconnect (both read replies on it from the caller's coroutine).
        # When it breaks, the listener fails its waiters and opens a new one.
        self._results_redis = async_redis_client(
            settings, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            socket_keepalive=True, health_check_interval=0, retry=Retry(NoBackoff(), 0))
        # Result metas are plain JSON (the JSON result serializer; our tasks return no types
        # that kombu would tag), so the fast parser reads them, not kombu's object-hook one.
        self.results = ResultListener(self._results_redis, fast_json.loads)

    async def aclose(self) -> None:
        await self.results.aclose()
        await self._results_redis.aclose()
        await self.redis.aclose()
        self._publisher.shutdown(wait=False, cancel_futures=True)

    def _publish(self, task_name: str, task_id: str, args: list[Any], kwargs: dict[str, Any],
                 expires_s: float, request_id: str | None = None) -> None:
        # The request id: the worker logs it on this task's lines (worker/json_logs.py).
        headers = {REQUEST_ID_HEADER: request_id} if request_id else None
        self._publishing_app.send_task(task_name, args, kwargs, task_id=task_id,
                                       queue=self.queue, expires=expires_s, headers=headers,
                                       retry=False, add_to_parent=False)

    async def _submit(self, key: bytes, task_name: str, task_id: str, args: list[Any],
                      kwargs: dict[str, Any], deadline: float) -> asyncio.Future:
        """Subscribe to the task's result, then publish it; the result's future."""
        # First, so the result cannot be missed.
        future = await self.results.subscribe(key, max(deadline - time.monotonic(), 0.001))
        loop = asyncio.get_running_loop()
        # The request id is read here: executor threads do not see this task's contextvars.
        await loop.run_in_executor(self._publisher, self._publish, task_name, task_id, args,
                                   kwargs, max(deadline - time.monotonic(), 0.001),
                                   request_id.get())
        return future

    async def call(self, task_name: str, args: list[Any], kwargs: dict[str, Any],
                   timeout_s: float) -> dict[str, Any]:
        """Run a task on a worker of the rerank queue; its result meta once it is ready.

        Raises ``asyncio.TimeoutError`` when no result comes within ``timeout_s`` (which is
        also the task's expiry), and Redis/kombu errors when Redis is unreachable.
        """
        task_id = str(uuid.uuid4())
        key = protocol.result_key(self.app, task_id)
        deadline = time.monotonic() + timeout_s

        async def submit_and_wait() -> dict[str, Any]:
            return await (await self._submit(key, task_name, task_id, args, kwargs, deadline))

        try:
            return await asyncio.wait_for(submit_and_wait(), timeout_s)
        finally:
            # Shielded: a cancelled request must still drop its subscription.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.results.unsubscribe(key))

    def begin_rerank(self, query: str, model: str, explain: bool,
                     timeout_s: float) -> PendingRerank:
        """Publish a rerank of ``query`` now; hand it its candidates later.

        Never raises: a failure to publish (Redis down) surfaces from
        :meth:`PendingRerank.finish`. Always :meth:`PendingRerank.close` the result.
        """
        task_id = str(uuid.uuid4())
        key = protocol.result_key(self.app, task_id)
        handoff = protocol.handoff_key(task_id)
        deadline = time.monotonic() + timeout_s
        submitted = None
        if timeout_s > 0:
            request = RerankRequest(query=query, model=model, explain=explain, handoff=handoff,
                                    wait_ms=round(timeout_s * 1000, 3))
            submitted = asyncio.create_task(self._submit(
                key, RERANK_TASK, task_id, [request.to_json()], {}, deadline))
        return PendingRerank(self, key, handoff, submitted, deadline, timeout_s)

    def workers_absent(self) -> bool:
        """True while the last readiness check found Redis up and no worker serving."""
        return time.time() < self.no_worker_until

    def saw_workers(self, present: bool) -> None:
        """What a readiness check found (:mod:`gateway.readiness`)."""
        self.no_worker_until = 0.0 if present else time.time() + NO_WORKER_HOLD_S

    def unavailable(self, exc: BaseException, timeout_s: float) -> RerankFailed:
        """The fallback for a call that got no answer (a timeout) or met a Redis error."""
        if isinstance(exc, asyncio.TimeoutError):
            return self.timed_out(RerankFailed(
                ReasonCode.TIMEOUT,
                f"no answer from a rerank worker within {timeout_s * 1000:.0f} ms "
                f"(workers busy, slow, or none consuming queue {self.queue!r})"))
        return RerankFailed(ReasonCode.REDIS_UNAVAILABLE,
                            f"Redis unavailable at {self.redis_where()}: "
                            f"{type(exc).__name__}: {exc}")

    def timed_out(self, failure: RerankFailed) -> RerankFailed:
        """``failure``, as ``no_worker`` when it is a timeout while no worker serves."""
        if failure.code is ReasonCode.TIMEOUT and self.workers_absent():
            return RerankFailed(ReasonCode.NO_WORKER, failure.message, failure.kind)
        return failure

    def task_result(self, meta: dict[str, Any]) -> RerankAnswer:
        """The answer of a finished rerank's meta; :class:`RerankFailed` saying why not."""
        try:
            return protocol.answer_of(meta)
        except RerankFailed as failure:
            raise self.timed_out(failure) from None

    def redis_where(self) -> str:
        """``host:port`` of the Redis this client talks to (for messages)."""
        kwargs = self.redis.connection_pool.connection_kwargs
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

    async def ping(self) -> bool:
        """True when Redis answers (for the health route)."""
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 1.0))
        except (TimeoutError, RedisError, OSError):
            return False


class PendingRerank:
    """A published rerank waiting for its candidates (see :meth:`RerankClient.begin_rerank`).

    The task is already running (or queued) on a worker, encoding the query; :meth:`finish`
    hands it the first stage's candidates and awaits the scores, :meth:`close` calls it off
    when there is nothing to rerank and drops the subscription.
    """

    def __init__(self, client: RerankClient, key: bytes, handoff: str,
                 submitted: asyncio.Task | None, deadline: float, timeout_s: float) -> None:
        """``submitted``: the subscribe-and-publish task (None: the deadline had passed)."""
        self._client = client
        self._key = key
        self._handoff = handoff
        self._submitted = submitted
        self._deadline = deadline
        self._timeout_s = timeout_s
        self._handed_off = False

    async def finish(self, index: str, candidates: list[list[Any]]) -> RerankAnswer:
        """The task's answer for ``candidates`` of the concrete ``index``.

        Raises :class:`worker.protocol.RerankFailed` with the code and reason when there is
        none in time.
        """
        client = self._client
        if self._submitted is None or self._deadline - time.monotonic() <= 0:
            raise RerankFailed(ReasonCode.DEADLINE_PASSED,
                               "the deadline passed before the rerank could start")
        message = protocol.candidates_message(index, candidates)
        submitted = self._submitted

        async def hand_off_and_wait() -> dict[str, Any]:
            # Shielded: a deadline must not cut a publish in half (close() awaits it).
            future = await asyncio.shield(submitted)
            await self._hand_off(message)
            return await future

        try:
            meta = await asyncio.wait_for(hand_off_and_wait(),
                                          self._deadline - time.monotonic())
        except (TimeoutError, *REDIS_ERRORS) as exc:
            raise client.unavailable(exc, self._timeout_s) from None
        return client.task_result(meta)

    async def close(self, reason: str = "nothing to rerank") -> None:
        """Call the rerank off (unless its candidates went) and drop the subscription."""
        submitted = self._submitted
        if submitted is None:
            return

        async def close_now() -> None:
            with contextlib.suppress(BaseException):
                await submitted
            if (not self._handed_off and not submitted.cancelled()
                    and submitted.exception() is None):
                with contextlib.suppress(*REDIS_ERRORS):
                    await self._hand_off(protocol.abort_message(reason))
            await self._client.results.unsubscribe(self._key)

        # Shielded: a cancelled request must still release its worker and subscription.
        with contextlib.suppress(Exception):
            await asyncio.shield(close_now())

    async def _hand_off(self, message: bytes) -> None:
        ttl = protocol.handoff_ttl_s(max(self._deadline - time.monotonic(), 0))
        pipe = self._client.redis.pipeline(transaction=False)
        # redis-py types a pipeline's rpush as an async client's (Awaitable[int]); on a
        # pipeline it queues the command and returns the pipeline.
        pipe.rpush(self._handoff, message).expire(self._handoff, ttl)  # type: ignore[attr-defined]
        await pipe.execute()
        self._handed_off = True
