"""ConsoleCostExporter: JSON lines that decode as v1 records, or compact human lines."""

from __future__ import annotations

import io

import pytest

from otelcost import CostRecord
from otelcost.exporters import ConsoleCostExporter, CostExportResult

PRICED = CostRecord(
    trace_id="0af7651916cd43dd8448eb211c80319c",
    span_id="b7ad6b7169203331",
    service="shop",
    operation="GET /users/*",
    cost_amount=1.23e-6,
    currency="USD",
    duration_ms=12.345,
    timestamp=1_764_236_400_123,
    region="us-east-1",
    pricing_version="v1",
)
UNPRICED = CostRecord(
    trace_id="0af7651916cd43dd8448eb211c80319c",
    span_id="b7ad6b7169203332",
    service="llm",
    operation="chat",
    cost_amount=0.0,
    currency="USD",
    duration_ms=3.0,
    timestamp=1_764_236_400_124,
    error="pricing_not_found: no price for llm chat",
)


def test_json_lines_decode_back_to_the_records() -> None:
    out = io.StringIO()
    exporter = ConsoleCostExporter(out)
    assert exporter.export([PRICED, UNPRICED]) is CostExportResult.SUCCESS
    lines = out.getvalue().splitlines()
    assert [CostRecord.from_json(line) for line in lines] == [PRICED, UNPRICED]
    assert exporter.stats() == {"written": 2, "failed": 0}


def test_human_lines_are_compact_and_name_the_error_reason() -> None:
    out = io.StringIO()
    ConsoleCostExporter(out, format="human").export([PRICED, UNPRICED])
    assert out.getvalue().splitlines() == [
        "2025-11-27T09:40:00.123Z shop GET /users/* 0.000001230 USD 12.35 ms",
        "2025-11-27T09:40:00.124Z llm chat ERROR pricing_not_found 3.00 ms",
    ]


def test_stdout_is_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleCostExporter().export([PRICED])
    assert CostRecord.from_json(capsys.readouterr().out) == PRICED


def test_a_closed_stream_fails_the_batch_without_raising() -> None:
    out = io.StringIO()
    out.close()
    exporter = ConsoleCostExporter(out)
    assert exporter.export([PRICED]) is CostExportResult.FAILURE
    assert exporter.stats() == {"written": 0, "failed": 1}


def test_after_shutdown_nothing_is_written() -> None:
    out = io.StringIO()
    exporter = ConsoleCostExporter(out)
    exporter.shutdown()
    assert exporter.export([PRICED]) is CostExportResult.FAILURE
    assert out.getvalue() == ""


def test_an_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="format"):
        ConsoleCostExporter(format="xml")  # type: ignore[arg-type]
