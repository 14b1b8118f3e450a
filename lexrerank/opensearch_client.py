"""OpenSearch client construction from the settings, and a reachability check."""

from __future__ import annotations

from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import ConnectionTimeout

from lexrerank.config import Settings, get_settings, safe_url
from lexrerank.errors import LexrerankError


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by the sync and async clients (auth, TLS, retries)."""
    options: dict[str, Any] = {
        "hosts": [settings.opensearch_url],
        "timeout": 30,
        "max_retries": 3,
        "retry_on_timeout": True,
    }
    if settings.opensearch_user:
        options["http_auth"] = (settings.opensearch_user, settings.opensearch_password or "")
    if settings.opensearch_url.startswith("https"):
        options["use_ssl"] = True
        options["verify_certs"] = settings.opensearch_verify_certs
        if settings.opensearch_ca_certs:
            options["ca_certs"] = settings.opensearch_ca_certs
    return options


def unreachable_message(settings: Settings) -> str:
    if settings.opensearch_is_local:
        return (f"OpenSearch is not reachable at {safe_url(settings.opensearch_url)}: "
                "start the local stack with `lexrerank up` (or `make up`)")
    return (f"OpenSearch is not reachable at {safe_url(settings.opensearch_url)} (OPENSEARCH_URL): "
            "check the URL, credentials and that the cluster is up")


def opensearch_client(settings: Settings | None = None, check: bool = True) -> OpenSearch:
    """A sync client; with ``check`` it fails fast with a one-line error if unreachable."""
    settings = settings or get_settings()
    client = OpenSearch(**client_options(settings))
    if check:
        try:
            client.info(request_timeout=5)
        except (OSConnectionError, ConnectionTimeout) as exc:
            raise LexrerankError(unreachable_message(settings)) from exc
    return client
