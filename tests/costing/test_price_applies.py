"""What a price applies to (docs/pricing.md): entry spans, nested spans, usage; on both paths.

Spans come from a real TracerProvider with real parent/child relations; the sums that
sum-only exporters receive are compared with the spans' own ``cost.amount`` to the nano.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from _costing_support import HAS_ENDING_HOOK, PATHS
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from otelcost import CostRecord, CostSpanProcessor
from otelcost.costing.coster import MAX_ERROR_CHARS
from otelcost.exporters import CostExportResult, InMemoryCostExporter
from otelcost.exporters.base import CostSumExporter, CostSums
from otelcost.money import to_nanos

MS = 1_000_000  # ns
PER_MS, PER_REQUEST = 1e-6, 1e-5  # 1,000 and 10,000 nano-units: exact sums
PRICES: dict[str, Any] = {
    "version": "applies-1",
    "currency": "USD",
    "prices": {
        "svc:*": {"per_ms": PER_MS, "per_request": PER_REQUEST},
        "svc:POST /charges": {"per_request": 2e-3},
        "llm:*": {"per_ms": PER_MS, "per_unit": {"gen_ai.usage.input_tokens": 3e-6}},
        "shop:GET /known": {"per_request": 1e-4},
    },
}


class Sums(CostSumExporter):
    """Keeps every batch's sums; fails the test if records are ever built for it."""

    def __init__(self) -> None:
        self.batches: list[CostSums] = []

    def export_sums(self, sums: CostSums) -> CostExportResult:
        self.batches.append(sums)
        return CostExportResult.SUCCESS

    def export(self, records: Sequence[CostRecord]) -> CostExportResult:
        raise AssertionError("a sum exporter got per-span records")

    def nanos(self) -> int:
        return sum(total.nanos for sums in self.batches for total in sums.costs.values())

    def spans(self) -> int:
        return sum(total.spans for sums in self.batches for total in sums.costs.values())

    def unpriced(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for sums in self.batches:
            for key, count in sums.unpriced.items():
                out[key] = out.get(key, 0) + count
        return out


class Setup:
    def __init__(self, path: str, *, records: bool = True) -> None:
        self.sums = Sums()
        self.records = InMemoryCostExporter(max_records=None)
        self.exported = InMemorySpanExporter()
        exporters: list[Any] = [self.sums] + ([self.records] if records else [])
        self.processor = CostSpanProcessor(
            PRICES,
            exporters,
            pricing_path=path,  # type: ignore[arg-type]
            span_processors=[] if path == "ending_hook" else [SimpleSpanProcessor(self.exported)],
        )
        self.providers: list[TracerProvider] = []

    def tracer(self, service: str) -> trace.Tracer:
        provider = TracerProvider(
            resource=Resource.create({"service.name": service}), shutdown_on_exit=False
        )
        provider.add_span_processor(self.processor)
        if self.processor.pricing_path == "ending_hook":
            # The user's own processor, on the provider as usual: it gets priced spans.
            provider.add_span_processor(SimpleSpanProcessor(self.exported))
        self.providers.append(provider)
        return provider.get_tracer("tests")

    def spans(self) -> list[ReadableSpan]:
        assert self.processor.force_flush(10_000)
        return list(self.exported.get_finished_spans())


@pytest.fixture(params=PATHS)
def setup(request: pytest.FixtureRequest) -> Iterator[Setup]:
    made = Setup(request.param)
    yield made
    made.processor.shutdown()


def request_with_nested_calls(tracer: trace.Tracer, t0: int, entry_ms: int) -> None:
    """A server span with Redis, database, client and internal spans inside it."""
    server = tracer.start_span(
        "GET /orders/{id}",
        kind=SpanKind.SERVER,
        attributes={"http.request.method": "GET", "http.route": "/orders/{id}"},
        start_time=t0,
    )
    ctx = trace.set_span_in_context(server)
    for i, (name, kind, attrs) in enumerate(
        [
            ("GET", SpanKind.CLIENT, {"db.system": "redis", "db.operation": "GET"}),
            ("SELECT orders", SpanKind.CLIENT, {"db.system": "postgresql"}),
            ("GET", SpanKind.CLIENT, {"http.request.method": "GET", "url.full": "http://x/y"}),
            ("render", SpanKind.INTERNAL, {}),
        ]
    ):
        child = tracer.start_span(
            name, context=ctx, kind=kind, attributes=attrs, start_time=t0 + (i + 1) * MS
        )
        child.end(end_time=t0 + (i + 2) * MS)
    server.end(end_time=t0 + entry_ms * MS)


T0 = 1_764_236_400_000_000_000


def test_wall_time_and_per_request_are_charged_once_per_entry_span(setup: Setup) -> None:
    tracer = setup.tracer("svc")
    entry_ms = [17, 40, 9, 123, 6]
    for n, ms in enumerate(entry_ms):
        request_with_nested_calls(tracer, T0 + n * 10**9, ms)
    spans = setup.spans()
    assert len(spans) == 5 * 5  # every span reaches the user's exporter exactly once
    assert len({s.context.span_id for s in spans}) == 25
    entry = [s for s in spans if s.kind is SpanKind.SERVER]
    nested = [s for s in spans if s.kind is not SpanKind.SERVER]
    # per_ms applies to the entry spans' milliseconds only, per_request once per entry span.
    per_ms_nanos = to_nanos(PER_MS) * sum(entry_ms)
    per_request_nanos = to_nanos(PER_REQUEST) * len(entry_ms)
    amounts = [to_nanos(s.attributes["cost.amount"]) for s in entry]
    assert sum(amounts) == per_ms_nanos + per_request_nanos
    for span in nested:
        attributes = span.attributes or {}
        assert "cost.amount" not in attributes and "cost.error" not in attributes
        assert attributes["cost.source"] == "otelcost"
    # The sums, the records and the spans agree to the nano-unit.
    assert setup.sums.nanos() == sum(amounts) == sum(r.cost_nanos for r in setup.records.records)
    assert setup.sums.spans() == len(entry_ms)
    stats = setup.processor.stats()
    assert stats["spans_priced"] == 5 and stats["spans_not_billable"] == 20
    assert stats["spans_unpriced"] == 0 and stats["unpriced"] == {}
    by_entry = {r.entry for r in setup.records.records if r.cost_nanos == 0}
    assert by_entry == {False}  # nested records carry entry=false for re-pricing


def test_a_key_that_names_a_nested_span_charges_its_full_price(setup: Setup) -> None:
    tracer = setup.tracer("svc")
    with tracer.start_as_current_span("POST /pay", kind=SpanKind.SERVER) as server:
        server.set_attribute("http.request.method", "POST")
        server.set_attribute("http.route", "/pay")
        with tracer.start_as_current_span("POST /charges", kind=SpanKind.CLIENT):
            pass
    by_name = {s.name: dict(s.attributes or {}) for s in setup.spans()}
    nested = by_name["POST /charges"]
    assert nested["cost.amount"] == 2e-3
    assert nested["cost.price_key"] == "svc:POST /charges"
    assert nested["cost.operation"] == "POST /charges"
    assert by_name["POST /pay"]["cost.price_key"] == "svc:*"


def test_usage_is_charged_where_it_is_however_deep(setup: Setup) -> None:
    tracer = setup.tracer("llm")
    with (
        tracer.start_as_current_span("POST /ask", kind=SpanKind.SERVER),
        tracer.start_as_current_span("chat", kind=SpanKind.INTERNAL),
        tracer.start_as_current_span(
            "chat gpt-x",
            kind=SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 1000},
        ),
    ):
        pass
    by_name = {s.name: dict(s.attributes or {}) for s in setup.spans()}
    # The nested GenAI span pays its usage only (its wall time is inside the entry's).
    assert by_name["chat gpt-x"]["cost.amount"] == 1000 * 3e-6
    assert "cost.amount" not in by_name["chat"] and "cost.error" not in by_name["chat"]
    assert by_name["POST /ask"]["cost.amount"] > 0


