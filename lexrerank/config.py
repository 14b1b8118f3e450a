"""All configuration in one place, read from environment variables with local defaults.

Pointing ``OPENSEARCH_URL`` or ``REDIS_URL`` at an existing service means nothing local is
started for it by ``lexrerank up``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from lexrerank.errors import LexrerankError

LOCAL_OPENSEARCH_URL = "http://127.0.0.1:9200"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
OPENSEARCH_VERSION = "2.19.6"
# Open without an API key (GET/HEAD only): probes, Prometheus' scrape (counts, no query text)
# and the pages' HTML/CSS/JS (no data: every request they make carries the key). A trailing
# "*" is a prefix; everything under /_lexrerank/ is the gateway's own, never proxied.
DEFAULT_AUTH_EXEMPT_PATHS = ("/_lexrerank/healthz", "/_lexrerank/readyz", "/_lexrerank/health",
                             "/_lexrerank/metrics", "/_lexrerank/ui*")


def safe_url(url: str) -> str:
    """``url`` without the user name and password it may embed (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"***@{host}").geturl()


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _default_data_dir() -> Path:
    # ../shared/data beside the checkout, the layout CI and the developers' machines share.
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _default_cache_dir() -> Path:
    # As root, OpenSearch runs as a service user that cannot enter /root: use /var/cache.
    if os.geteuid() == 0:
        return Path("/var/cache/lexrerank")
    return Path.home() / ".cache" / "lexrerank"


@dataclass(frozen=True)
class Settings:
    """A snapshot of the configuration; build it with :func:`get_settings`."""

    opensearch_url: str
    opensearch_user: str | None
    opensearch_password: str | None = field(repr=False)  # never printed
    opensearch_verify_certs: bool
    opensearch_ca_certs: str | None
    redis_url: str
    index: str
    cache_dir: Path
    data_dir: Path
    opensearch_heap: str
    # Gateway and workers (see README, "Gateway and workers").
    default_model: str = "default"
    # The corpus language whose model encodes a query before its index is known (the
    # gateway publishes a rerank on arrival); other languages' indexes are encoded again.
    language: str = "en"
    extra_models: tuple[str, ...] = ()
    rerank_timeout_ms: int = 1000
    default_pipeline_indexes: tuple[str, ...] = ()
    rerank_queue: str = "rerank"
    embed_queue: str = "embed"
    gateway_url: str = "http://127.0.0.1:8000"
    # Gateway input limits and auth (gateway/limits.py, gateway/auth.py, docs/security.md).
    max_body_bytes: int = 1_048_576
    max_proxy_body_bytes: int = 104_857_600
    max_json_depth: int = 64
    max_query_chars: int = 10_000
    max_result_window: int = 10_000
    max_window: int = 1000
    max_timeout_ms: int = 60_000
    # The HTTP edge (gateway/http_protocol.py, docs/security.md, "Limits"): request line plus
    # headers, the time to send them, the time to send a body, and the connections one
    # uvicorn process serves at once. 0 disables a limit.
    max_header_bytes: int = 16_384
    max_header_read_ms: int = 10_000
    max_body_read_ms: int = 60_000
    max_connections: int = 1000
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # never printed
    auth_exempt_paths: tuple[str, ...] = DEFAULT_AUTH_EXEMPT_PATHS
    # TLS towards Redis for rediss:// URLs (lexrerank/redis_tls.py).
    redis_ssl_ca_certs: str | None = None
    redis_ssl_certfile: str | None = None
    redis_ssl_keyfile: str | None = None
    redis_ssl_cert_reqs: str = "required"
    # Port of a worker's /metrics (worker/metrics.py); 0 disables it.
    worker_metrics_port: int = 9108
    # Longest OpenSearch may stay silent on a proxied request (gateway/opensearch_upstream.py).
    upstream_timeout_s: int = 300
    # The sentence encoder used when none is named (reranker.encoder); None: the default.
    encoder: str | None = None
    # Checkpoints that override the shipped weights (reranker.registry); None: shipped only.
    model_dir: Path | None = None

    @property
    def opensearch_is_local(self) -> bool:
        """True when the embedded default stack (not an external cluster) is in use."""
        return "OPENSEARCH_URL" not in os.environ

    @property
    def redis_is_local(self) -> bool:
        return "REDIS_URL" not in os.environ


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in os.environ.get(name, "").split(",") if v.strip())


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise LexrerankError(f"{name}={value!r} is not an integer") from None


