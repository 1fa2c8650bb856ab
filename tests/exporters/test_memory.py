"""InMemoryCostExporter: bounded records, exact totals, refusal after shutdown."""

from __future__ import annotations

import pytest

from otelcost import CostRecord
from otelcost.exporters import CostExportResult, InMemoryCostExporter
from otelcost.money import to_nanos


def record(n: int, *, service: str = "shop", amount: float = 1e-9, **extra: object) -> CostRecord:
    fields: dict[str, object] = {
        "trace_id": f"{n:032x}",
        "span_id": f"{n + 1:016x}",
        "service": service,
        "operation": "GET /users/*",
        "cost_amount": amount,
        "currency": "USD",
        "duration_ms": 1.0,
        "timestamp": 1_764_236_400_000 + n,
        **extra,
    }
    return CostRecord(**fields)  # type: ignore[arg-type]


def test_records_are_bounded_oldest_first_and_evictions_counted() -> None:
    exporter = InMemoryCostExporter(max_records=3)
    assert exporter.export([record(n) for n in range(5)]) is CostExportResult.SUCCESS
    assert [r.timestamp % 1000 for r in exporter.records] == [2, 3, 4]
    assert exporter.stats() == {"exported": 5, "evicted": 2, "refused": 0}


def test_totals_are_exact_and_never_evicted() -> None:
    exporter = InMemoryCostExporter(max_records=1)
    amounts = [0.1, 0.2, 0.3] * 1000
    exporter.export([record(n, amount=a) for n, a in enumerate(amounts)])
    exporter.export([record(0, service="llm", amount=0.0, error="pricing_stale: old")])
    exporter.export([record(1, service="llm", amount=2.5, aggregate=True, span_count=40)])
    totals = exporter.totals()
    shop = totals[("shop", "GET /users/*")]
    assert shop.spans == 3000 and shop.unpriced == 0
    assert shop.nanos == sum(to_nanos(a) for a in amounts) == 600_000_000_000
    assert shop.amount == 600.0
    llm = totals[("llm", "GET /users/*")]
    assert (llm.spans, llm.unpriced, llm.nanos) == (41, 1, 2_500_000_000)


def test_clear_forgets_records_and_totals_but_not_counters() -> None:
    exporter = InMemoryCostExporter()
    exporter.export([record(1)])
    exporter.clear()
    assert exporter.records == [] and exporter.totals() == {}
    assert exporter.stats()["exported"] == 1


def test_unbounded_when_asked() -> None:
    exporter = InMemoryCostExporter(max_records=None)
    exporter.export([record(n) for n in range(20_000)])
    assert len(exporter.records) == 20_000


def test_after_shutdown_exports_are_refused_and_counted() -> None:
    exporter = InMemoryCostExporter()
    exporter.shutdown()
    assert exporter.export([record(1), record(2)]) is CostExportResult.FAILURE
    assert exporter.records == []
    assert exporter.stats()["refused"] == 2


def test_a_negative_bound_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_records"):
        InMemoryCostExporter(max_records=-1)
