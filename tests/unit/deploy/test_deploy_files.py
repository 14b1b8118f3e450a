"""The production deploy files (deploy/compose, deploy/k8s, deploy/Dockerfile) checked statically.

They cannot run here (no Docker, no cluster), so these tests hold them to the code: every
environment variable they set is one the code reads, the required ones are set, ports match
the CLI, GPU workers ask for GPUs, the gateway has its probes, Prometheus scrapes the ports the
services expose, and no API key is written in them.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.auth import ApiKeyMiddleware
from gateway.pages import public_paths

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
K8S = DEPLOY / "k8s"
CODE_DIRS = ("lexrerank", "gateway", "worker", "indexer", "reranker")
APP_SERVICES = ("gateway", "rerank-worker", "embed-worker")
# Read by libraries the code uses, not by our code: allowed in the manifests.
LIBRARY_ENV = {"HF_HUB_OFFLINE"}
# Without these a container would talk to 127.0.0.1 (the local defaults).
REQUIRED_ENV = {"OPENSEARCH_URL", "REDIS_URL"}
HEALTH_PATHS = {"/_lexrerank/healthz", "/_lexrerank/readyz", "/_lexrerank/health"}


# ---------------------------------------------------------------------------- helpers


def code_env_names() -> set[str]:
    """Environment variables the code reads: every declared setting (lexrerank/config.py)."""
    from lexrerank.config import declarations

    return {declared.env for _, declared in declarations()} | {"LEXRERANK_API_KEYS_FILE"}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def k8s_docs() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in load_all(path)]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def k8s_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The container's environment: its ConfigMaps (envFrom) and its own env entries."""
    c = container(deployment)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        config = k8s_object("ConfigMap", source["configMapRef"]["name"])
        env.update(config["data"])
    for item in c.get("env", []):
        env[item["name"]] = item.get("value", "<from " + next(iter(item.get("valueFrom", {
            "?": 0}))) + ">")
    return env


def option(args: list[str], name: str) -> str | None:
    """The value after ``name`` in an argument list."""
    return args[args.index(name) + 1] if name in args else None


def cli_default(command: str, parameter: str) -> Any:
    from lexrerank import cli

    default = inspect.signature(getattr(cli, command)).parameters[parameter].default
    return getattr(default, "default", default)


def worker_metrics_port(env: dict[str, str]) -> int:
    from lexrerank.config import Settings

    if "LEXRERANK_WORKER_METRICS_PORT" in env:
        return int(env["LEXRERANK_WORKER_METRICS_PORT"])
    return Settings.__dataclass_fields__["worker_metrics_port"].default


# ---------------------------------------------------------------------------- parse


def test_every_deploy_file_parses() -> None:
    files = [COMPOSE, DEPLOY / "kustomization.yaml", *sorted(K8S.glob("*.yaml")),
             *sorted((DEPLOY / "prometheus").rglob("*.yml"))]
    for path in files:
        assert load_all(path), f"{path} is empty"
    for doc in k8s_docs():
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "lexrerank", doc["metadata"]


def test_kustomization_lists_every_manifest_and_existing_files() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {f"k8s/{p.name}" for p in K8S.glob("*.yaml")}
    for generator in kustomization["configMapGenerator"]:
        for file in generator["files"]:
            assert (DEPLOY / file).is_file(), file
    # Every ConfigMap a pod mounts is generated or defined.
    generated = {g["name"] for g in kustomization["configMapGenerator"]}
    defined = {d["metadata"]["name"] for d in k8s_docs() if d["kind"] == "ConfigMap"}
    for doc in k8s_docs():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for volume in doc["spec"]["template"]["spec"].get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in generated | defined, volume


# ---------------------------------------------------------------------------- environment


