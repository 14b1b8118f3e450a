"""Every setting of lexrerank, declared once: name, environment variable, type, default, doc.

Each field of :class:`Settings` is declared with :func:`setting` (as Celery declares its
options in ``celery/app/defaults.py``): the field's name and type annotation, the variable it
is read from, its default and one line of documentation, all in one place.
:func:`get_settings` reads the environment in this module and nowhere else; the README's
configuration tables are generated from these declarations (``python -m lexrerank.config``,
kept equal by ``tests/unit/lexrerank/test_config.py``).

Values are parsed by the field's type: ``int`` (optionally with a lower bound), ``bool``
(``1/true/yes/on``), ``Path``, comma lists (``tuple[str, ...]``) and strings; an empty
variable means the default. A value that does not parse is a :class:`LexrerankError` naming
the variable.

Pointing ``OPENSEARCH_URL`` or ``REDIS_URL`` at an existing service means nothing local is
started for it by ``lexrerank up``.

Variables read elsewhere, on purpose (documented exceptions):

- ``PROMETHEUS_MULTIPROC_DIR`` is prometheus-client's own: the library reads it itself, so
  :mod:`lexrerank.prometheus_dir` sets it in the environment for the processes it starts;
  it is declared here (``prometheus_multiproc_dir``) for our own reads.
- ``CUDA_VISIBLE_DEVICES`` is CUDA's (:mod:`worker.device`).
- Entry points write variables for the child processes they start (``HF_HUB_OFFLINE``,
  ``LEXRERANK_WORKER_PRELOAD``, ``LEXRERANK_TORCH_THREADS``), and the stack and bench
  scripts pass the environment on to the services they spawn.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lexrerank.errors import LexrerankError
from reranker.model_names import AUTO_BACKEND, ENCODER_BACKENDS

LOCAL_OPENSEARCH_URL = "http://127.0.0.1:9200"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
OPENSEARCH_VERSION = "2.19.6"
# Open without an API key (GET/HEAD only): probes, Prometheus' scrape (counts, no query text)
# and the pages' HTML/CSS/JS (no data: every request they make carries the key). A trailing
# "*" is a prefix; everything under /_lexrerank/ is the gateway's own, never proxied.
DEFAULT_AUTH_EXEMPT_PATHS = ("/_lexrerank/healthz", "/_lexrerank/readyz", "/_lexrerank/health",
                             "/_lexrerank/metrics", "/_lexrerank/ui*")
#: The README tables the settings are grouped into, in order.
GROUPS = {
    "stack": "Services, data and models",
    "gateway": "Gateway and workers",
    "limits": "Gateway input limits and access",
    "worker": "Worker processes",
}


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


@dataclass(frozen=True)
class Declaration:
    """How one setting is read (the metadata of its :class:`Settings` field).

    Attributes:
        env: the environment variable.
        doc: one line for the README table.
        group: the README table it belongs to (a key of :data:`GROUPS`).
        shown_default: the default as the README shows it, when it is computed.
        minimum: the smallest accepted value of an ``int`` setting.
        secret: never printed (``repr``) and never shown as a default.
        read: a reader of its own instead of the type's parser (``name -> value or None``).
        choices: the accepted values of a ``str`` setting (others are refused).
    """

    env: str
    doc: str
    group: str
    shown_default: str | None = None
    minimum: int | None = None
    secret: bool = False
    read: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None


def setting(env: str, default: Any = None, doc: str = "", *, group: str = "stack",
            factory: Callable[[], Any] | None = None, shown_default: str | None = None,
            minimum: int | None = None, secret: bool = False,
            read: Callable[[str], Any] | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
    """A :class:`Settings` field read from ``env`` (see :class:`Declaration`).

    ``factory`` computes the default when it depends on the machine (the cache directory).
    """
    if group not in GROUPS:
        raise ValueError(f"unknown settings group {group!r}")
    metadata = {"setting": Declaration(env, doc, group, shown_default, minimum, secret, read,
                                       choices)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata, repr=not secret)
    return field(default=default, metadata=metadata, repr=not secret)


def _default_data_dir() -> Path:
    # ../shared/data beside the checkout, the layout CI and the developers' machines share.
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _default_cache_dir() -> Path:
    # As root, OpenSearch runs as a service user that cannot enter /root: use /var/cache.
    if os.geteuid() == 0:
        return Path("/var/cache/lexrerank")
    return Path.home() / ".cache" / "lexrerank"


def _api_keys(env: str) -> tuple[str, ...] | None:
    """Gateway API keys: ``LEXRERANK_API_KEYS`` (comma list) plus ``LEXRERANK_API_KEYS_FILE``
    (one key per line, ``#`` comments); none means auth is off."""
    keys = list(_parse_list(os.environ.get(env, "")))
    file_env = f"{env}_FILE"
    path = os.environ.get(file_env, "").strip()
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise LexrerankError(f"{file_env}={path!r} cannot be read ({exc.strerror}): "
                                 "point it at a file with one key per line") from None
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return tuple(keys) if keys else None


@dataclass(frozen=True)
class Settings:
    """A snapshot of the configuration; build it with :func:`get_settings`.

    Every field is one setting (:func:`setting`); constructing ``Settings()`` gives the
    defaults, ``dataclasses.replace`` a variant (tests).
    """

    # -- services, data and models
    opensearch_url: str = setting(
        "OPENSEARCH_URL", LOCAL_OPENSEARCH_URL,
        "an existing cluster; when set, nothing local is started")
    opensearch_user: str | None = setting("OPENSEARCH_USER", None, "basic auth user")
    opensearch_password: str | None = setting(
        "OPENSEARCH_PASSWORD", None, "basic auth password", secret=True)
    opensearch_verify_certs: bool = setting(
        "OPENSEARCH_VERIFY_CERTS", True, "verify the certificate of an `https://` URL")
    opensearch_ca_certs: str | None = setting(
        "OPENSEARCH_CA_CERTS", None, "CA bundle for an `https://` URL")
    redis_url: str = setting("REDIS_URL", LOCAL_REDIS_URL,
                             "an existing Redis (`rediss://` for TLS); when set, none is started")
    redis_ssl_ca_certs: str | None = setting(
        "LEXRERANK_REDIS_SSL_CA_CERTS", None, "CA bundle for a `rediss://` URL")
    redis_ssl_certfile: str | None = setting(
        "LEXRERANK_REDIS_SSL_CERTFILE", None, "client certificate for a `rediss://` URL")
    redis_ssl_keyfile: str | None = setting(
        "LEXRERANK_REDIS_SSL_KEYFILE", None, "client key for a `rediss://` URL")
    redis_ssl_cert_reqs: str = setting(
        "LEXRERANK_REDIS_SSL_CERT_REQS", "required",
        "`required`, `optional` or `none`: how the Redis server certificate is checked")
    index: str = setting("LEXRERANK_INDEX", "statutes", "default index")
    cache_dir: Path = setting(
        "LEXRERANK_CACHE", factory=_default_cache_dir,
        shown_default="`/var/cache/lexrerank` (root), `~/.cache/lexrerank`",
        doc="downloads, OpenSearch install, data, logs, exported encoders")
    data_dir: Path = setting("LEXRERANK_DATA", factory=_default_data_dir,
                             shown_default="`../shared/data`", doc="evaluation data")
    opensearch_heap: str = setting(
        # 2 cores / 24 GiB: a 2 GiB heap leaves room for the workers and the page cache.
        "LEXRERANK_OPENSEARCH_HEAP", "2g", "heap of the local OpenSearch")
    opensearch_java_home: str | None = setting(
        "OPENSEARCH_JAVA_HOME", None, "the Java the local OpenSearch runs on",
        shown_default="the `java` on PATH")
    model_dir: Path | None = setting(
        "LEXRERANK_MODEL_DIR", None,
        "directory with `<language>/<name>/` (or `<name>/`) checkpoints overriding the "
        "shipped ones")
    encoder: str | None = setting(
        "LEXRERANK_ENCODER", None, "a SentenceTransformer directory for new Paraformer models",
        shown_default="all-MiniLM-L6-v2 (packaged)")
    # `auto` by default: each checkpoint's language serves the fastest CPU variant that kept
    # torch's F2 there (README, "CPU encoder backends").
    encoder_backend: str = setting(
        "LEXRERANK_ENCODER_BACKEND", AUTO_BACKEND,
        "runtime of the encoder: `auto` (per model language: `onnx-int8-smooth` for English, "
        "`onnx` otherwise), `onnx` (ONNX Runtime fp32, CPU), `onnx-int8-smooth` or "
        "`onnx-int8` (int8, CPU) or `torch` (fp32 on CPU, fp16 on CUDA: set it on GPU "
        "workers and on the indexers that embed for them); part of the model version, so "
        "indexers and workers must agree",
        choices=(AUTO_BACKEND, *ENCODER_BACKENDS))
    language: str = setting(
        "LEXRERANK_LANGUAGE", "en",
        "the language whose model encodes a query before its index is known (the gateway "
        "publishes on arrival); other languages' indexes encode again with their own model")
    # -- gateway and workers
    default_model: str = setting(
        "LEXRERANK_MODEL", "default",
        "default model of rerank requests (`default`: the index language's default, the "
        "ensemble); preloaded by workers", group="gateway")
    extra_models: tuple[str, ...] = setting(
        "LEXRERANK_MODELS", (),
        "extra models (names or checkpoint dirs) workers may load; the shipped names and "
        "`LEXRERANK_MODEL` always may", group="gateway")
    rerank_timeout_ms: int = setting(
        "LEXRERANK_RERANK_TIMEOUT_MS", 1000, "default deadline of a reranked search",
        group="gateway", minimum=0)
    default_pipeline_indexes: tuple[str, ...] = setting(
        "LEXRERANK_DEFAULT_PIPELINE_INDEXES", (),
        "comma list of indexes (as named in the path) reranked by default", group="gateway")
    rerank_queue: str = setting("LEXRERANK_RERANK_QUEUE", "rerank", "queue of rerank tasks",
                                group="gateway")
    embed_queue: str = setting("LEXRERANK_EMBED_QUEUE", "embed", "queue of embed tasks",
                               group="gateway")
    gateway_url: str = setting(
        "LEXRERANK_GATEWAY_URL", "http://127.0.0.1:8000",
        "where `up --serve` starts the gateway; default of `--via-gateway`", group="gateway")
    log_level: str = setting("LEXRERANK_LOG_LEVEL", "info", "gateway log level",
                             group="gateway")
    upstream_timeout_s: int = setting(
        "LEXRERANK_UPSTREAM_TIMEOUT_S", 300,
        "longest OpenSearch may stay silent on a passed-through request (over: 504); a "
        "reranked search's first stage is bounded by its own deadline (over: 504)",
        group="gateway", minimum=1)
    # -- gateway input limits and access (gateway/limits.py, gateway/auth.py,
    # docs/security.md); 0 disables the HTTP edge's limits.
    max_body_bytes: int = setting(
        "LEXRERANK_MAX_BODY_BYTES", 1_048_576,
        "a `_search` body the gateway parses itself (over: 413)", group="limits", minimum=1)
    max_proxy_body_bytes: int = setting(
        "LEXRERANK_MAX_PROXY_BODY_BYTES", 104_857_600,
        "any body passed through to OpenSearch (over: 413)", group="limits", minimum=1)
    max_json_depth: int = setting(
        "LEXRERANK_MAX_JSON_DEPTH", 64, "nesting of a parsed body (over: 400)",
        group="limits", minimum=1)
    max_query_chars: int = setting(
        "LEXRERANK_MAX_QUERY_CHARS", 10_000, "query text of a reranked search (over: 400)",
        group="limits", minimum=1)
    max_result_window: int = setting(
        "LEXRERANK_MAX_RESULT_WINDOW", 10_000,
        "`from + size` of a reranked search, as OpenSearch's `index.max_result_window`",
        group="limits", minimum=1)
    max_window: int = setting("LEXRERANK_MAX_WINDOW", 1000,
                              "`window_size` of a rerank (over: 400)", group="limits",
                              minimum=1)
    max_timeout_ms: int = setting("LEXRERANK_MAX_TIMEOUT_MS", 60_000,
                                  "`timeout_ms` of a rerank (over: 400)", group="limits",
                                  minimum=1)
    max_header_bytes: int = setting(
        "LEXRERANK_MAX_HEADER_BYTES", 16_384, "request line + headers (over: 431)",
        group="limits", minimum=0)
    max_header_read_ms: int = setting(
        "LEXRERANK_MAX_HEADER_READ_MS", 10_000,
        "time to send the headers (over: 408, nothing forwarded)", group="limits", minimum=0)
    max_body_read_ms: int = setting(
        "LEXRERANK_MAX_BODY_READ_MS", 60_000,
        "time to send the body (over: 408, nothing forwarded)", group="limits", minimum=0)
    max_connections: int = setting(
        "LEXRERANK_MAX_CONNECTIONS", 1000,
        "connections one gateway process serves (over: 503)", group="limits", minimum=0)
    api_keys: tuple[str, ...] = setting(
        "LEXRERANK_API_KEYS", (),
        "API keys (comma list; `LEXRERANK_API_KEYS_FILE`: one per line); none: auth is off",
        group="limits", secret=True, read=_api_keys)
    auth_exempt_paths: tuple[str, ...] = setting(
        "LEXRERANK_AUTH_EXEMPT_PATHS", DEFAULT_AUTH_EXEMPT_PATHS,
        "paths open without a key (GET/HEAD; a trailing `*` is a prefix)", group="limits",
        shown_default="the probes, `/metrics`, the pages' assets")
    # -- worker processes
    torch_threads: int = setting(
        "LEXRERANK_TORCH_THREADS", 1,
        "torch threads per worker process (more processes, not threads, use more cores)",
        group="worker", minimum=1)
    worker_metrics_port: int = setting(
        "LEXRERANK_WORKER_METRICS_PORT", 9108, "a worker's `/metrics` (`0` disables it)",
        group="worker", minimum=0)
    worker_metrics_host: str = setting(
        # All interfaces: Prometheus scrapes from another host/pod (docs/security.md).
        "LEXRERANK_WORKER_METRICS_HOST", "0.0.0.0",  # nosec B104
        "interface of a worker's `/metrics`", group="worker")
    worker_preload: bool = setting(
        "LEXRERANK_WORKER_PRELOAD", False,
        "load the default model and index vectors when a worker process starts (set by "
        "`lexrerank worker`)", group="worker")
    vector_cache_mb: int = setting(
        # 1 GiB: ~220k articles of the English ensemble (4.6 MiB per 1,000; README "At scale").
        "LEXRERANK_VECTOR_CACHE_MB", 1024,
        "MiB of article vectors (fp16, with their sentences) one worker process keeps in "
        "memory; least recently used first out, a miss reads only the missing articles",
        group="worker", minimum=1)
    vector_cache_prewarm: bool = setting(
        "LEXRERANK_VECTOR_CACHE_PREWARM", True,
        "with preload, fill the cache from the default index (up to the budget) before a "
        "process takes tasks; off: it fills on demand", group="worker")
    vector_compute_max: int = setting(
        "LEXRERANK_VECTOR_COMPUTE_MAX", 8,
        "candidates of one rerank lacking stored vectors that the worker computes, stores and "
        "uses (articles added since the last embed); more fall back `no_vectors`",
        group="worker", minimum=0)
    prometheus_multiproc_dir: Path | None = setting(
        "PROMETHEUS_MULTIPROC_DIR", None,
        "multi-process metrics of `serve --workers N` and prefork workers (prometheus-client's "
        "own variable); one per server, emptied at start", group="worker",
        shown_default="a fresh temporary directory")
    fault_delay_file: Path | None = setting(
        "LEXRERANK_FAULT_DELAY_FILE", None,
        "test hook: a file of milliseconds every rerank task sleeps while it exists; never in "
        "production", group="worker")

    @property
    def opensearch_is_local(self) -> bool:
        """True when the embedded default stack (not an external cluster) is in use."""
        return "OPENSEARCH_URL" not in os.environ

    @property
    def redis_is_local(self) -> bool:
        return "REDIS_URL" not in os.environ


def default_of(name: str) -> Any:
    """The declared default of setting ``name`` (for types that mirror some settings)."""
    declared = Settings.__dataclass_fields__[name]
    if declared.default_factory is not dataclasses.MISSING:
        return declared.default_factory()
    return declared.default


def declarations() -> list[tuple[dataclasses.Field, Declaration]]:
    """Every setting's field and declaration, in declaration order."""
    return [(f, f.metadata["setting"]) for f in dataclasses.fields(Settings)]


def _parse_list(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _parse_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _value_type(annotation: Any) -> Any:
    """The parsed type of a field annotation (``int | None`` -> ``int``)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kinds[0]
    return annotation


def _parse(name: str, raw: str, annotation: Any, declared: Declaration) -> Any:
    kind = _value_type(annotation)
    if kind is bool:
        return _parse_bool(raw)
    if kind is int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise LexrerankError(f"{name}={raw!r} is not an integer") from None
        if declared.minimum is not None and value < declared.minimum:
            raise LexrerankError(f"{name}={value} is below its minimum {declared.minimum}")
        return value
    if kind is Path:
        return Path(raw)
    if typing.get_origin(kind) is tuple:
        return _parse_list(raw) or None  # "," alone: the default, as an unset variable
    if declared.choices is not None and raw.strip() not in declared.choices:
        raise LexrerankError(f"{name}={raw!r} is not one of {', '.join(declared.choices)}")
    return raw.strip() if declared.choices is not None else raw


_HINTS: dict[str, Any] = {}


def _hints() -> dict[str, Any]:
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(Settings))
    return _HINTS


def get_settings() -> Settings:
    """Read the environment now (tests change it, so nothing is cached)."""
    values: dict[str, Any] = {}
    hints = _hints()
    for f, declared in declarations():
        if declared.read is not None:
            value = declared.read(declared.env)
        else:
            raw = os.environ.get(declared.env, "")
            value = _parse(declared.env, raw, hints[f.name], declared) if raw.strip() else None
        if value is not None:
            values[f.name] = value
    return Settings(**values)


def _shown_default(f: dataclasses.Field, declared: Declaration) -> str:
    if declared.shown_default is not None:
        return declared.shown_default
    default = f.default
    if default is None or default == ():
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, tuple):
        return f"`{','.join(default)}`"
    return f"`{default}`"


def markdown_table(group: str) -> str:
    """The README table of ``group``'s settings (variable, default, meaning)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f, declared in declarations():
        if declared.group == group:
            rows.append(f"| `{declared.env}` | {_shown_default(f, declared)} | "
                        f"{declared.doc} |")
    return "\n".join(rows)


README_BLOCK = ("<!-- settings:{group} (generated by python -m lexrerank.config --readme "
                "README.md) -->")
README_END = "<!-- /settings:{group} -->"


def with_readme_tables(text: str) -> str:
    """``text`` (the README) with each group's generated table between its markers."""
    for group in GROUPS:
        start, end = README_BLOCK.format(group=group), README_END.format(group=group)
        head, found, rest = text.partition(start)
        if not found or end not in rest:
            raise LexrerankError(f"README has no {start} ... {end} block")
        text = f"{head}{start}\n{markdown_table(group)}\n{end}{rest.partition(end)[2]}"
    return text


def main(argv: list[str] | None = None) -> int:
    """``python -m lexrerank.config [--readme README.md]``: print the configuration tables,
    or rewrite them in place in the README."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--readme"] and len(args) == 2:
        path = Path(args[1])
        path.write_text(with_readme_tables(path.read_text()))
        return 0
    for group, title in GROUPS.items():
        print(f"{title}:\n\n{markdown_table(group)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
