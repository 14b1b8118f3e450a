"""One factory for every Redis client: TLS settings reach the sync and asyncio clients alike
(the end-to-end check against a TLS redis-server is in
tests/integration/test_http_adversarial_upstream.py)."""

from __future__ import annotations

import dataclasses

import redis
import redis.asyncio

from lexrerank.config import get_settings
from lexrerank.redis_tls import async_redis_client, redis_client


def tls_settings():
    return dataclasses.replace(get_settings(), redis_url="rediss://cache.example:6380/2",
                               redis_ssl_ca_certs="/etc/ca.pem", redis_ssl_cert_reqs="required")


def test_both_clients_get_the_tls_options() -> None:
    settings = tls_settings()
    sync, aio = redis_client(settings, socket_timeout=2), async_redis_client(settings)
    for client, ssl_class in ((sync, redis.connection.SSLConnection),
                              (aio, redis.asyncio.connection.SSLConnection)):
        pool = client.connection_pool
        assert issubclass(pool.connection_class, ssl_class)
        assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
        assert pool.connection_kwargs["ssl_cert_reqs"] == "required"
        assert (pool.connection_kwargs["host"], pool.connection_kwargs["port"]) == \
            ("cache.example", 6380)
    assert sync.connection_pool.connection_kwargs["socket_timeout"] == 2


def test_another_url_gets_tls_only_when_it_says_so() -> None:
    plain = redis_client(tls_settings(), "redis://127.0.0.1:7000/0")
    assert not issubclass(plain.connection_pool.connection_class,
                          redis.connection.SSLConnection)
    assert "ssl_ca_certs" not in plain.connection_pool.connection_kwargs
