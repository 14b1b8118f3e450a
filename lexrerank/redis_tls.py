"""TLS options for Redis (``rediss://`` URLs), for Celery and for the gateway's own client.

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

import ssl
from typing import Any

from lexrerank.config import Settings
from lexrerank.errors import LexrerankError

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
