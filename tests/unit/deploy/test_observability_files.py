"""Static checks of deploy/grafana and deploy/prometheus against the metrics the code exports.

Every metric a dashboard panel or an alert names must be one the code really exports (with
the suffixes Prometheus adds: ``_total``, ``_bucket``, ``_count``, ``_sum``), and every label
a selector matches on must be one of that metric's labels. When Debian's ``promtool`` is
installed (deploy/local/install-system-packages.sh), it checks the configs and rules too and
runs the rule unit tests in deploy/prometheus/tests/.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
GRAFANA = REPO / "deploy" / "grafana"
PROMETHEUS = REPO / "deploy" / "prometheus"
DASHBOARD = GRAFANA / "dashboards" / "lexrerank.json"
RULES = PROMETHEUS / "rules" / "lexrerank.rules.yml"
CONFIGS = sorted(PROMETHEUS.glob("prometheus*.yml"))
# Names Prometheus itself provides (per target), allowed beside ours.
PROMETHEUS_BUILTINS = {"up"}
TARGET_LABELS = {"job", "instance", "pod"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset", "inf", "nan", "sum", "min", "max", "avg", "count",
                "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group"}


def exported_metrics() -> dict[str, set[str]]:
    """Sample name -> label names, for everything the gateway and the workers export."""
    from prometheus_client import REGISTRY

    import gateway.prometheus_metrics  # noqa: F401 - registers the gateway metrics
    import gateway.readiness  # noqa: F401 - registers lexrerank_gateway_ready_check
    import worker.prometheus_metrics  # noqa: F401 - registers the worker metrics
    from gateway import scrape_collectors

    names: dict[str, set[str]] = {}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",), "info": ("_info",), "summary": ("_count", "_sum")}
    for collector, _ in list(REGISTRY._collector_to_names.items()):
        labels = set(getattr(collector, "_labelnames", ()))
        for family in collector.describe() if hasattr(collector, "describe") else []:
            if family.name.startswith("lexrerank_"):
                for suffix in suffixes[family.type]:
                    extra = {"le"} if suffix == "_bucket" else set()
                    names[family.name + suffix] = labels | extra
    scrape = [scrape_collectors.QueueDepthCollector(None, ["rerank"]),  # type: ignore[arg-type]
              scrape_collectors.ReindexCollector(None)]  # type: ignore[arg-type]
    for collector in scrape:
        for family in collector.describe():
            names[family.name] = set(getattr(family, "_labelnames", ()))
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expression) of every panel target of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())
    return [(rule.get("alert") or rule.get("record"), rule["expr"])
            for group in rules["groups"] for rule in group["rules"]]


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every vector selector in a PromQL expression."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings cannot hide names
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    found = []
    for match in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", text):
        name, matchers = match.group(1), match.group(2) or ""
        before = text[:match.start()].rstrip()
        after = text[match.end():].lstrip()
        if (name.lower() in PROMQL_WORDS or after.startswith("(") or name[0].isdigit()
                or before.endswith(("by (", "by(", "without (", "on (", "on(", "ignoring ("))
                or re.search(r"(by|without|on|ignoring|group_left|group_right)\s*\([^)]*$",
                             before)
                or re.fullmatch(r"\d+[smhdwy]", name) or before.endswith("[")):
            continue
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
        found.append((name, labels))
    return found


def test_selector_parser_finds_names_and_labels() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, stage) (rate(a_bucket{stage="total", '
            'x=~"y"}[5m]))) > 0.5 and on (alias) max by (alias) (b{state!~"s|f"}) == 1 '
            'or absent(c)')
    assert selectors(expr) == [("a_bucket", {"stage", "x"}), ("b", {"state"}), ("c", set())]


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_queried_metric_and_label_is_exported(source: str) -> None:
    exported = exported_metrics()
    exprs = dashboard_exprs() if source == "dashboard" else rule_exprs()
    assert exprs
    used = set()
    for title, expr in exprs:
        for name, labels in selectors(expr):
            if name in PROMETHEUS_BUILTINS:
                continue
            assert name in exported, f"{source} {title!r}: {name} is not exported"
            unknown = labels - exported[name] - TARGET_LABELS
            assert not unknown, f"{source} {title!r}: {name} has no label {unknown}"
            used.add(name)
    assert used


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_fallback_reason_matched_is_a_code(source: str) -> None:
    from worker.protocol import ReasonCode

    exprs = dashboard_exprs() if source == "dashboard" else rule_exprs()
    codes = {code.value for code in ReasonCode}
    for title, expr in exprs:
        for value in re.findall(r'reason\s*(?:=~|!~|!=|=)\s*"([^"]*)"', expr):
            unknown = set(value.split("|")) - codes
            assert not unknown, f"{source} {title!r}: {unknown} are not reason codes"


def test_dashboard_covers_what_the_issue_asks_for() -> None:
    exprs = " ".join(expr for _, expr in dashboard_exprs())
    for name in ("lexrerank_gateway_rerank_stage_duration_seconds_bucket",
                 "lexrerank_gateway_rerank_fallbacks_total",
                 "lexrerank_gateway_rerank_window_size_bucket", "lexrerank_queue_depth",
                 "lexrerank_worker_model_info", "lexrerank_worker_task_duration_seconds_bucket",
                 "lexrerank_worker_batch_size_bucket", "lexrerank_worker_vector_cache_bytes",
                 "lexrerank_worker_vector_cache_hits_total", "lexrerank_reindex_progress_ratio"):
        assert name in exprs, name


def test_dashboard_structure_and_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))


def test_dashboard_provider_points_where_compose_mounts_the_dashboards() -> None:
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "lexrerank.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    compose_file = REPO / "deploy" / "compose" / "compose.yaml"
    if not compose_file.exists():
        pytest.skip("no compose file")
    volumes = yaml.safe_load(compose_file.read_text())["services"]["grafana"]["volumes"]
    assert any(v.endswith(f":{path}:ro") or v.endswith(f":{path}") for v in volumes), volumes


def test_alert_rules_structure() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    for name in ("LexrerankFallbackRateHigh", "LexrerankRerankP95High",
                 "LexrerankNoRerankWorker", "LexrerankRerankQueueBacklog",
                 "LexrerankReindexStuck"):
        assert name in alerts
    for rule in alerts.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_prometheus_configs_load_the_rules(config: Path) -> None:
    loaded = yaml.safe_load(config.read_text())
    for rule_file in loaded["rule_files"]:
        assert (config.parent / rule_file).is_file(), rule_file
    jobs = {job["job_name"] for job in loaded["scrape_configs"]}
    assert jobs


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed "
                                    "(deploy/local/install-system-packages.sh installs it)")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60,
                          cwd=PROMETHEUS)


@needs_promtool
def test_promtool_checks_rules_and_configs() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for config in CONFIGS:
        if "kubernetes_sd_configs" in config.read_text():
            continue  # Debian builds Prometheus without Kubernetes discovery
        proc = promtool("check", "config", "--syntax-only", str(config))
        assert proc.returncode == 0, f"{config.name}: {proc.stdout}{proc.stderr}"


@needs_promtool
def test_promtool_rule_unit_tests() -> None:
    tests = sorted((PROMETHEUS / "tests").glob("*.yml"))
    assert tests
    proc = promtool("test", "rules", *map(str, tests))
    assert proc.returncode == 0, proc.stdout + proc.stderr
