"""The example files that are not run here (collector, compose, Grafana) are at least valid."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from otelcost.exporters import MetricsCostExporter
from otelcost.exporters.kafka import DEFAULT_OTLP_TOPIC
from otelcost.record import CostRecord

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VALID_KAFKA_ENCODINGS = {"otlp_json", "otlp_proto"}


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_collector_pipeline_is_otlp_batch_kafka_with_otlp_json() -> None:
    config = load_yaml(EXAMPLES / "collector" / "otel-collector.yaml")
    traces = config["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    assert "batch" in traces["processors"]
    assert traces["exporters"] == ["kafka"]
    kafka = config["exporters"]["kafka"]
    # The seed's `encoding: json` is not a kafka exporter encoding; neither spelling may use it.
    assert kafka["traces"]["encoding"] == "otlp_json"
    assert kafka.get("encoding", "otlp_json") in VALID_KAFKA_ENCODINGS
    _assert_components_defined(config)


# The kafka receiver's keys in the Collector-contrib source the example was checked against
# (receiver/kafkareceiver/config.go, pkg/kafka/configkafka/config.go; see docs/kafka.md).
RECEIVER_KEYS = {"brokers", "protocol_version", "client_id", "group_id", "initial_offset"}
RECEIVER_SIGNAL_KEYS = {"topics", "encoding", "exclude_topics"}
RECEIVER_TRACE_ENCODINGS = {"otlp_proto", "otlp_json", "jaeger_proto", "jaeger_json"}


def test_collector_reads_the_otlp_json_topic_the_exporter_writes() -> None:
    config = load_yaml(EXAMPLES / "collector" / "otelcost-otlp-receiver.yaml")
    kafka = config["receivers"]["kafka"]
    assert set(kafka) - {"traces"} <= RECEIVER_KEYS
    assert set(kafka["traces"]) <= RECEIVER_SIGNAL_KEYS
    assert kafka["traces"]["topics"] == [DEFAULT_OTLP_TOPIC]
    assert kafka["traces"]["encoding"] == "otlp_json"
    assert kafka["traces"]["encoding"] in RECEIVER_TRACE_ENCODINGS
    assert kafka["initial_offset"] in {"earliest", "latest"}
    # zstd (the exporter's default compression) needs protocol 2.1.0 or later.
    version = tuple(int(part) for part in kafka["protocol_version"].split("."))
    assert version >= (2, 1, 0)
    _assert_components_defined(config)


def _assert_components_defined(config: dict[str, Any]) -> None:
    for pipeline in config["service"]["pipelines"].values():
        for component in pipeline["receivers"] + pipeline["processors"] + pipeline["exporters"]:
            kind = "receivers" if component in pipeline["receivers"] else None
            kind = kind or ("processors" if component in pipeline["processors"] else "exporters")
            assert component in config[kind], f"{component} is used but not defined"


def test_docker_compose_has_kafka_redis_and_the_collector() -> None:
    compose = load_yaml(EXAMPLES / "docker-compose.yml")
    services = compose["services"]
    assert {"kafka", "redis", "otel-collector"} <= services.keys()
    mount = next(v for v in services["otel-collector"]["volumes"] if "otel-collector.yaml" in v)
    source = mount.split(":", 1)[0]
    assert (EXAMPLES / source).resolve() == (EXAMPLES / "collector" / "otel-collector.yaml")
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"


def emitted_metric_names() -> set[str]:
    """Prometheus names MetricsCostExporter produces through the Prometheus reader."""

    class Store:
        def services(self) -> list[str]:
            return ["svc"]

        def status(self, service: str) -> SimpleNamespace:
            budget = SimpleNamespace(period="24h", limit=1.0, spend=0.5, utilization=0.5)
            return SimpleNamespace(throttled=False, budgets=[budget])

    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    try:
        exporter = MetricsCostExporter(provider, budget_store=Store())
        common = {"trace_id": "1" * 32, "span_id": "1" * 16, "duration_ms": 1.0}
        exporter.export(
            [
                CostRecord(**common, service="svc", operation="GET /", cost_amount=1.0,
                           currency="USD", timestamp=1_764_236_400_123),
                CostRecord(**common, service="svc", operation="GET /", cost_amount=0.0,
                           currency="USD", timestamp=1_764_236_400_123, error="E: x"),
            ]
        )  # fmt: skip
        text = generate_latest(registry).decode()
    finally:
        provider.shutdown()
    return {line.split("{", 1)[0] for line in text.splitlines() if line and line[0] != "#"}


def test_grafana_dashboard_queries_only_metrics_the_exporter_emits() -> None:
    dashboard = json.loads((EXAMPLES / "grafana" / "otelcost-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    assert "cost rate per service" in titles
    assert "top operations" in titles
    assert "budget utilization" in titles

    emitted = emitted_metric_names()
    bare = {n for e in exprs for n in re.findall(r"\b(otelcost_[A-Za-z0-9_]+)", e)}
    # Regex selectors cover both the Python reader's names and the collector's `_ratio` ones.
    patterns = {p for e in exprs for p in re.findall(r'__name__=~"([^"]+)"', e)}
    names_in_patterns = {n for p in patterns for n in re.findall(r"otelcost_[A-Za-z0-9_]+", p)}
    assert bare - names_in_patterns <= emitted, bare - names_in_patterns - emitted
    for pattern in patterns:
        assert any(re.fullmatch(pattern, name) for name in emitted), pattern
    used = (bare - names_in_patterns) | {
        name for name in emitted for p in patterns if re.fullmatch(p, name)
    }
    assert {
        "otelcost_cost_USD_total",
        "otelcost_budget_utilization",
        "otelcost_spans_unpriced_total",
    } <= used
    assert any("100 *" in e and "otelcost_budget_utilization" in e for e in exprs)