def test_not_found_is_for_entry_and_usage_spans_only(setup: Setup) -> None:
    tracer = setup.tracer("shop")
    with tracer.start_as_current_span("GET /unknown", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT):  # untargeted: silent
            pass
        with tracer.start_as_current_span(
            "chat", attributes={"gen_ai.usage.input_tokens": 5}
        ):  # usage but no price: that is an error
            pass
    by_name = {s.name: dict(s.attributes or {}) for s in setup.spans()}
    assert by_name["GET /unknown"]["cost.error"] == "pricing_not_found: shop:GET /unknown"
    assert by_name["chat"]["cost.error"].startswith("pricing_not_found: ")
    assert "cost.error" not in by_name["GET"] and "cost.amount" not in by_name["GET"]
    stats = setup.processor.stats()
    assert stats["unpriced"] == {"pricing_not_found": 2}
    assert stats["spans_not_billable"] == 1
    assert setup.sums.unpriced() == {("shop", "pricing_not_found"): 2}


def test_a_span_with_a_remote_parent_is_an_entry_span(setup: Setup) -> None:
    tracer = setup.tracer("svc")
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    ctx = trace.set_span_in_context(NonRecordingSpan(remote))
    span = tracer.start_span("job", context=ctx, kind=SpanKind.INTERNAL, start_time=T0)
    span.end(end_time=T0 + 3 * MS)
    (exported,) = setup.spans()
    assert to_nanos(exported.attributes["cost.amount"]) == 3 * 1_000 + 10_000
    (record,) = setup.records.records
    assert record.entry is True


