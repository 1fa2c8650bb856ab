"""Deploy and environment dimensions: records carry the service version and deployment
environment of the span's resource; rollups are keyed by them; ``report --by version``
shows cost per request per deploy and flags a version that made requests more expensive."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from _billing import DAY, TABLE, workload
from _postgres import reset_rollup_schema, roll_up
from otelcost import CostRecord, CostSpanProcessor, InvalidRecordError
from otelcost.cli import main
from otelcost.exporters import InMemoryCostExporter
from otelcost.rollup import read_versions

_NOW = int(time.time() * 1000)
_START = _NOW - _NOW % DAY - 3 * DAY  # three UTC days ago


def _record(**kw: Any) -> CostRecord:
    fields: dict[str, Any] = {
        "trace_id": "1" * 32, "span_id": "2" * 16, "service": "svc", "operation": "op",
        "cost_amount": 0.5, "currency": "USD", "duration_ms": 1.0, "timestamp": _NOW,
    }  # fmt: skip
    fields.update(kw)
    return CostRecord(**fields)


def test_records_carry_the_deploy_and_read_without_it() -> None:
    plain = _record()
    assert "service_version" not in plain.to_dict() and "environment" not in plain.to_dict()
    assert CostRecord.from_json(plain.to_json()) == plain  # absent: None
    deployed = _record(service_version="9d59409", environment="prod")
    doc = json.loads(deployed.to_json())
    assert (doc["service_version"], doc["environment"]) == ("9d59409", "prod")
    assert CostRecord.from_json(deployed.to_json()) == deployed
    for field in ("service_version", "environment"):
        with pytest.raises(InvalidRecordError, match=field):
            CostRecord.from_dict({**doc, field: 7})


@pytest.mark.parametrize(
    ("resource", "deploy"),
    [
        ({"service.version": "1.4.2", "deployment.environment.name": "prod"}, ("1.4.2", "prod")),
        ({"vcs.ref.head.revision": "9d59409", "deployment.environment": "staging"},
         ("9d59409", "staging")),
        ({"vcs.repository.ref.revision": "abc123"}, ("abc123", None)),
        ({"service.version": "2.0", "vcs.ref.head.revision": "9d59409"}, ("2.0", None)),
        ({}, (None, None)),
    ],
)  # fmt: skip
def test_the_coster_reads_the_deploy_from_the_resource(
    resource: dict[str, str], deploy: tuple[str | None, str | None]
) -> None:
    costs = InMemoryCostExporter()
    processor = CostSpanProcessor({"*:*": {"per_ms": 1e-6}}, [costs])
    provider = TracerProvider(
        resource=Resource.create({"service.name": "svc", **resource}), shutdown_on_exit=False
    )
    provider.add_span_processor(processor)
    provider.get_tracer("t").start_span("GET /x", kind=SpanKind.SERVER).end()
    assert processor.force_flush(10_000)
    processor.shutdown()
    [record] = costs.records
    assert (record.service_version, record.environment) == deploy


@pytest.fixture(scope="module")
def deploys(postgres_dsn: str) -> str:
    """Day 1 runs v1 of every service; day 2 runs v2, whose checkout requests take twice as
    long (one operation's duration doubled), in prod."""
    reset_rollup_schema(postgres_dsn)
    offset = 0
    for day, version, load in ((0, "v1", {}), (1, "v2", {"checkout": 2.0})):
        deploy = {"service.version": version, "deployment.environment.name": "prod"}
        records = workload(
            TABLE, _START + day * DAY, 1, per_day=12, load=load,
            resources=dict.fromkeys(("checkout", "search", "llm"), deploy),
        )  # fmt: skip
        roll_up(postgres_dsn, records, first_offset=offset)
        offset += len(records)
    return postgres_dsn


def test_a_deploy_that_doubles_an_operation_shows_in_report_by_version(
    deploys: str, capsys: pytest.CaptureFixture[str]
) -> None:
    history = read_versions(deploys, since_ms=_START)
    rows = {(r.service, r.version): r for r in history.rows}
    assert set(rows) == {(s, v) for s in ("checkout", "search", "llm") for v in ("v1", "v2")}
    v1, v2 = rows["checkout", "v1"], rows["checkout", "v2"]
    assert (v1.requests, v2.requests) == (12, 12)  # entry spans, not the nested SELECTs
    assert v2.previous == "v1" and v2.flagged
    assert v2.change is not None and v2.change > 0.2
    assert list(history.flagged) == [v2]  # search and llm did not move
    assert rows["search", "v2"].change == 0.0

    assert main(["report", "--dsn", deploys, "--since", "7d", "--by", "version", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    flagged = [(r["service"], r["version"]) for r in doc["rows"] if r["flagged"]]
    assert flagged == [("checkout", "v2")]
    row = next(r for r in doc["rows"] if (r["service"], r["version"]) == ("checkout", "v2"))
    assert row["environment"] == "prod" and row["cost_per_request"] == pytest.approx(
        v2.cost_nanos / 12 / 1e9
    )
    assert main(["report", "--dsn", deploys, "--since", "7d", "--by", "version"]) == 0
    out = capsys.readouterr().out
    assert "MOVED" in out and "vs v1" in out and "1 version(s) moved more than 10%" in out
    # A threshold above the move: nothing flagged.
    assert (
        main(["report", "--dsn", deploys, "--by", "version", "--threshold", "0.9", "--json"]) == 0
    )
    assert not any(r["flagged"] for r in json.loads(capsys.readouterr().out)["rows"])
    assert main(["report", "--dsn", deploys, "--threshold", "0.9"]) == 2
    assert "--threshold works with --by version" in capsys.readouterr().err


@pytest.mark.slow
def test_the_deploy_survives_the_kafka_stream_into_the_rollups(
    kafka_broker: Any, kafka_topic: str, postgres_dsn: str
) -> None:
    """Schema 2 through a real broker and ``otelcost rollup``: the version and environment
    of each record reach the rollup rows, and report --by version sees the move."""
    from _kafka import consumer_config
    from otelcost.exporters import KafkaCostExporter
    from otelcost.rollup import Rollup

    reset_rollup_schema(postgres_dsn)
    records = []
    for day, version, load in ((0, "v1", {}), (1, "v2", {"checkout": 2.0})):
        deploy = {"service.version": version, "deployment.environment.name": "prod"}
        records += workload(
            TABLE, _START + day * DAY, 1, per_day=12, load=load,
            resources=dict.fromkeys(("checkout", "search", "llm"), deploy),
        )  # fmt: skip
    exporter = KafkaCostExporter(kafka_broker.bootstrap, kafka_topic, schema=2)
    try:
        exporter.export(records)
        assert exporter.force_flush(30_000)
    finally:
        exporter.shutdown()
    fast = {k: v for k, v in consumer_config("", "").items() if k.endswith(".ms")}
    rollup = Rollup(
        kafka_broker.bootstrap, postgres_dsn, topic=kafka_topic, group="deploys", kafka_config=fast
    )
    assert rollup.run(idle_timeout=5)
    assert rollup.stats()["written"] == len(records)
    history = read_versions(postgres_dsn, since_ms=_START)
    assert [(r.service, r.version, r.environment) for r in history.flagged] == [
        ("checkout", "v2", "prod")
    ]
