"""``otelcost report --dsn --reprice``: history priced by the real processor, rolled up into
the machine's PostgreSQL, then re-priced under other tables."""

from __future__ import annotations

import copy
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, set_span_in_context

from _billing import IN, OUT
from _billing import TABLE as BILL_TABLE
from _postgres import reset_rollup_schema, roll_up
from otelcost import CostRecord, CostSpanProcessor
from otelcost.cli import main
from otelcost.exporters import InMemoryCostExporter
from otelcost.pricing.table import format_instant

_MINUTE = 60_000
_NOW = int(time.time() * 1000)
_BASE = _NOW - _NOW % _MINUTE - 2 * 86_400_000  # two days ago, on a minute
_CHANGE = _BASE + 30 * _MINUTE  # where the dated table doubles search's price
# The bill tests' table without its catch-all ``*:*``.
TABLE: dict[str, Any] = {
    **BILL_TABLE,
    "version": "2026-11.1",
    "prices": {k: v for k, v in BILL_TABLE["prices"].items() if k != "*:*"},
}


def variant(version: str, key: str, price: Any) -> dict[str, Any]:
    """TABLE as ``version``, with ``price`` for ``key``."""
    table = copy.deepcopy(TABLE)
    table["version"] = version
    table["prices"][key] = price
    return table


def doubled_search() -> dict[str, Any]:
    return variant("2026-12.1", "search:*", {"per_ms": 4e-6, "per_request": 1e-4})


def priced_history() -> list[CostRecord]:
    """Spans of three services over an hour, priced by the real processor under TABLE.

    Durations are whole milliseconds, so every span's cost is a whole number of nano-units
    and sums of recorded costs compare exactly with re-priced ones.
    """
    costs = InMemoryCostExporter(max_records=None)
    processor = CostSpanProcessor(TABLE, [costs])
    providers = {}
    for service in ("checkout", "search", "llm"):
        providers[service] = TracerProvider(
            resource=Resource.create({"service.name": service}), shutdown_on_exit=False
        )
        providers[service].add_span_processor(processor)
    for minute in range(60):
        end = (_BASE + minute * _MINUTE + 30_000) * 1_000_000
        checkout = providers["checkout"].get_tracer("t")
        root = checkout.start_span(
            "POST /orders", kind=SpanKind.SERVER, start_time=end - (40 + minute) * 1_000_000
        )
        child = checkout.start_span(
            "SELECT orders",
            context=set_span_in_context(root),
            kind=SpanKind.CLIENT,
            start_time=end - 20_000_000,
        )
        child.end(end_time=end - 10_000_000)
        root.end(end_time=end)
        search = providers["search"].get_tracer("t")
        span = search.start_span("GET /q", kind=SpanKind.SERVER, start_time=end - 7_000_000)
        span.end(end_time=end)
        llm = providers["llm"].get_tracer("t")
        attributes = {IN: 100 + minute, OUT: 20}
        span = llm.start_span("chat", attributes=attributes, start_time=end - 900_000_000)
        span.end(end_time=end)
    assert processor.force_flush(30_000)
    processor.shutdown()
    records = list(costs.records)
    assert {r.service for r in records} == {"checkout", "search", "llm"}
    assert all(r.error is None for r in records)
    return records


@pytest.fixture
def history(postgres_dsn: str) -> tuple[str, list[CostRecord]]:
    reset_rollup_schema(postgres_dsn)
    records = priced_history()
    roll_up(postgres_dsn, records)
    return postgres_dsn, records


def write_table(tmp_path: Path, table: dict[str, Any]) -> str:
    path = tmp_path / f"{table['version']}.json"
    path.write_text(json.dumps(table))
    return str(path)


def recorded(records: list[CostRecord], **where: Any) -> int:
    return sum(r.cost_nanos for r in records if all(getattr(r, k) == v for k, v in where.items()))


def reprice_text(capsys: pytest.CaptureFixture[str], dsn: str, table: str, *extra: str) -> str:
    """``otelcost report --since 30d --reprice TABLE``: it exits 0; what it printed."""
    assert main(["report", "--dsn", dsn, "--since", "30d", "--reprice", table, *extra]) == 0
    return capsys.readouterr().out


def reprice(
    capsys: pytest.CaptureFixture[str], dsn: str, table: str, *extra: str
) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(reprice_text(capsys, dsn, table, "--json", *extra))
    return doc


