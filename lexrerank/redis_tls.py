"""Every Redis client of the project, and its TLS options (``rediss://`` URLs).

:func:`redis_client` (sync) and :func:`async_redis_client` (asyncio) are the only places a
redis-py client is made: the gateway's rerank and result clients, its metrics scrape, the
workers' presence beat and the reindex progress all come from here, so a ``rediss://``
``REDIS_URL`` with a private CA works for every one of them. Celery's broker and result
backend get the same options through :func:`celery_ssl_options`.

A ``rediss://`` ``REDIS_URL`` turns TLS on; these settings say how to verify the server and
which client certificate to present:

| variable | meaning |
|---|---|
| ``LEXRERANK_REDIS_SSL_CERT_REQS`` | ``required`` (default), ``optional`` or ``none`` |
| ``LEXRERANK_REDIS_SSL_CA_CERTS`` | CA bundle that signed the server's certificate |
| ``LEXRERANK_REDIS_SSL_CERTFILE`` / ``..._KEYFILE`` | client certificate and key (mutual TLS) |

Celery wants ``ssl`` constants and ``ssl_*`` keys (``broker_use_ssl``,
``redis_backend_use_ssl``); redis-py wants the same keys as keyword arguments, with the
verification mode as a string. Both are built here from one set of settings.
"""

from __future__ import annotations

import dataclasses
import ssl
from typing import TYPE_CHECKING, Any

from lexrerank.config import Settings
from lexrerank.errors import LexrerankError

if TYPE_CHECKING:
    import redis
    import redis.asyncio

CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
             "none": ssl.CERT_NONE}


def uses_tls(settings: Settings) -> bool:
    """True when Redis is reached over TLS (a ``rediss://`` URL)."""
    return settings.redis_url.startswith("rediss://")


def _cert_reqs(settings: Settings) -> str:
    mode = settings.redis_ssl_cert_reqs.strip().lower()
    if mode not in CERT_REQS:
        raise LexrerankError(f"LEXRERANK_REDIS_SSL_CERT_REQS={settings.redis_ssl_cert_reqs!r}"
                             f" is not one of {', '.join(CERT_REQS)}")
    return mode


def _files(settings: Settings) -> dict[str, str]:
    files = {"ssl_ca_certs": settings.redis_ssl_ca_certs,
             "ssl_certfile": settings.redis_ssl_certfile,
             "ssl_keyfile": settings.redis_ssl_keyfile}
    return {k: v for k, v in files.items() if v}


def celery_ssl_options(settings: Settings) -> dict[str, Any] | None:
    """``broker_use_ssl`` / ``redis_backend_use_ssl`` for Celery, or None without TLS."""
    if not uses_tls(settings):
        return None
    return {"ssl_cert_reqs": CERT_REQS[_cert_reqs(settings)], **_files(settings)}


def redis_client_ssl_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis.from_url`` (empty without TLS)."""
    if not uses_tls(settings):
        return {}
    return {"ssl_cert_reqs": _cert_reqs(settings), **_files(settings)}


def redis_client(settings: Settings, url: str | None = None, **options: Any) -> redis.Redis:
    """A synchronous client for ``url`` (default ``REDIS_URL``) with the TLS settings.

    ``options`` are redis-py's (timeouts, pool size); nothing connects until first use.
    """
    import redis

    return redis.Redis.from_url(url or settings.redis_url,
                                **options, **_tls_kwargs(settings, url))


def async_redis_client(settings: Settings, url: str | None = None, **options: Any
                       ) -> redis.asyncio.Redis:
    """An asyncio client for ``url`` (default ``REDIS_URL``) with the TLS settings."""
    import redis.asyncio

    return redis.asyncio.Redis.from_url(url or settings.redis_url,
                                        **options, **_tls_kwargs(settings, url))


def _tls_kwargs(settings: Settings, url: str | None) -> dict[str, Any]:
    if url is not None:  # another Redis (a benchmark's private one): TLS if its URL says so
        settings = dataclasses.replace(settings, redis_url=url)
    return redis_client_ssl_kwargs(settings)