def get_settings() -> Settings:
    """Read the environment now (tests change it, so nothing is cached)."""
    cache = Path(os.environ.get("LEXRERANK_CACHE", _default_cache_dir()))
    return Settings(
        opensearch_url=os.environ.get("OPENSEARCH_URL", LOCAL_OPENSEARCH_URL),
        opensearch_user=os.environ.get("OPENSEARCH_USER") or None,
        opensearch_password=os.environ.get("OPENSEARCH_PASSWORD") or None,
        opensearch_verify_certs=_env_bool("OPENSEARCH_VERIFY_CERTS", True),
        opensearch_ca_certs=os.environ.get("OPENSEARCH_CA_CERTS") or None,
        redis_url=os.environ.get("REDIS_URL", LOCAL_REDIS_URL),
        index=os.environ.get("LEXRERANK_INDEX", "statutes"),
        cache_dir=cache,
        data_dir=Path(os.environ.get("LEXRERANK_DATA", _default_data_dir())),
        # 2 cores / 24 GiB: a 2 GiB heap leaves room for the workers and the page cache.
        opensearch_heap=os.environ.get("LEXRERANK_OPENSEARCH_HEAP", "2g"),
        default_model=os.environ.get("LEXRERANK_MODEL") or "default",
        language=os.environ.get("LEXRERANK_LANGUAGE") or "en",
        extra_models=_env_list("LEXRERANK_MODELS"),
        rerank_timeout_ms=_env_int("LEXRERANK_RERANK_TIMEOUT_MS", 1000),
        default_pipeline_indexes=_env_list("LEXRERANK_DEFAULT_PIPELINE_INDEXES"),
        rerank_queue=os.environ.get("LEXRERANK_RERANK_QUEUE") or "rerank",
        embed_queue=os.environ.get("LEXRERANK_EMBED_QUEUE") or "embed",
        gateway_url=os.environ.get("LEXRERANK_GATEWAY_URL") or "http://127.0.0.1:8000",
        max_body_bytes=_env_int("LEXRERANK_MAX_BODY_BYTES", 1_048_576),
        max_proxy_body_bytes=_env_int("LEXRERANK_MAX_PROXY_BODY_BYTES", 104_857_600),
        max_json_depth=_env_int("LEXRERANK_MAX_JSON_DEPTH", 64),
        max_query_chars=_env_int("LEXRERANK_MAX_QUERY_CHARS", 10_000),
        max_result_window=_env_int("LEXRERANK_MAX_RESULT_WINDOW", 10_000),
        max_window=_env_int("LEXRERANK_MAX_WINDOW", 1000),
        max_timeout_ms=_env_int("LEXRERANK_MAX_TIMEOUT_MS", 60_000),
        max_header_bytes=_env_int("LEXRERANK_MAX_HEADER_BYTES", 16_384),
        max_header_read_ms=_env_int("LEXRERANK_MAX_HEADER_READ_MS", 10_000),
        max_body_read_ms=_env_int("LEXRERANK_MAX_BODY_READ_MS", 60_000),
        max_connections=_env_int("LEXRERANK_MAX_CONNECTIONS", 1000),
        api_keys=_api_keys(),
        auth_exempt_paths=(_env_list("LEXRERANK_AUTH_EXEMPT_PATHS")
                           or DEFAULT_AUTH_EXEMPT_PATHS),
        redis_ssl_ca_certs=os.environ.get("LEXRERANK_REDIS_SSL_CA_CERTS") or None,
        redis_ssl_certfile=os.environ.get("LEXRERANK_REDIS_SSL_CERTFILE") or None,
        redis_ssl_keyfile=os.environ.get("LEXRERANK_REDIS_SSL_KEYFILE") or None,
        redis_ssl_cert_reqs=os.environ.get("LEXRERANK_REDIS_SSL_CERT_REQS") or "required",
        worker_metrics_port=_env_int("LEXRERANK_WORKER_METRICS_PORT", 9108),
        upstream_timeout_s=_env_int("LEXRERANK_UPSTREAM_TIMEOUT_S", 300),
        encoder=os.environ.get("LEXRERANK_ENCODER") or None,
        model_dir=Path(os.environ["LEXRERANK_MODEL_DIR"]) if os.environ.get(
            "LEXRERANK_MODEL_DIR") else None,
    )


def _api_keys() -> tuple[str, ...]:
    """Gateway API keys: ``LEXRERANK_API_KEYS`` (comma list) plus ``LEXRERANK_API_KEYS_FILE``
    (one key per line, ``#`` comments); none means auth is off."""
    keys = list(_env_list("LEXRERANK_API_KEYS"))
    path = os.environ.get("LEXRERANK_API_KEYS_FILE", "").strip()
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise LexrerankError(f"LEXRERANK_API_KEYS_FILE={path!r} cannot be read "
                                 f"({exc.strerror}): point it at a file with one key per line"
                                 ) from None
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return tuple(keys)
