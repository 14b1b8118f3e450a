"""Celery task results for one gateway process, over one shared Redis pub/sub connection.

Celery's Redis result backend stores a task's result under ``celery-task-meta-<id>`` and
publishes it on a channel of the same name (:func:`worker.protocol.result_key`; why the
gateway reads that channel itself, not through Celery, is in :mod:`worker.protocol`). A
caller subscribes to its task's channel before publishing the task, then awaits the future
this listener resolves. All callers of the process share one pub/sub connection and one
reader task: a ``redis.asyncio`` PubSub per call opened (and closed) a TCP connection, with
the client's handshake, on every rerank.

No result is missed: :meth:`ResultListener.subscribe` returns once Redis has confirmed the
subscription, so the task published after it cannot answer before someone listens. When the
connection fails, every waiting caller gets the error at once (the gateway falls back now,
not at its deadline) and the next subscription opens a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from celery import states
from redis.exceptions import RedisError

log = logging.getLogger("lexrerank.gateway.results")


class ResultListener:
    """Futures of Celery result metas, keyed by result key (``celery-task-meta-<id>``)."""

    def __init__(self, redis: aioredis.Redis, decode: Callable[[bytes], dict[str, Any]]
                 ) -> None:
        """``decode``: the bytes of a published result -> its meta dict."""
        self.redis = redis
        self._decode = decode
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task | None = None
        self._waiters: dict[bytes, asyncio.Future] = {}  # key -> its result meta
        self._confirmations: dict[bytes, asyncio.Future] = {}  # key -> subscribed

    async def subscribe(self, key: bytes, timeout_s: float) -> asyncio.Future:
        """Subscribe to ``key``'s channel; the future gets the task's meta once it is ready.

        Returns when Redis has confirmed the subscription. Raises Redis errors when Redis is
        unreachable, ``TimeoutError`` when it does not confirm within ``timeout_s``. Call
        :meth:`unsubscribe` when done, whatever happened.
        """
        loop = asyncio.get_running_loop()
        future, confirmed = loop.create_future(), loop.create_future()
        self._waiters[key], self._confirmations[key] = future, confirmed
        try:
            if self._pubsub is None:
                self._pubsub = self.redis.pubsub()
            await self._pubsub.subscribe(key)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(self._pubsub),
                                                   name="celery-results")
            await asyncio.wait_for(confirmed, timeout_s)
        except BaseException:
            self._waiters.pop(key, None)
            raise
        finally:
            self._confirmations.pop(key, None)
        return future

    async def unsubscribe(self, key: bytes) -> None:
        """Stop waiting for ``key`` (best effort: a dead connection forgets it anyway)."""
        future = self._waiters.pop(key, None)
        if future is not None and future.done() and not future.cancelled():
            future.exception()  # retrieved: a caller that stopped waiting must not log it
        pubsub = self._pubsub
        if pubsub is not None and pubsub.connection is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.unsubscribe(key)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None

    def _deliver(self, key: bytes, data: bytes) -> None:
        future = self._waiters.get(key)
        if future is None or future.done():
            return
        try:
            meta = self._decode(data)
        except Exception as exc:  # noqa: BLE001 - a bad result fails its caller, not the reader
            future.set_exception(exc)
            return
        if meta.get("status") in states.READY_STATES:
            future.set_result(meta)

    async def _read(self, pubsub: aioredis.client.PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                key = message.get("channel")
                if message["type"] == "message":
                    self._deliver(key, message["data"])
                elif message["type"] == "subscribe":
                    confirmed = self._confirmations.get(key)
                    if confirmed is not None and not confirmed.done():
                        confirmed.set_result(True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis gone (or a bug): fail the waiters
            log.warning("result connection to Redis lost: %s: %s", type(exc).__name__, exc)
            if self._pubsub is pubsub:
                self._pubsub = None
            for future in (*self._waiters.values(), *self._confirmations.values()):
                if not future.done():
                    future.set_exception(exc)
            with contextlib.suppress(Exception):
                await pubsub.aclose()