def test_compose_env_vars_are_read_by_the_code() -> None:
    known = code_env_names() | LIBRARY_ENV
    services = compose()["services"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        unknown = set(env) - known
        assert not unknown, f"compose {name} sets {unknown}, which no code reads"
        assert set(env) >= REQUIRED_ENV, f"compose {name} lacks {REQUIRED_ENV - set(env)}"


def test_k8s_env_vars_are_read_by_the_code() -> None:
    known = code_env_names() | LIBRARY_ENV
    for name in APP_SERVICES:
        deployment = k8s_object("Deployment", name)
        env = k8s_env(deployment)
        args = container(deployment)["args"]
        # Only for $(VAR) expansion in the args: Kubernetes' own, not the code's.
        expansions = {v for v in env if f"$({v})" in " ".join(args)}
        unknown = set(env) - known - expansions
        assert not unknown, f"k8s {name} sets {unknown}, which no code reads"
        assert set(env) >= REQUIRED_ENV, f"k8s {name} lacks {REQUIRED_ENV - set(env)}"


def test_required_settings_the_code_reads_are_the_ones_set() -> None:
    # The other direction: the names the manifests rely on are really read by the code.
    names = code_env_names()
    assert names >= REQUIRED_ENV
    assert {"LEXRERANK_API_KEYS_FILE", "LEXRERANK_AUTH_EXEMPT_PATHS",
            "LEXRERANK_RERANK_QUEUE", "LEXRERANK_EMBED_QUEUE",
            "LEXRERANK_WORKER_METRICS_PORT"} <= names


def _worker_queue_checks(env: dict[str, str], args: list[str], kind: str) -> None:
    queue = env.get(f"LEXRERANK_{kind.upper()}_QUEUE", kind)
    assert option(args, "--queues") == queue, (kind, args, queue)


def test_workers_consume_the_queues_the_gateway_sends_to() -> None:
    services = compose()["services"]
    gateway_env = services["gateway"]["environment"]
    for kind in ("rerank", "embed"):
        svc = services[f"{kind}-worker"]
        assert svc["command"][0] == "worker"
        _worker_queue_checks(svc["environment"], svc["command"], kind)
        key = f"LEXRERANK_{kind.upper()}_QUEUE"
        assert svc["environment"].get(key) == gateway_env.get(key)
    gateway_k8s = k8s_env(k8s_object("Deployment", "gateway"))
    for kind in ("rerank", "embed"):
        deployment = k8s_object("Deployment", f"{kind}-worker")
        env, args = k8s_env(deployment), container(deployment)["args"]
        assert args[0] == "worker"
        _worker_queue_checks(env, args, kind)
        key = f"LEXRERANK_{kind.upper()}_QUEUE"
        assert env.get(key) == gateway_k8s.get(key)


# ---------------------------------------------------------------------------- ports, probes


def test_gateway_port_matches_the_cli_and_everything_pointing_at_it() -> None:
    default = cli_default("serve", "port")
    svc = compose()["services"]["gateway"]
    port = int(option(svc["command"], "--port") or default)
    assert option(svc["command"], "--host") == "0.0.0.0", "reachable from other containers"
    assert all(str(p).endswith(f":{port}") for p in svc["ports"]), svc["ports"]
    assert f"127.0.0.1:{port}/_lexrerank/health" in " ".join(svc["healthcheck"]["test"])
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"EXPOSE {default}" in dockerfile and f'"--port", "{default}"' in dockerfile

    deployment = k8s_object("Deployment", "gateway")
    c = container(deployment)
    k8s_port = int(option(c["args"], "--port") or default)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == k8s_port
    service = k8s_object("Service", "gateway")
    assert service["spec"]["ports"][0]["targetPort"] in ("http", k8s_port)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == k8s_port


def test_gateway_has_liveness_and_readiness_probes_on_real_routes() -> None:
    from gateway.app import create_app

    app: Any = create_app()
    while not hasattr(app, "routes"):  # through the ASGI middleware wrapping the FastAPI app
        app = app.app
    routes = {getattr(r, "path", None) for r in app.routes}
    assert routes >= HEALTH_PATHS, "the probes' routes exist in the gateway"
    c = container(k8s_object("Deployment", "gateway"))
    assert c["livenessProbe"]["httpGet"]["path"] == "/_lexrerank/healthz"
    # Readiness needs OpenSearch only: a worker outage must not take the gateways away.
    assert c["readinessProbe"]["httpGet"]["path"] == "/_lexrerank/health"
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"]["port"] in ("http", c["ports"][0]["containerPort"])


def test_gateway_runs_replicas() -> None:
    assert compose()["services"]["gateway"]["deploy"]["replicas"] >= 2
    assert k8s_object("Deployment", "gateway")["spec"]["replicas"] >= 2


def test_gpu_rerank_workers_request_gpus() -> None:
    svc = compose()["services"]["rerank-worker"]
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d.get("count", 0) >= 1 for d in devices), devices
    limits = container(k8s_object("Deployment", "rerank-worker"))["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1


def test_prometheus_scrapes_the_ports_the_services_expose() -> None:
    services = compose()["services"]
    command = " ".join(services["prometheus"]["command"])
    config_name = re.search(r"--config\.file=/etc/prometheus/(\S+)", command).group(1)
    assert any(v.startswith("../prometheus:/etc/prometheus") for v in
               services["prometheus"]["volumes"])
    config = yaml.safe_load((DEPLOY / "prometheus" / config_name).read_text())
    for rule_file in config.get("rule_files", []):
        assert (DEPLOY / "prometheus" / rule_file).is_file(), rule_file
    gateway_port = int(option(services["gateway"]["command"], "--port")
                       or cli_default("serve", "port"))
    expected = {"gateway": gateway_port,
                **{w: worker_metrics_port(services[w]["environment"])
                   for w in ("rerank-worker", "embed-worker")}}
    scraped: dict[str, int] = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                scraped[name] = sd["port"]
    assert scraped == expected

    # Kubernetes: annotation-driven; each annotated port is a port the container opens.
    for name in APP_SERVICES:
        deployment = k8s_object("Deployment", name)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        port = int(annotations["prometheus.io/port"])
        assert port in [p["containerPort"] for p in container(deployment)["ports"]]
        if name != "gateway":
            assert port == worker_metrics_port(k8s_env(deployment))
    k8s_config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.kubernetes.yml").read_text())
    relabels = k8s_config["scrape_configs"][0]["relabel_configs"]
    assert any("prometheus_io_port" in " ".join(r.get("source_labels", [])) for r in relabels)


def test_grafana_reads_the_prometheus_the_files_start() -> None:
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    url = datasource["datasources"][0]["url"]
    assert url == "http://prometheus:9090"
    assert "9090:9090" in compose()["services"]["prometheus"]["ports"]
    assert k8s_object("Service", "prometheus")["spec"]["ports"][0]["port"] == 9090


# ---------------------------------------------------------------------------- secrets


def test_api_keys_come_from_secrets_never_literals() -> None:
    everything = COMPOSE.read_text() + "".join(p.read_text() for p in K8S.glob("*.yaml"))
    assert "LEXRERANK_API_KEYS:" not in everything and "name: LEXRERANK_API_KEYS\n" not in \
        everything, "API keys must come from a secret file, not a literal"
    assert "kind: Secret" not in everything, "Secrets are created out of band, not committed"

    svc = compose()["services"]["gateway"]
    keys_file = svc["environment"]["LEXRERANK_API_KEYS_FILE"]
    secret = keys_file.removeprefix("/run/secrets/")
    assert secret in svc["secrets"] and "file" in compose()["secrets"][secret]
    assert (REPO / ".gitignore").read_text().count("deploy/compose/secrets") == 1

    deployment = k8s_object("Deployment", "gateway")
    env = k8s_env(deployment)
    mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
    mount_dir = str(Path(env["LEXRERANK_API_KEYS_FILE"]).parent)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "secret" in volumes[mounts[mount_dir]]


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_probes_metrics_and_pages_are_open_without_a_key(where: str) -> None:
    if where == "compose":
        env = compose()["services"]["gateway"]["environment"]
    else:
        env = k8s_env(k8s_object("Deployment", "gateway"))
    auth = ApiKeyMiddleware(None, keys=["k"],
                            exempt_paths=env["LEXRERANK_AUTH_EXEMPT_PATHS"].split(","))
    # Probes and Prometheus cannot send the key; the pages' files hold no data.
    for path in HEALTH_PATHS | {"/_lexrerank/metrics"} | set(public_paths()):
        assert auth.exempts("GET", path), path
    assert not auth.exempts("GET", "/statutes/_search"), "data still needs the key"
