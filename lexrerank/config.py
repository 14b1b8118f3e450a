"""All configuration in one place, read from environment variables with local defaults.

Pointing ``OPENSEARCH_URL`` or ``REDIS_URL`` at an existing service means nothing local is
started for it by ``lexrerank up``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lexrerank.errors import LexrerankError

LOCAL_OPENSEARCH_URL = "http://127.0.0.1:9200"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
OPENSEARCH_VERSION = "2.19.6"


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
    opensearch_password: str | None
    opensearch_verify_certs: bool
    opensearch_ca_certs: str | None
    redis_url: str
    index: str
    cache_dir: Path
    data_dir: Path
    opensearch_heap: str
    # Gateway and workers (see README, "Gateway and workers").
    default_model: str = "paraformer"
    extra_models: tuple[str, ...] = ()
    rerank_timeout_ms: int = 1000
    default_pipeline_indexes: tuple[str, ...] = ()
    rerank_queue: str = "rerank"
    embed_queue: str = "embed"
    gateway_url: str = "http://127.0.0.1:8000"

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
        default_model=os.environ.get("LEXRERANK_MODEL") or "paraformer",
        extra_models=_env_list("LEXRERANK_MODELS"),
        rerank_timeout_ms=_env_int("LEXRERANK_RERANK_TIMEOUT_MS", 1000),
        default_pipeline_indexes=_env_list("LEXRERANK_DEFAULT_PIPELINE_INDEXES"),
        rerank_queue=os.environ.get("LEXRERANK_RERANK_QUEUE") or "rerank",
        embed_queue=os.environ.get("LEXRERANK_EMBED_QUEUE") or "embed",
        gateway_url=os.environ.get("LEXRERANK_GATEWAY_URL") or "http://127.0.0.1:8000",
    )
