"""The embedded default stack: OpenSearch from Maven Central and Debian's Redis, on loopback.

With ``serve`` (``lexrerank up --serve``) it also starts one rerank worker and the gateway in
the background (pid files and logs in ``<cache>/run``).

Everything is installed into a cache outside the repository (``LEXRERANK_CACHE``, default
``~/.cache/lexrerank``) so a clean clone reuses it. Services whose URL is set in the
environment (``OPENSEARCH_URL``, ``REDIS_URL``) are external: they are never started here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lexrerank.config import OPENSEARCH_VERSION, Settings, get_settings, safe_url
from lexrerank.errors import LexrerankError

MAVEN = "https://repo1.maven.org/maven2"
OPENSEARCH_ZIP = (
    f"{MAVEN}/org/opensearch/distribution/integ-test-zip/opensearch/{OPENSEARCH_VERSION}/"
    f"opensearch-{OPENSEARCH_VERSION}.zip"
)
# The integ-test distribution ships only transport-netty4; English stemming, stop words and
# the CJK analyzers live in the analysis-common module, published on Maven Central as a jar.
ANALYSIS_COMMON_JAR = (
    f"{MAVEN}/org/opensearch/plugin/analysis-common/{OPENSEARCH_VERSION}/"
    f"analysis-common-{OPENSEARCH_VERSION}.jar"
)
INTL_PLUGIN = "lexrerank-analysis-intl"
REPO_ROOT = Path(__file__).resolve().parents[1]
INTL_PLUGIN_BUILD = REPO_ROOT / "deploy" / "opensearch-plugins" / "analysis-intl" / "build.sh"
PIPELINE_PLUGIN = "lexrerank-search-pipeline"
PIPELINE_PLUGIN_DIR = REPO_ROOT / "deploy" / "opensearch-plugins" / PIPELINE_PLUGIN
# The file in the installed plugin's folder that names the sources it was built from.
PIPELINE_BUILD_ID_FILE = "lexrerank-build-id"
SERVICE_USER = "opensearch"
READY_TIMEOUT_S = 180


@dataclass
class ServiceStatus:
    name: str
    url: str
    running: bool
    managed: bool  # started and owned by this machine's `lexrerank up`
    detail: str
    required: bool = True  # False: optional and not started (worker, gateway)


# ---------------------------------------------------------------------------- downloads


def _download(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` (atomically), verified against Maven Central's .sha1."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # url: one of this module's https://repo1.maven.org constants, never user input.
    with urllib.request.urlopen(url + ".sha1", timeout=60) as resp:  # nosec B310
        expected = resp.read().decode().split()[0].strip()
    tmp = dest.with_suffix(dest.suffix + ".part")
    # Maven Central publishes SHA-1 sums: a corruption check; TLS authenticates the server.
    sha1 = hashlib.sha1(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:  # nosec B310
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr) as bar:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                sha1.update(chunk)
                bar.update(len(chunk))
    if sha1.hexdigest() != expected:
        tmp.unlink(missing_ok=True)
        raise LexrerankError(f"checksum mismatch for {url}: the download is corrupt; run again")
    tmp.rename(dest)
    return dest


# ---------------------------------------------------------------------------- OpenSearch


def opensearch_home(settings: Settings) -> Path:
    return settings.cache_dir / f"opensearch-{OPENSEARCH_VERSION}"


def _java_home() -> str:
    java_home = get_settings().opensearch_java_home
    if java_home:
        return java_home
    java = shutil.which("java")
    if not java:
        raise LexrerankError("no Java runtime found: run `make setup` (installs openjdk-17)")
    return str(Path(os.path.realpath(java)).parents[1])


def _run_as_service_user() -> list[str]:
    """OpenSearch refuses to run as root: as root, run it as a dedicated system user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SERVICE_USER],
            check=True,
        )
    return ["runuser", "-u", SERVICE_USER, "--"]


