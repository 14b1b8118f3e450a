"""Security properties of the code base: no pickle, JSON-only Celery, Redis TLS options."""

from __future__ import annotations

import re
import ssl
from dataclasses import replace
from pathlib import Path

import redis

from lexrerank.config import get_settings
from lexrerank.redis_tls import celery_ssl_options, redis_client_ssl_kwargs
from worker.celery_app import celery_config

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("lexrerank", "indexer", "reranker", "worker", "gateway", "bench")
# Deserialisers that can run code on load; torch.load is only safe with weights_only=True.
UNSAFE = re.compile(r"\b(import pickle|from pickle|pickle\.|cPickle|dill\b|cloudpickle|"
                    r"joblib\.load|marshal\.loads|yaml\.load\(|shelve\.)")
TORCH_LOAD = re.compile(r"torch\.load\((?P<args>[^)]*)\)")


def python_sources() -> list[Path]:
    return [p for d in CODE_DIRS for p in (REPO / d).rglob("*.py")]


def test_no_pickle_anywhere_in_the_code() -> None:
    sources = python_sources()
    assert len(sources) > 20  # the scan really looked at the code
    offenders = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for match in UNSAFE.finditer(text):
            offenders.append(f"{path.relative_to(REPO)}: {match.group(0)}")
        for match in TORCH_LOAD.finditer(text):
            if "weights_only=True" not in match.group("args"):
                offenders.append(f"{path.relative_to(REPO)}: {match.group(0)}")
    assert not offenders, offenders


def test_checkpoints_are_safetensors_only() -> None:
    weights = REPO / "reranker" / "weights"
    files = [p for p in weights.rglob("*") if p.is_file()]
    assert files
    assert {p.suffix for p in files} <= {".safetensors", ".json"}


def test_celery_accepts_json_only() -> None:
    config = celery_config(get_settings())
    assert config["accept_content"] == ["json"]
    assert config["result_accept_content"] == ["json"]
    assert config["task_serializer"] == config["result_serializer"] == "json"
    assert config["event_serializer"] == "json"


def test_plain_redis_has_no_tls_options() -> None:
    settings = replace(get_settings(), redis_url="redis://127.0.0.1:6379/0")
    assert celery_ssl_options(settings) is None
    assert redis_client_ssl_kwargs(settings) == {}
    config = celery_config(settings)
    assert config["broker_use_ssl"] is False and config["redis_backend_use_ssl"] is False


def test_rediss_builds_tls_options_for_celery_and_the_gateway_client(tmp_path) -> None:
    ca, cert, key = (str(tmp_path / n) for n in ("ca.pem", "client.pem", "client.key"))
    settings = replace(get_settings(), redis_url="rediss://redis.internal:6380/0",
                       redis_ssl_ca_certs=ca, redis_ssl_certfile=cert, redis_ssl_keyfile=key)
    expected = {"ssl_ca_certs": ca, "ssl_certfile": cert, "ssl_keyfile": key}
    config = celery_config(settings)
    assert config["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED, **expected}
    assert config["redis_backend_use_ssl"] == config["broker_use_ssl"]
    kwargs = redis_client_ssl_kwargs(settings)
    assert kwargs == {"ssl_cert_reqs": "required", **expected}
    # redis-py accepts them for a rediss:// URL (building the pool does not connect).
    client = redis.asyncio.Redis.from_url(settings.redis_url, **kwargs)
    conn = client.connection_pool.connection_kwargs
    assert conn["ssl_ca_certs"] == ca and conn["ssl_cert_reqs"] == "required"
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"


def test_bad_cert_reqs_is_a_clear_error() -> None:
    import pytest

    from lexrerank.errors import LexrerankError

    settings = replace(get_settings(), redis_url="rediss://r:6380/0", redis_ssl_cert_reqs="yes")
    with pytest.raises(LexrerankError, match="LEXRERANK_REDIS_SSL_CERT_REQS"):
        redis_client_ssl_kwargs(settings)


def test_operator_messages_never_print_credentials_embedded_in_urls(monkeypatch) -> None:
    from lexrerank import stack
    from lexrerank.opensearch_client import unreachable_message

    monkeypatch.setenv("OPENSEARCH_URL", "https://admin:s3cret@search.example:9200")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@cache.example:6379/0")
    settings = get_settings()
    assert "s3cret" not in unreachable_message(settings)
    assert "***@search.example:9200" in unreachable_message(settings)
    monkeypatch.setattr(stack, "_opensearch_ready", lambda url: False)
    monkeypatch.setattr(stack, "_redis_ready", lambda settings: False)
    shown = " ".join(f"{s.name} {s.url} {s.detail}" for s in stack.status(settings))
    assert "s3cret" not in shown and "hunter2" not in shown
    assert "***@cache.example:6379" in shown