def test_errors_are_short_and_name_the_key(setup: Setup) -> None:
    tracer = setup.tracer("shop")
    tracer.start_span("GET /" + "x" * 500, kind=SpanKind.SERVER).end()
    (span,) = setup.spans()
    error = (span.attributes or {})["cost.error"]
    assert len(error) <= MAX_ERROR_CHARS
    assert error.startswith("pricing_not_found: shop:GET /xxx")


def test_sum_exporters_alone_never_cause_records() -> None:
    setup = Setup(PATHS[0], records=False)
    try:
        tracer = setup.tracer("svc")
        for n in range(50):
            request_with_nested_calls(tracer, T0 + n * 10**9, 10)
        spans = setup.spans()
        total = sum(to_nanos(s.attributes.get("cost.amount", 0.0)) for s in spans)
        assert setup.sums.nanos() == total == 50 * (10 * 1_000 + 10_000)
    finally:
        setup.processor.shutdown()


@pytest.mark.skipif(not HAS_ENDING_HOOK, reason="this SDK has no ending hook")
def test_in_place_spans_are_priced_without_a_copy() -> None:
    setup = Setup("ending_hook")
    try:
        tracer = setup.tracer("svc")
        request_with_nested_calls(tracer, T0, 20)
        spans = setup.spans()
        assert len(spans) == 5
        stats = setup.processor.stats()
        assert stats["pricing_path"] == "ending_hook"
        assert stats["spans_forwarded"] == 0  # no enriched copies were made
        assert stats["spans_seen"] == 5
    finally:
        setup.processor.shutdown()


def test_a_star_key_naming_a_nested_span_prices_it_before_the_services_bare_star() -> None:
    # "*:redis GET" names every Redis GET; the service's bare "svc:*" only charges entry
    # spans. A nested Redis GET in svc is priced by the key that names it, a root one (a
    # job with no parent: an entry span) by the service's own key, as the match order says.
    prices = {
        "currency": "USD",
        "prices": {**PRICES["prices"], "*:redis GET": {"per_request": 3e-6}},
    }
    records = InMemoryCostExporter(max_records=None)
    processor = CostSpanProcessor(prices, [records])
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests")
    request_with_nested_calls(tracer, T0, 10)
    root = tracer.start_span(
        "GET",
        kind=SpanKind.CLIENT,
        attributes={"db.system": "redis", "db.operation": "GET"},
        start_time=T0,
    )
    root.end(end_time=T0 + 2 * MS)
    assert processor.force_flush(10_000)
    by_kind = {(r.operation, r.entry): r for r in records.records}
    nested_redis = by_kind["redis GET", False]
    assert nested_redis.cost_nanos == to_nanos(3e-6)
    root_redis = by_kind["redis GET", True]
    assert root_redis.cost_nanos == to_nanos(PER_REQUEST) + 2 * to_nanos(PER_MS)
    assert {r.operation for r in records.records if not r.entry and r.cost_nanos} == {"redis GET"}
    processor.shutdown()


def test_the_nested_match_falls_back_to_the_bare_star_when_no_key_names_it() -> None:
    from otelcost.pricing import PricingTable

    table = PricingTable.parse(
        {"prices": {"svc:*": {"per_ms": 1e-6}, "*:redis *": {"per_request": 1e-6}, "*:*": None}}
    )
    assert table.match("svc", "redis GET").key == "svc:*"  # type: ignore[union-attr]
    assert table.match("svc", "redis GET", nested=True).key == "*:redis *"  # type: ignore[union-attr]
    assert table.match("svc", "render", nested=True).key == "svc:*"  # type: ignore[union-attr]
    assert table.match("other", "redis GET", nested=True).key == "*:redis *"  # type: ignore[union-attr]
    assert table.match("other", "render", nested=True).key == "*:*"  # type: ignore[union-attr]