def install_opensearch(settings: Settings) -> Path:
    """Download and unpack OpenSearch plus its analysis modules; idempotent."""
    home = opensearch_home(settings)
    marker = home / ".lexrerank-installed"
    if marker.exists():
        return home
    downloads = settings.cache_dir / "downloads"
    archive = _download(OPENSEARCH_ZIP, downloads / Path(OPENSEARCH_ZIP).name)
    common = _download(ANALYSIS_COMMON_JAR, downloads / Path(ANALYSIS_COMMON_JAR).name)
    staging = settings.cache_dir / f".staging-opensearch-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(staging)
    unpacked = staging / f"opensearch-{OPENSEARCH_VERSION}"
    for script in (unpacked / "bin").iterdir():
        script.chmod(0o755)
    module = unpacked / "modules" / "analysis-common"
    module.mkdir(parents=True)
    shutil.copy(common, module)
    (module / "plugin-descriptor.properties").write_text(
        "description=Adds the common analyzers, tokenizers and filters to OpenSearch.\n"
        f"version={OPENSEARCH_VERSION}\nname=analysis-common\n"
        "classname=org.opensearch.analysis.common.CommonAnalysisPlugin\n"
        f"java.version=11\nopensearch.version={OPENSEARCH_VERSION}\n"
        "extended.plugins=\nhas.native.controller=false\n"
    )
    _install_intl_plugin(settings, unpacked)
    install_pipeline_plugin(settings, unpacked)
    # Only a complete install is moved into place, so a killed `up` never leaves half of one.
    shutil.rmtree(home, ignore_errors=True)
    unpacked.rename(home)
    shutil.rmtree(staging)
    marker.write_text(OPENSEARCH_VERSION + "\n")
    return home


def _install_intl_plugin(settings: Settings, home: Path) -> None:
    """ICU (Vietnamese) and kuromoji (Japanese) analysis: built from Lucene's Maven jars."""
    if not INTL_PLUGIN_BUILD.exists():
        return
    plugin_zip = settings.cache_dir / "downloads" / f"{INTL_PLUGIN}-{OPENSEARCH_VERSION}.zip"
    env = {**os.environ, "LEXRERANK_CACHE": str(settings.cache_dir)}
    subprocess.run(["bash", str(INTL_PLUGIN_BUILD), str(home), str(plugin_zip)], check=True,
                   env=env)
    subprocess.run(
        [str(home / "bin" / "opensearch-plugin"), "install", "--batch", f"file://{plugin_zip}"],
        check=True,
        env={**env, "OPENSEARCH_JAVA_HOME": _java_home()},
        stdout=subprocess.DEVNULL,
    )


