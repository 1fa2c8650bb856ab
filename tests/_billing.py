"""A small priced workload for the bill tests: real spans through CostSpanProcessor, their
records rolled up into PostgreSQL by the rollup store (as ``otelcost rollup`` writes them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, set_span_in_context

from otelcost import CostRecord, CostSpanProcessor
from otelcost.exporters import InMemoryCostExporter

DAY = 86_400_000
IN, OUT = "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"
SERVICES = ("checkout", "search", "llm")

TABLE: dict[str, Any] = {
    "version": "2026-05.1",
    "currency": "USD",
    "prices": {
        "checkout:*": {"per_ms": 1e-6, "per_request": 1e-4},
        "checkout:SELECT orders": {"per_request": 2e-5},
        "search:*": {"per_ms": 2e-6, "per_request": 5e-5},
        "llm:*": {"per_unit": {IN: 3e-6, OUT: 1.5e-5}},
        "*:*": {"per_ms": 1e-7},
    },
}


def workload(
    table: Mapping[str, Any],
    start_ms: int,
    days: int,
    *,
    per_day: int = 24,
    load: Mapping[str, float] | None = None,
    resources: Mapping[str, Mapping[str, str]] | None = None,
) -> list[CostRecord]:
    """``per_day`` requests per service and day from ``start_ms`` (whole milliseconds, so
    every cost is a whole number of nano-units), priced under ``table``; ``load`` scales a
    service's request durations and token counts; ``resources`` adds resource attributes."""
    load = load or {}
    costs = InMemoryCostExporter(max_records=None)
    processor = CostSpanProcessor(dict(table), [costs])
    tracers = {}
    for service in SERVICES:
        attributes = {"service.name": service, **(resources or {}).get(service, {})}
        provider = TracerProvider(resource=Resource.create(attributes), shutdown_on_exit=False)
        provider.add_span_processor(processor)
        tracers[service] = provider.get_tracer("bill-tests")
    ms = 1_000_000
    for day in range(days):
        for i in range(per_day):
            end = (start_ms + day * DAY + (i + 1) * (DAY // (per_day + 1))) * ms
            slow = load.get("checkout", 1.0)
            root = tracers["checkout"].start_span(
                "POST /orders", kind=SpanKind.SERVER, start_time=end - int((40 + i % 7) * slow) * ms
            )
            child = tracers["checkout"].start_span(
                "SELECT orders",
                context=set_span_in_context(root),
                kind=SpanKind.CLIENT,
                start_time=end - 20 * ms,
            )
            child.end(end_time=end - 10 * ms)
            root.end(end_time=end)
            slow = load.get("search", 1.0)
            span = tracers["search"].start_span(
                "GET /q", kind=SpanKind.SERVER, start_time=end - int((7 + i % 3) * slow) * ms
            )
            span.end(end_time=end)
            tokens = {IN: int((100 + i) * load.get("llm", 1.0)), OUT: 20}
            span = tracers["llm"].start_span("chat", attributes=tokens, start_time=end - 900 * ms)
            span.end(end_time=end)
    assert processor.force_flush(30_000)
    processor.shutdown()
    records = list(costs.records)
    assert records and all(r.error is None for r in records)
    return records


def daily_nanos(records: Sequence[CostRecord]) -> dict[str, dict[int, int]]:
    """Attributed nano-units per service and UTC day, summed from the records."""
    sums: dict[str, dict[int, int]] = {}
    for record in records:
        day = record.timestamp - record.timestamp % DAY
        days = sums.setdefault(record.service, {})
        days[day] = days.get(day, 0) + record.cost_nanos
    return sums
