"""A private single-node OpenSearch for fault benchmarks, so the shared one is never stopped.

It runs the distribution ``lexrerank up`` installed (``lexrerank.stack``, in the cache), with
its own data and log directories (under the cache, where the service user can reach them),
its own HTTP and transport ports, a small heap, and in its own process group. Stopping it
(SIGTERM) and starting it again on the same ports and data directory is the
``opensearch_stop`` fault; what was indexed survives the restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.request
import uuid

from bench.services import free_port, signal_group, wait_until
from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError
from lexrerank.stack import SERVICE_USER, _java_home, _run_as_service_user, opensearch_home

HEAP = "512m"


class PrivateOpenSearch:
    """One OpenSearch node of our own on free loopback ports."""

    def __init__(self, heap: str = HEAP) -> None:
        settings = get_settings()
        self.home = opensearch_home(settings)
        if not (self.home / ".lexrerank-installed").exists():
            raise LexrerankError(f"OpenSearch is not installed in {self.home}: run `lexrerank "
                                 "up` once (it downloads and installs it)")
        self.root = settings.cache_dir / f"fault-opensearch-{uuid.uuid4().hex[:8]}"
        self.http_port, self.transport_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.heap = heap
        self.log = self.root / "console.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Start the node; the seconds until the cluster answers (yellow or green)."""
        data, logs = self.root / "data", self.root / "logs"
        for path in (data, logs):
            path.mkdir(parents=True, exist_ok=True)
        prefix = _run_as_service_user()
        if prefix:
            subprocess.run(["chown", "-R", SERVICE_USER, str(self.root)], check=True)
        env = {**os.environ, "OPENSEARCH_JAVA_HOME": _java_home(),
               "OPENSEARCH_JAVA_OPTS": f"-Xms{self.heap} -Xmx{self.heap}"}
        cmd = [*prefix, str(self.home / "bin" / "opensearch"),
               "-Ediscovery.type=single-node", "-Enetwork.host=127.0.0.1",
               f"-Ehttp.port={self.http_port}", f"-Etransport.port={self.transport_port}",
               f"-Ecluster.name=lexrerank-fault-{self.http_port}",
               f"-Epath.data={data}", f"-Epath.logs={logs}",
               "-Ecluster.routing.allocation.disk.threshold_enabled=false"]
        with open(self.log, "ab") as out:
            # cwd: the JVM's relative paths (gc.log, heap dumps) land in our own directory.
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, cwd=self.root,
                                         start_new_session=True)
        return wait_until(self.ready, self.proc, "private OpenSearch", self.log, 240, 0.5)

    def ready(self) -> bool:
        try:
            url = f"{self.url}/_cluster/health?wait_for_status=yellow&timeout=1s"
            # Our own node's loopback URL.
            with urllib.request.urlopen(url, timeout=3) as resp:  # nosec B310
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM the node's process group (a clean shutdown) and wait for it."""
        signal_group(self.proc, signal.SIGTERM, 60)

    def remove(self) -> None:
        """Stop the node and delete its data and logs."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