def pipeline_plugin_build_id() -> str:
    """A digest of the search-pipeline plugin's sources, build script and policy: an
    installed plugin with another id is stale (``lexrerank up`` reinstalls it)."""
    digest = hashlib.sha256()
    files = sorted(p for p in PIPELINE_PLUGIN_DIR.rglob("*")
                   if p.is_file() and "src/test" not in p.as_posix() and p.suffix != ".md")
    for path in files:
        digest.update(path.relative_to(PIPELINE_PLUGIN_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return f"{OPENSEARCH_VERSION}-{digest.hexdigest()[:16]}"


def pipeline_plugin_current(home: Path) -> bool:
    """True when ``home`` holds the search-pipeline plugin built from these sources."""
    marker = home / "plugins" / PIPELINE_PLUGIN / PIPELINE_BUILD_ID_FILE
    try:
        return marker.read_text().strip() == pipeline_plugin_build_id()
    except OSError:
        return False


def install_pipeline_plugin(settings: Settings, home: Path) -> bool:
    """Build ``lexrerank-search-pipeline`` (javac, build.sh) and install it into ``home``
    unless the installed one is current; True when it (re)installed. Takes effect when
    OpenSearch (re)starts."""
    build = PIPELINE_PLUGIN_DIR / "build.sh"
    if not build.exists() or pipeline_plugin_current(home):
        return False
    build_id = pipeline_plugin_build_id()
    plugin_zip = settings.cache_dir / "downloads" / f"{PIPELINE_PLUGIN}-{build_id}.zip"
    plugin_zip.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LEXRERANK_CACHE": str(settings.cache_dir),
           "LEXRERANK_BUILD_ID": build_id, "OPENSEARCH_JAVA_HOME": _java_home()}
    subprocess.run(["bash", str(build), str(home), str(plugin_zip)], check=True, env=env)
    tool = str(home / "bin" / "opensearch-plugin")
    if (home / "plugins" / PIPELINE_PLUGIN).exists():
        subprocess.run([tool, "remove", PIPELINE_PLUGIN], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # --batch accepts the permissions of plugin-security.policy (one URLPermission).
    subprocess.run([tool, "install", "--batch", f"file://{plugin_zip}"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return True


def _pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def _wait(check: Callable[[], bool], what: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise LexrerankError(f"{what} did not become ready within {timeout:.0f}s; see {log}")


def _answers_200(url: str) -> bool:
    try:
        # url: a configured service URL (http/https), not request data.
        with urllib.request.urlopen(url, timeout=2) as resp:  # nosec B310
            return resp.status == 200
    except OSError:
        return False


def _opensearch_ready(url: str) -> bool:
    return _answers_200(f"{url}/_cluster/health")


def start_opensearch(settings: Settings) -> str:
    if _opensearch_ready(settings.opensearch_url):
        home = opensearch_home(settings)
        if (home / ".lexrerank-installed").exists() and install_pipeline_plugin(settings, home):
            # A running node loads plugins only at start: never restarted behind a user's back.
            return (f"already running; {PIPELINE_PLUGIN} (re)installed, loaded at the next "
                    "start: `lexrerank down && lexrerank up`")
        return "already running"
    home = install_opensearch(settings)
    install_pipeline_plugin(settings, home)  # an install from before the plugin, or stale
    run = settings.cache_dir / "run"
    data, logs = settings.cache_dir / "opensearch-data", settings.cache_dir / "opensearch-logs"
    for path in (run, data, logs):
        path.mkdir(parents=True, exist_ok=True)
    prefix = _run_as_service_user()
    if prefix:
        for path in (home, data, logs):
            subprocess.run(["chown", "-R", SERVICE_USER, str(path)], check=True)
    env = {
        **os.environ,
        "OPENSEARCH_JAVA_HOME": _java_home(),
        "OPENSEARCH_JAVA_OPTS": f"-Xms{settings.opensearch_heap} -Xmx{settings.opensearch_heap}",
    }
    cmd = [
        *prefix, str(home / "bin" / "opensearch"),
        "-Ediscovery.type=single-node", "-Enetwork.host=127.0.0.1", "-Ehttp.port=9200",
        f"-Epath.data={data}", f"-Epath.logs={logs}",
        # A shared dev box's disk is often >90% full; watermarks would block writes.
        "-Ecluster.routing.allocation.disk.threshold_enabled=false",
    ]
    console = logs / "console.log"
    with open(console, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    (run / "opensearch.pid").write_text(str(proc.pid))
    _wait(lambda: _opensearch_ready(settings.opensearch_url) or proc.poll() is not None,
          "OpenSearch", console, READY_TIMEOUT_S)
    if proc.poll() is not None:
        raise LexrerankError(f"OpenSearch exited with code {proc.returncode}; see {console}")
    return f"started (pid {proc.pid}, heap {settings.opensearch_heap})"


# ---------------------------------------------------------------------------- Redis


def _redis_ready(settings: Settings) -> bool:
    import redis

    from lexrerank.redis_tls import redis_client

    try:
        return bool(redis_client(settings, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def start_redis(settings: Settings) -> str:
    if _redis_ready(settings):
        return "already running"
    server = shutil.which("redis-server")
    if not server:
        raise LexrerankError("redis-server is not installed: run `make setup` "
                             "(apt-get install redis-server), or set REDIS_URL")
    run = settings.cache_dir / "run"
    run.mkdir(parents=True, exist_ok=True)
    log = run / "redis.log"
    subprocess.run(
        [server, "--bind", "127.0.0.1", "--port", "6379", "--save", "", "--appendonly", "no",
         "--daemonize", "yes", "--pidfile", str(run / "redis.pid"), "--logfile", str(log),
         "--dir", str(run)],
        check=True,
    )
    _wait(lambda: _redis_ready(settings), "Redis", log, 30)
    return "started"


# ---------------------------------------------------------------------------- worker, gateway


def worker_node_name() -> str:
    return f"lexrerank@{socket.gethostname()}"


def _worker_ready(settings: Settings) -> bool:
    """A process consuming the rerank queue answers (after loading its model)."""
    from worker.celery_app import make_app, serving

    return serving(make_app(settings), settings.rerank_queue, timeout_s=1.0) is not None


def gateway_ready(url: str) -> bool:
    """The gateway at ``url`` answers its own health route with 200."""
    return _answers_200(f"{url}/_lexrerank/health")


def _start_background(settings: Settings, name: str, args: list[str]) -> subprocess.Popen:
    """``python -m lexrerank ARGS`` detached, logging to ``<run>/<name>.log``."""
    run = settings.cache_dir / "run"
    run.mkdir(parents=True, exist_ok=True)
    with open(run / f"{name}.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lexrerank", *args], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=REPO_ROOT)
    (run / f"{name}.pid").write_text(str(proc.pid))
    return proc


def start_worker(settings: Settings) -> str:
    """One worker on the rerank and embed queues (prefork, one process on CPU)."""
    if _worker_ready(settings):
        return "already running"
    proc = _start_background(settings, "worker", ["worker", "--hostname", worker_node_name()])
    log = settings.cache_dir / "run" / "worker.log"
    # The worker answers pings once its model and vectors are loaded (or failed to load).
    _wait(lambda: _worker_ready(settings) or proc.poll() is not None, "the worker", log,
          READY_TIMEOUT_S)
    if proc.poll() is not None:
        raise LexrerankError(f"the worker exited with code {proc.returncode}; see {log}")
    return f"started (pid {proc.pid}, model {settings.default_model}, log {log})"


def start_gateway(settings: Settings) -> str:
    """The gateway on ``LEXRERANK_GATEWAY_URL`` (default 127.0.0.1:8000)."""
    url = settings.gateway_url.rstrip("/")
    if gateway_ready(url):
        return "already running"
    where = urllib.parse.urlsplit(url)
    proc = _start_background(settings, "gateway", [
        "serve", "--host", where.hostname or "127.0.0.1", "--port", str(where.port or 8000)])
    log = settings.cache_dir / "run" / "gateway.log"
    _wait(lambda: gateway_ready(url) or proc.poll() is not None, "the gateway", log, 60)
    if proc.poll() is not None:
        raise LexrerankError(f"the gateway exited with code {proc.returncode}; see {log}")
    return f"started (pid {proc.pid}, {url}, log {log})"


# ---------------------------------------------------------------------------- stack


def _stop(pid_file: Path, name: str, timeout: float = 60, group: bool = False) -> str:
    """SIGTERM, then SIGKILL after ``timeout`` (to the whole process group with ``group``:
    a prefork worker's children must not outlive it)."""
    pid = _pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return "not running (nothing to stop)"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid_file):
        time.sleep(0.5)
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    elif _pid_alive(pid_file):
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return f"stopped (pid {pid})"


def up(settings: Settings | None = None, serve: bool = False) -> dict[str, str]:
    """Start what is local and not yet running; wait until each answers.

    ``serve`` also starts one worker and the gateway.
    """
    settings = settings or get_settings()
    result = {}
    result["opensearch"] = (start_opensearch(settings) if settings.opensearch_is_local
                            else f"external ({safe_url(settings.opensearch_url)}), not started")
    result["redis"] = (start_redis(settings) if settings.redis_is_local
                       else f"external ({safe_url(settings.redis_url)}), not started")
    if serve:
        result["worker"] = start_worker(settings)
        result["gateway"] = start_gateway(settings)
        if settings.opensearch_is_local:
            result["search pipeline"] = define_search_pipeline(settings)
    return result


def search_pipeline_definition(service_url: str) -> dict[str, object]:
    """The ``lexrerank`` search pipeline of the plugin, calling the gateway at ``service_url``
    (processor settings: docs/search-pipeline.md)."""
    return {"description": "lexrerank: rerank the window through the lexrerank gateway",
            "request_processors": [{"lexrerank": {}}],
            "response_processors": [{"lexrerank": {"service_url": service_url}}]}


def define_search_pipeline(settings: Settings, name: str = "lexrerank") -> str:
    """Define the search pipeline ``name`` on the local OpenSearch, calling the local gateway,
    unless one of that name exists (a user's own is never overwritten) or the plugin is not
    loaded."""
    base = settings.opensearch_url.rstrip("/")
    try:
        # base: the configured (local) OpenSearch URL.
        with urllib.request.urlopen(f"{base}/_cat/plugins?h=component", timeout=5) as resp:  # nosec B310
            if PIPELINE_PLUGIN not in resp.read().decode().split():
                return (f"not defined: {PIPELINE_PLUGIN} is not loaded (restart OpenSearch: "
                        "`lexrerank down && lexrerank up`)")
    except OSError as exc:
        return f"not defined: OpenSearch did not list its plugins ({exc})"
    if _answers_200(f"{base}/_search/pipeline/{name}"):
        return f"{name} already defined"
    body = json.dumps(search_pipeline_definition(settings.gateway_url.rstrip("/"))).encode()
    request = urllib.request.Request(f"{base}/_search/pipeline/{name}", data=body, method="PUT",
                                     headers={"Content-Type": "application/json"})
    try:
        # request: a PUT to the configured (local) OpenSearch URL.
        with urllib.request.urlopen(request, timeout=10):  # nosec B310
            pass
    except OSError as exc:
        return f"not defined: {exc}"
    return f"{name} defined (calls {settings.gateway_url})"


def down(settings: Settings | None = None) -> dict[str, str]:
    """Stop the services that `up` started on this machine."""
    settings = settings or get_settings()
    run = settings.cache_dir / "run"
    return {
        "gateway": _stop(run / "gateway.pid", "gateway", timeout=15, group=True),
        "worker": _stop(run / "worker.pid", "worker", timeout=30, group=True),
        "opensearch": _stop(run / "opensearch.pid", "OpenSearch"),
        "redis": _stop(run / "redis.pid", "Redis", timeout=10),
    }


def status(settings: Settings | None = None) -> list[ServiceStatus]:
    settings = settings or get_settings()
    run = settings.cache_dir / "run"
    home = opensearch_home(settings)
    os_detail = "running" if _opensearch_ready(settings.opensearch_url) else "not reachable"
    if settings.opensearch_is_local and not (home / ".lexrerank-installed").exists():
        os_detail += f"; not installed in {home} (run `lexrerank up`)"
    redis_detail = "running" if _redis_ready(settings) else "not reachable"
    if settings.redis_is_local and not shutil.which("redis-server"):
        redis_detail += "; redis-server missing (run `make setup`)"
    return [
        ServiceStatus("opensearch", safe_url(settings.opensearch_url), os_detail == "running",
                      _pid_alive(run / "opensearch.pid") is not None, os_detail),
        ServiceStatus("redis", safe_url(settings.redis_url), redis_detail == "running",
                      _pid_alive(run / "redis.pid") is not None, redis_detail),
        _optional_status("worker", f"{worker_node_name()} on {settings.rerank_queue}",
                         run / "worker.pid",
                         lambda: redis_detail == "running" and _worker_ready(settings)),
        _optional_status("gateway", settings.gateway_url, run / "gateway.pid",
                         lambda: gateway_ready(settings.gateway_url.rstrip("/"))),
    ]


def _optional_status(name: str, url: str, pid_file: Path, ready: Callable[[], bool]
                     ) -> ServiceStatus:
    """A worker/gateway row: required (counts for the exit code) once `up --serve` ran."""
    started = pid_file.exists()
    running = ready()
    detail = "running" if running else (
        "not reachable" if started else "not started (`lexrerank up --serve`)")
    return ServiceStatus(name, url, running, _pid_alive(pid_file) is not None, detail,
                         required=started)
