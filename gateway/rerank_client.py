"""Calling the rerank workers from the event loop, under a deadline, never blocking it.

One call: subscribe (``redis.asyncio``) to the Celery result key's channel, publish the task,
await the result message. Every failure becomes :class:`RerankUnavailable` with a reason the
gateway reports in its fallback:

- no result before the deadline (workers busy, slow, or none listening on the queue);
- Redis down: the async client connects with a short timeout and the publish runs with
  ``retry=False``, so an outage costs milliseconds, not the deadline;
- the task failed (e.g. the index has no vectors for the model's version).

The publish goes through Celery's own message format (``app.amqp``) in a small thread pool:
kombu's producer is synchronous. ``app.send_task`` is deliberately not used: with a Redis
result backend it also subscribes a synchronous result consumer in this process, which we
would never drain. Tasks carry ``expires`` = the deadline, so a worker that comes back after
an outage skips the requests nobody waits for any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.asyncio as aioredis
from celery import Celery, states
from kombu.exceptions import KombuError, OperationalError
from redis.exceptions import RedisError

from gateway.request_log import request_id
from lexrerank.config import Settings
from lexrerank.redis_tls import redis_client_ssl_kwargs
from worker.celery_app import REDIS_CONNECT_TIMEOUT_S, RERANK_TASK, make_app
from worker.json_logs import REQUEST_ID_HEADER

PUBLISH_THREADS = 8
MAX_REDIS_CONNECTIONS = 256


class RerankUnavailable(Exception):
    """The rerank did not happen; ``str(exc)`` is the fallback reason."""


class RerankClient:
    """Publishes ``lexrerank.rerank`` tasks and awaits their results asynchronously."""

    def __init__(self, settings: Settings, celery_app: Celery | None = None) -> None:
        self.settings = settings
        self.app = celery_app or make_app(settings)
        self.queue = settings.rerank_queue
        self.redis = aioredis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            socket_keepalive=True, max_connections=MAX_REDIS_CONNECTIONS,
            health_check_interval=30, **redis_client_ssl_kwargs(settings))
        self._publisher = ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="publish")
        self._backend = self.app.backend  # key naming and decoding only; it never connects

    async def aclose(self) -> None:
        await self.redis.aclose()
        self._publisher.shutdown(wait=False, cancel_futures=True)

    def _publish(self, task_name: str, task_id: str, args: list[Any], kwargs: dict[str, Any],
                 expires_s: float, request_id: str | None = None) -> None:
        amqp = self.app.amqp
        message = amqp.create_task_message(task_id, task_name, args, kwargs, expires=expires_s)
        if request_id:  # the worker logs it on this task's lines (worker/json_logs.py)
            message.headers[REQUEST_ID_HEADER] = request_id
        with self.app.producer_or_acquire() as producer:
            amqp.send_task_message(producer, task_name, message, queue=self.queue,
                                   retry=False)

    async def call(self, task_name: str, args: list[Any], kwargs: dict[str, Any],
                   timeout_s: float) -> dict[str, Any]:
        """Run a task on a worker of the rerank queue; its result meta once it is ready.

        Raises ``asyncio.TimeoutError`` when no result comes within ``timeout_s`` (which is
        also the task's expiry), and Redis/kombu errors when Redis is unreachable.
        """
        task_id = str(uuid.uuid4())
        key = self._backend.get_key_for_task(task_id)
        deadline = time.monotonic() + timeout_s
        pubsub = self.redis.pubsub()
        try:
            return await asyncio.wait_for(
                self._call(pubsub, key, task_name, task_id, args, kwargs, deadline), timeout_s)
        finally:
            # Shielded: a cancelled request must still give its connection back.
            with contextlib.suppress(Exception):
                await asyncio.shield(pubsub.aclose())

    async def rerank(self, index: str, query: str, candidates: list[list[Any]], model: str,
                     explain: bool, timeout_s: float) -> dict[str, Any]:
        """The task's result dict; raises :class:`RerankUnavailable` with the reason."""
        if timeout_s <= 0:
            raise RerankUnavailable("the deadline passed before the rerank could start")
        try:
            meta = await self.call(RERANK_TASK, [index, query, candidates, model, explain], {},
                                   timeout_s)
        except asyncio.TimeoutError:
            raise RerankUnavailable(
                f"no answer from a rerank worker within {timeout_s * 1000:.0f} ms "
                f"(workers busy, slow, or none consuming queue {self.queue!r})") from None
        except (RedisError, OSError, OperationalError, KombuError) as exc:
            raise RerankUnavailable(f"Redis unavailable at {self.redis_where()}: "
                                    f"{type(exc).__name__}: {exc}") from None
        return self._result(meta)

    async def _call(self, pubsub: aioredis.client.PubSub, key: bytes, task_name: str,
                    task_id: str, args: list[Any], kwargs: dict[str, Any],
                    deadline: float) -> dict[str, Any]:
        await pubsub.subscribe(key)  # before publishing, so the result cannot be missed
        loop = asyncio.get_running_loop()
        # The request id is read here: executor threads do not see this task's contextvars.
        await loop.run_in_executor(self._publisher, self._publish, task_name, task_id, args,
                                   kwargs, max(deadline - time.monotonic(), 0.001),
                                   request_id.get())
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            # decode() only deserialises; decode_result() would import exception classes.
            meta = self._backend.decode(message["data"])
            if meta.get("status") in states.READY_STATES:
                return meta
        raise RerankUnavailable("the result channel closed")  # pragma: no cover

    @staticmethod
    def _result(meta: dict[str, Any]) -> dict[str, Any]:
        status = meta.get("status")
        if status == states.SUCCESS:
            return meta["result"]
        result = meta.get("result")
        if isinstance(result, dict) and result.get("exc_type") == "TaskRevokedError":
            # The worker reached the task after its deadline (``expires``) and skipped it.
            raise RerankUnavailable("the request expired in the rerank queue before a worker "
                                    "took it (workers busy or slow)")
        if isinstance(result, dict) and "exc_type" in result:
            message = result.get("exc_message")
            if isinstance(message, (list, tuple)):
                message = " ".join(str(m) for m in message)
            raise RerankUnavailable(f"worker error: {result['exc_type']}: {message}")
        raise RerankUnavailable(f"worker error: task ended {status}")

    def redis_where(self) -> str:
        """``host:port`` of the Redis this client talks to (for messages)."""
        kwargs = self.redis.connection_pool.connection_kwargs
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

    async def ping(self) -> bool:
        """True when Redis answers (for the health route)."""
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 1.0))
        except (RedisError, OSError, asyncio.TimeoutError):
            return False