def test_the_same_table_reprices_every_row_to_the_recorded_cost(
    history: tuple[str, list[CostRecord]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, records = history
    doc = reprice(capsys, dsn, write_table(tmp_path, TABLE))
    assert doc["version"] == "2026-11.1" and doc["currency"] == "USD"
    by_service = {row["service"]: row for row in doc["rows"]}
    assert set(by_service) == {"checkout", "search", "llm"}
    for service, row in by_service.items():
        assert row["recorded_nanos"] == recorded(records, service=service) > 0
        assert row["repriced_nanos"] == row["recorded_nanos"]
        assert row["difference_nanos"] == 0
        assert row["spans"] == sum(r.span_count for r in records if r.service == service)
    assert doc["total"]["recorded_nanos"] == sum(r.cost_nanos for r in records)
    assert doc["total"]["difference_nanos"] == 0


def test_doubling_one_price_differs_by_exactly_what_that_price_covered(
    history: tuple[str, list[CostRecord]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, records = history
    search = recorded(records, service="search")
    doc = reprice(capsys, dsn, write_table(tmp_path, doubled_search()))
    differences = {row["service"]: row["difference_nanos"] for row in doc["rows"]}
    assert differences == {"checkout": 0, "search": search, "llm": 0}
    assert doc["total"]["difference_nanos"] == search
    assert doc["total"]["repriced_nanos"] == sum(r.cost_nanos for r in records) + search
    # By operation: the same, for the one operation that price covers.
    doc = reprice(capsys, dsn, write_table(tmp_path, doubled_search()), "--by", "operation")
    by_operation = {(r["service"], r["operation"]): r for r in doc["rows"]}
    assert by_operation["search", "GET /q"]["difference_nanos"] == search
    assert sum(r["difference_nanos"] for r in doc["rows"]) == search
    # --limit keeps the most expensive rows; the total is still of every row.
    limited = reprice(capsys, dsn, write_table(tmp_path, doubled_search()), "--limit", "1")
    assert len(limited["rows"]) == 1 and limited["total"] == doc["total"]
    operations: dict[tuple[str, str], int] = defaultdict(int)
    for r in records:
        operations[r.service, r.operation] += r.cost_nanos
    assert {k: r["recorded_nanos"] for k, r in by_operation.items()} == dict(operations)


def test_a_dated_price_reprices_only_the_minutes_from_its_start(
    history: tuple[str, list[CostRecord]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, records = history
    table = variant(
        "dated",
        "search:*",
        [
            TABLE["prices"]["search:*"],
            {"from": format_instant(_CHANGE), **doubled_search()["prices"]["search:*"]},
        ],
    )
    after = sum(r.cost_nanos for r in records if r.service == "search" and r.timestamp >= _CHANGE)
    assert 0 < after < recorded(records, service="search")
    doc = reprice(capsys, dsn, write_table(tmp_path, table))
    assert doc["dated"] is True
    assert doc["total"]["difference_nanos"] == after


def test_text_report_with_totals_and_notes(
    history: tuple[str, list[CostRecord]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, records = history
    table = doubled_search()
    del table["prices"]["llm:*"]  # llm's spans get no price under this table
    path = write_table(tmp_path, table)
    out = reprice_text(capsys, dsn, path)
    assert "cost re-priced under 2026-12.1 since " in out
    lines = [line for line in out.splitlines() if line.strip(" │┃").startswith("total")]
    assert len(lines) == 1
    llm_spans = sum(1 for r in records if r.service == "llm")
    assert f"{llm_spans} entry spans have no price in the table: re-priced at 0" in out
    assert "dated prices" not in out


def test_rows_rolled_up_before_inputs_were_kept_are_left_out_and_counted(
    postgres_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reset_rollup_schema(postgres_dsn)
    with psycopg.connect(postgres_dsn) as conn:  # a row as migration 3 leaves an older one
        conn.execute(
            "INSERT INTO otelcost.cost_minute (bucket, service, operation, currency, "
            "cost_nanos, spans, records, unpriced_spans, duration_ms) VALUES "
            "(to_timestamp(%s / 1000.0), 'search', 'GET /q', 'USD', 7000, 7, 7, 0, 70.0)",
            (_BASE,),
        )
    doc = reprice(capsys, postgres_dsn, write_table(tmp_path, TABLE))
    ((row,),) = [doc["rows"]]
    assert (row["recorded_nanos"], row["repriced_nanos"], row["spans"]) == (0, 0, 0)
    assert (row["skipped_spans"], row["skipped_nanos"]) == (7, 7000)
    out = reprice_text(capsys, postgres_dsn, write_table(tmp_path, TABLE))
    assert "7 spans (recorded 7e-06 USD) left out: rolled up before" in out


def test_keys_priced_per_call_are_left_out_and_named(
    history: tuple[str, list[CostRecord]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, records = history
    tiered_input = {"rate": 3e-6, "tiers": [{"above": 200_000, "rate": 6e-6}]}
    llm = TABLE["prices"]["llm:*"]
    table = variant("tiered", "llm:*", {**llm, "per_unit": {**llm["per_unit"], IN: tiered_input}})
    doc = reprice(capsys, dsn, write_table(tmp_path, table))
    assert doc["per_call_keys"] == ["llm:*"]
    llm = next(row for row in doc["rows"] if row["service"] == "llm")
    assert (llm["recorded_nanos"], llm["repriced_nanos"], llm["spans"]) == (0, 0, 0)
    assert (llm["skipped_spans"], llm["skipped_nanos"]) == (60, recorded(records, service="llm"))
    assert doc["total"]["difference_nanos"] == 0


def test_an_empty_range_says_so(
    postgres_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reset_rollup_schema(postgres_dsn)
    out = reprice_text(capsys, postgres_dsn, write_table(tmp_path, TABLE))
    assert out == "no cost history in USD in the last 30d\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--by", "day"], "--reprice works --by service or operation"),
        (["--since", "1y"], "--since expects"),
    ],
)
def test_reprice_option_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = write_table(tmp_path, TABLE)
    assert main(["report", "--dsn", "x", "--reprice", table, *argv]) == 2
    assert message in capsys.readouterr().err


def test_an_invalid_table_is_refused_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"currency": "usd", "prices": {"*:*": null}}')
    assert main(["report", "--dsn", "x", "--reprice", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("otelcost report: --reprice: ") and "ISO 4217" in err
    assert main(["report", "--reprice", str(bad)]) == 2
    assert "need --dsn" in capsys.readouterr().err
