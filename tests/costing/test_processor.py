"""CostSpanProcessor with a real TracerProvider (and a real WSGI app where it matters)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from _costing_support import HAS_ENDING_HOOK, PATHS
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from _processes import in_forked_child
from _wsgi import App, Served
from otelcost import CostRecord, CostSpanProcessor, PricingCache
from otelcost.costing.processor import _empty
from otelcost.exporters import (
    CostExporter,
    CostExportResult,
    CostSumExporter,
    CostSums,
    InMemoryCostExporter,
)
from otelcost.money import to_nanos

VERSION = "2026-11-27.1"
PRICES: dict[str, Any] = {
    "version": VERSION,
    "currency": "USD",
    "region": "us-east-1",
    "prices": {
        "shop:GET /orders/{order_id}": {"per_ms": 2e-6, "per_request": 1e-6},
        "shop:GET /users/*": {"per_ms": 1e-6},
        "shop:GET /health": None,
        "shop:inventory.Stock/Reserve": {"per_request": 5e-6},
        "llm:*": {
            "per_unit": {"gen_ai.usage.input_tokens": 3e-6, "gen_ai.usage.output_tokens": 1.5e-5}
        },
        "batch:*": {"per_ms": 5e-7, "per_request": 1e-7},
        "fold:*": {"per_request": 1e-6},
    },
}
T0 = 1_764_236_400_123_456_789  # 2025-11-27T09:40:00.123456789Z in ns


class Harness:
    """One processor shared by a TracerProvider per service, with in-memory outputs."""

    def __init__(self, pricing: Any = None, **options: Any) -> None:
        self.costs = InMemoryCostExporter(max_records=None)
        self.spans = InMemorySpanExporter()
        options.setdefault("span_processors", [SimpleSpanProcessor(self.spans)])
        self.processor = CostSpanProcessor(
            PRICES if pricing is None else pricing, [self.costs], **options
        )
        self._providers: dict[str, TracerProvider] = {}

    def provider(self, service: str) -> TracerProvider:
        if service not in self._providers:
            provider = TracerProvider(
                resource=Resource.create({"service.name": service}), shutdown_on_exit=False
            )
            provider.add_span_processor(self.processor)
            self._providers[service] = provider
        return self._providers[service]

    def tracer(self, service: str) -> Tracer:
        return self.provider(service).get_tracer("tests")

    def flush(self) -> None:
        assert self.processor.force_flush(30_000)

    def records(self) -> dict[str, CostRecord]:
        return {r.span_id: r for r in self.costs.records}

    def exported(self) -> dict[str, ReadableSpan]:
        return {f"{s.context.span_id:016x}": s for s in self.spans.get_finished_spans()}

    def only(self) -> tuple[CostRecord, dict[str, Any]]:
        """The single record and the attributes of the single enriched span."""
        self.flush()
        (record,) = self.costs.records
        (span,) = self.spans.get_finished_spans()
        assert f"{span.context.span_id:016x}" == record.span_id
        return record, dict(span.attributes or {})


@pytest.fixture(params=PATHS)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    made = Harness(pricing_path=request.param)
    assert made.processor.stats()["pricing_path"] == request.param
    yield made
    made.processor.shutdown()


def end_span(
    tracer: Tracer,
    name: str,
    attributes: dict[str, Any] | None = None,
    *,
    duration_ns: int = 12_340_000,
    end_ns: int = T0,
) -> None:
    span = tracer.start_span(name, attributes=attributes, start_time=end_ns - duration_ns)
    span.end(end_time=end_ns)


def test_enriched_spans_carry_exactly_the_records_cost(harness: Harness) -> None:
    served = Served(App(), harness.provider("shop"))
    try:
        for path in ("/orders/42", "/users/123", "/health", "/orders/7?debug=1"):
            assert served.get(path) == 200
    finally:
        served.close()
    harness.flush()
    records, spans = harness.records(), harness.exported()
    assert len(records) == len(spans) == 4
    for span_id, span in spans.items():
        record, attributes = records[span_id], dict(span.attributes or {})
        assert attributes["cost.amount"] == record.cost_amount
        assert type(attributes["cost.amount"]) is float
        assert attributes["cost.currency"] == record.currency == "USD"
        assert attributes["cost.pricing_region"] == record.region == "us-east-1"
        assert attributes["cost.pricing_version"] == record.pricing_version == VERSION
        assert attributes["cost.duration_ms"] == record.duration_ms
        assert attributes["cost.source"] == "otelcost"
        assert "cost.error" not in attributes
        assert record.error is None
        assert span.end_time is not None and span.start_time is not None
        assert record.duration_ms == (span.end_time - span.start_time) / 1e6
    operations = sorted(r.operation for r in records.values())
    assert operations == [
        "GET /health",
        "GET /orders/{order_id}",
        "GET /orders/{order_id}",
        "GET /users/*",
    ]
    health = next(r for r in records.values() if r.operation == "GET /health")
    assert health.cost_amount == 0.0 and health.error is None


def test_the_operation_comes_from_route_then_rpc_then_normalized_path(harness: Harness) -> None:
    tracer = harness.tracer("shop")
    end_span(
        tracer,
        "GET",
        {"http.request.method": "GET", "http.route": "/orders/{order_id}", "url.path": "/x/1"},
    )
    end_span(
        tracer,
        "inventory.Stock/Reserve",
        {"rpc.system": "grpc", "rpc.service": "inventory.Stock", "rpc.method": "Reserve"},
    )
    end_span(tracer, "GET", {"http.request.method": "GET", "url.path": "/users/123"})
    end_span(
        tracer,
        "GET",
        {"http.method": "GET", "http.target": "/users/550e8400-e29b-41d4-a716-446655440000?a=1"},
    )
    harness.flush()
    by_operation = {r.operation: r for r in harness.costs.records}
    assert set(by_operation) == {
        "GET /orders/{order_id}",
        "inventory.Stock/Reserve",
        "GET /users/*",
    }
    assert by_operation["inventory.Stock/Reserve"].cost_nanos == to_nanos(5e-6)
    assert by_operation["GET /orders/{order_id}"].cost_nanos == to_nanos(1e-6 + 2e-6 * 12.34)


def test_a_free_entry_costs_zero_and_is_not_an_error(harness: Harness) -> None:
    end_span(harness.tracer("shop"), "GET", {"http.request.method": "GET", "url.path": "/health"})
    record, attributes = harness.only()
    assert record.cost_amount == 0.0 and record.error is None
    assert attributes["cost.amount"] == 0.0
    assert "cost.error" not in attributes


def test_per_token_pricing(harness: Harness) -> None:
    usage = {"gen_ai.usage.input_tokens": 812, "gen_ai.usage.output_tokens": 95}
    end_span(harness.tracer("llm"), "chat gpt-x", {"gen_ai.operation.name": "chat", **usage})
    record, attributes = harness.only()
    assert record.cost_nanos == to_nanos(812 * 3e-6 + 95 * 1.5e-5)
    assert attributes["cost.amount"] == record.cost_amount
    assert dict(record.usage) == usage


def test_an_unknown_operation_gets_cost_error_and_no_amount(harness: Harness) -> None:
    end_span(harness.tracer("shop"), "DELETE", {"http.request.method": "DELETE", "url.path": "/a"})
    record, attributes = harness.only()
    assert record.error is not None and record.error.startswith("pricing_not_found: ")
    assert record.cost_amount == 0.0
    assert attributes["cost.error"] == record.error
    assert "cost.amount" not in attributes
    assert harness.processor.stats()["unpriced"] == {"pricing_not_found": 1}
    CostRecord.from_json(record.to_json())  # a valid v1 record


def test_a_stale_table_gets_cost_error_and_keeps_token_usage() -> None:
    now = [1_764_236_400.0]
    cache = PricingCache(PRICES, ttl=60, refresh_interval=30, clock=lambda: now[0])
    cache.refresh()
    harness = Harness(cache)
    try:
        usage = {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2}
        end_span(harness.tracer("llm"), "chat", usage)
        harness.flush()
        now[0] += 61
        end_span(harness.tracer("llm"), "chat", usage)
        harness.flush()
        fresh, stale = harness.costs.records
        assert fresh.error is None and fresh.cost_amount > 0
        assert stale.error is not None and stale.error.startswith("pricing_stale: ")
        assert stale.cost_amount == 0.0
        assert dict(stale.usage) == usage  # can be re-priced later
        stale_span = harness.exported()[stale.span_id]
        assert stale_span.attributes is not None
        assert stale_span.attributes["cost.error"] == stale.error
        assert "cost.amount" not in stale_span.attributes
        assert harness.processor.stats()["unpriced"] == {"pricing_stale": 1}
    finally:
        harness.processor.shutdown()


def test_pricing_that_never_loaded_fails_open(tmp_path: Any, caplog: Any) -> None:
    caplog.set_level(logging.ERROR, logger="otelcost.costing.processor")
    harness = Harness(str(tmp_path / "missing.json"))
    try:
        assert "could not load pricing" in caplog.text
        end_span(harness.tracer("shop"), "GET", {"http.request.method": "GET", "url.path": "/u"})
        record, attributes = harness.only()
        assert record.error is not None and record.error.startswith("pricing_stale: ")
        assert "cost.amount" not in attributes
        assert harness.processor.pricing.running  # it keeps retrying in the background
    finally:
        harness.processor.shutdown()
    assert not harness.processor.pricing.running  # the processor built it, so it stops it


def test_a_table_in_another_currency_is_surfaced_not_mixed(caplog: Any) -> None:
    harness = Harness({**PRICES, "currency": "EUR"}, currency="USD")
    try:
        end_span(harness.tracer("batch"), "job")
        record, attributes = harness.only()
        assert record.error is not None and record.error.startswith("currency_mismatch: ")
        assert record.currency == "USD" and attributes["cost.currency"] == "USD"
        assert "cost.amount" not in attributes
        assert "is in EUR but costs are accounted in USD" in caplog.text
    finally:
        harness.processor.shutdown()
    matching = Harness({**PRICES, "currency": "EUR"}, currency="EUR")
    try:
        end_span(matching.tracer("batch"), "job")
        record, attributes = matching.only()
        assert record.error is None and record.currency == "EUR"
        assert attributes["cost.currency"] == "EUR"
    finally:
        matching.processor.shutdown()


def test_a_table_that_declares_no_currency_is_usd_as_pricing_check_says(caplog: Any) -> None:
    flat = {"batch:*": {"per_request": 1e-6}}  # the flat form never declares a currency
    eur = Harness(flat, currency="EUR")
    try:
        end_span(eur.tracer("batch"), "job")
        record, attributes = eur.only()
        assert record.error == "currency_mismatch: table None is in USD, not EUR"
        assert "cost.amount" not in attributes
        assert "is in USD but costs are accounted in EUR" in caplog.text
    finally:
        eur.processor.shutdown()
    usd = Harness(flat, currency="USD")
    try:
        end_span(usd.tracer("batch"), "job")
        record, _ = usd.only()
        assert record.error is None and record.currency == "USD" and record.cost_nanos == 1000
    finally:
        usd.processor.shutdown()


@pytest.mark.parametrize(
    ("argument", "env", "expected"),
    [
        ("ap-south-1", "eu-west-3", "ap-south-1"),
        (None, "eu-west-3", "eu-west-3"),
        (None, None, "us-east-1"),
    ],
)
def test_region_is_the_argument_else_the_env_else_the_tables(
    monkeypatch: pytest.MonkeyPatch, argument: str | None, env: str | None, expected: str
) -> None:
    if env is None:
        monkeypatch.delenv("OTELCOST_REGION", raising=False)
    else:
        monkeypatch.setenv("OTELCOST_REGION", env)
    harness = Harness(region=argument)
    try:
        end_span(harness.tracer("batch"), "job")
        record, attributes = harness.only()
        assert record.region == attributes["cost.pricing_region"] == expected
    finally:
        harness.processor.shutdown()


def test_operations_beyond_the_limit_fold_into_other() -> None:
    harness = Harness(max_operations_per_service=3)
    try:
        tracer = harness.tracer("fold")
        for n in range(5):
            end_span(tracer, f"job-{chr(ord('a') + n)}")
        end_span(tracer, "job-a")
        harness.flush()
        operations = [r.operation for r in harness.costs.records]
        assert operations == ["job-a", "job-b", "job-c", "OTHER", "OTHER", "job-a"]
        assert all(r.error is None for r in harness.costs.records)  # fold:* prices OTHER too
        assert harness.processor.stats()["operations_folded"] == 2
    finally:
        harness.processor.shutdown()


def test_timestamps_are_utc_epoch_milliseconds_of_the_span_end(harness: Harness) -> None:
    end_span(harness.tracer("batch"), "job", duration_ns=2_500_000, end_ns=T0)
    record, attributes = harness.only()
    assert record.timestamp == T0 // 1_000_000 == 1_764_236_400_123
    assert type(record.timestamp) is int
    assert 10**12 < record.timestamp < 10**13
    assert record.duration_ms == attributes["cost.duration_ms"] == 2.5
    assert CostRecord.from_json(record.to_json()) == record


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_eight_threads_ending_100k_spans_total_exactly(path: str) -> None:
    per_thread, threads = 12_500, 8
    harness = Harness(
        max_span_queue_size=120_000,
        max_queue_size=120_000,
        span_processors=(),
        pricing_path=path,
    )
    try:
        tracer = harness.tracer("batch")
        durations = [
            (t * per_thread + i) % 997 * 1_000 + 1
            for t in range(threads)
            for i in range(per_thread)
        ]
        start = threading.Barrier(threads)

        def work(t: int) -> None:
            start.wait()
            for i in range(per_thread):
                end_span(tracer, "job", duration_ns=durations[t * per_thread + i])

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert harness.processor.force_flush(120_000)
        expected = sum(to_nanos(1e-7 + 5e-7 * (d / 1e6)) for d in durations)
        records = harness.costs.records
        assert len(records) == 100_000
        assert len({r.span_id for r in records}) == 100_000
        assert sum(r.cost_nanos for r in records) == expected
        assert harness.costs.totals()[("batch", "job")].nanos == expected
        stats = harness.processor.stats()
        assert stats["spans_seen"] == stats["spans_priced"] == stats["records_exported"] == 100_000
        assert stats["spans_dropped"] == stats["records_dropped"] == stats["errors"] == 0
    finally:
        harness.processor.shutdown()


class Gate:
    """A normalizer that blocks the pricing worker while closed (span names with a '/')."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()

    def __call__(self, path: str) -> str:
        self.entered.set()
        assert self.open.wait(30)
        return path


def test_a_full_span_queue_drops_counts_and_still_feeds_the_traces() -> None:
    gate = Gate()  # blocks the pricing worker: only the copy path has a span queue
    harness = Harness(max_span_queue_size=10, normalizer=gate, pricing_path="copy")
    try:
        tracer = harness.tracer("batch")
        end_span(tracer, "/first")
        harness.processor.force_flush(0)  # wake the worker: it blocks inside the normalizer
        assert gate.entered.wait(10)
        for _ in range(25):
            end_span(tracer, "/job")
        stats = harness.processor.stats()
        assert stats["spans_dropped"] == stats["dropped"]["queue_full"] == 15
        assert stats["spans_bypassed"] == 15
        assert stats["spans_seen"] == 26
        gate.open.set()
        harness.flush()
        stats = harness.processor.stats()
        assert stats["spans_priced"] == len(harness.costs.records) == 11
        spans = harness.spans.get_finished_spans()
        assert len(spans) == 26  # 11 enriched + 15 handed over unenriched
        assert sum("cost.source" in (s.attributes or {}) for s in spans) == 11
    finally:
        gate.open.set()
        harness.processor.shutdown()


class BlockingExporter(CostExporter):
    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.records: list[CostRecord] = []
        self.shut = False

    def export(self, records: Sequence[CostRecord]) -> CostExportResult:
        self.entered.set()
        self.release.wait(30)
        self.records.extend(records)
        return CostExportResult.SUCCESS

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        self.shut = True


def test_a_stuck_exporter_holds_records_not_spans_and_flush_keeps_its_deadline() -> None:
    exporter = BlockingExporter()
    spans = InMemorySpanExporter()
    processor = CostSpanProcessor(
        PRICES,
        [exporter],
        max_queue_size=20,
        max_export_batch_size=5,
        span_processors=[SimpleSpanProcessor(spans)],
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "batch"}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests")
    try:
        end_span(tracer, "job")
        started = time.monotonic()
        assert not processor.force_flush(300)
        assert time.monotonic() - started < 5
        assert exporter.entered.is_set()
        for _ in range(40):
            end_span(tracer, "job")
        assert not processor.force_flush(300)
        stats = processor.stats()
        assert stats["queue_size"] == 0  # every span was priced and forwarded
        assert len(spans.get_finished_spans()) == 41
        assert stats["records_dropped"] == 41 - 1 - 20
        exporter.release.set()
        assert processor.force_flush(30_000)
        assert len(exporter.records) == 21
    finally:
        exporter.release.set()
        processor.shutdown()


def test_shutdown_flushes_then_counts_late_spans_as_dropped(harness: Harness) -> None:
    tracer = harness.tracer("batch")
    for _ in range(30):
        end_span(tracer, "job")
    harness.processor.shutdown()
    assert len(harness.costs.records) == 30
    assert len(harness.spans.get_finished_spans()) == 30
    end_span(tracer, "job")
    stats = harness.processor.stats()
    assert stats["dropped"]["after_shutdown"] == 1
    assert stats["spans_seen"] == 31
    assert stats["spans_bypassed"] == 0
    assert harness.costs.stats()["refused"] == 0
    assert not harness.processor.force_flush(1_000)
    harness.processor.shutdown()  # idempotent


def test_shutdown_keeps_its_deadline_with_a_stuck_exporter() -> None:
    exporter = BlockingExporter()
    processor = CostSpanProcessor(PRICES, [exporter])
    provider = TracerProvider(resource=Resource.create({"service.name": "batch"}))
    provider.add_span_processor(processor)
    end_span(provider.get_tracer("tests"), "job")
    processor.force_flush(0)
    assert exporter.entered.wait(10)
    started = time.monotonic()
    processor.shutdown(timeout_millis=300)
    assert time.monotonic() - started < 5
    exporter.release.set()


class Broken(CostExporter):
    def export(self, records: Sequence[CostRecord]) -> CostExportResult:
        raise ConnectionError("exporter down")


class BrokenProcessor(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("on_start broken")

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("on_end broken")


class BrokenCache(PricingCache):
    def current(self) -> Any:
        raise RuntimeError("cache broken")


def test_failures_downstream_are_counted_and_never_reach_the_app(caplog: Any) -> None:
    caplog.set_level(logging.CRITICAL)
    good = InMemoryCostExporter()
    processor = CostSpanProcessor(
        BrokenCache(PRICES), [Broken(), good], span_processors=[BrokenProcessor()]
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "batch"}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests")
    try:
        for _ in range(3):
            with tracer.start_as_current_span("job"):
                pass
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["unpriced"] == {"pricing_error": 3}
        assert stats["export_failures"] == 1
        assert stats["exporters"]["Broken"] == {"exported": 0, "failed": 3}
        assert stats["exporters"]["InMemoryCostExporter"] == {"exported": 3, "failed": 0}
        assert stats["records_exported"] == 0  # not every exporter took them
        assert stats["errors"] == 3 + 3  # three on_start and three forwarded on_end failures
        assert all(r.error is not None for r in good.records)
    finally:
        processor.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_keeps_exporting_its_own_spans_only() -> None:
    gate = Gate()
    harness = Harness(normalizer=gate, span_processors=(), pricing_path="copy")
    try:
        tracer = harness.tracer("batch")
        for _ in range(5):
            end_span(tracer, "/parent")
        harness.processor.force_flush(0)
        assert gate.entered.wait(10)  # the parent's 5 spans are stuck in its worker

        def child() -> str:
            gate.open.set()
            for _ in range(7):
                end_span(tracer, "/child")
            flushed = harness.processor.force_flush(10_000)
            report = {
                "flushed": flushed,
                "operations": [r.operation for r in harness.costs.records],
                "stats": harness.processor.stats(),
            }
            return json.dumps(report)

        report = json.loads(in_forked_child(child))
        assert report["flushed"] is True
        assert report["operations"] == ["/child"] * 7
        assert report["stats"]["spans_seen"] == report["stats"]["spans_priced"] == 7
        gate.open.set()
        harness.flush()
        assert [r.operation for r in harness.costs.records] == ["/parent"] * 5
    finally:
        gate.open.set()
        harness.processor.shutdown()


class _Calls(SpanProcessor):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.calls.append(f"start {span.name}")

    def _on_ending(self, span: Any) -> None:
        self.calls.append(f"ending {span.name} priced={'cost.amount' in span.attributes}")

    def on_end(self, span: ReadableSpan) -> None:
        self.calls.append(f"end {span.name}")


class _Quiet(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        """Nothing at span start."""

    def _on_ending(self, span: Any) -> None:
        return None


@pytest.mark.parametrize("path", PATHS)
def test_span_processors_get_their_calls_and_empty_methods_are_skipped(path: str) -> None:
    calls, quiet, batch = _Calls(), _Quiet(), BatchSpanProcessor(InMemorySpanExporter())
    processor = CostSpanProcessor(
        PRICES, [], span_processors=[quiet, calls, batch], pricing_path=path
    )
    try:
        assert processor._starting == (calls,)
        assert processor._on_ending_hooks == (calls._on_ending,)
        provider = TracerProvider(
            resource=Resource.create({"service.name": "batch"}), shutdown_on_exit=False
        )
        provider.add_span_processor(processor)
        end_span(provider.get_tracer("tests"), "job")
        assert processor.force_flush(10_000)
        expected = ["start job", "end job"]
        if HAS_ENDING_HOOK:  # priced by then on the hook's path; the copy is priced later
            expected.insert(1, f"ending job priced={path == 'ending_hook'}")
        assert calls.calls == expected
    finally:
        processor.shutdown()


def test_empty_tells_a_body_that_does_nothing() -> None:
    class Methods:
        def passes(self) -> None:
            pass

        def documented(self) -> None:
            """Only a docstring."""

        def returns_none(self) -> None:
            return None

        def returns_a_value(self) -> int:
            return 5

        def calls(self) -> None:
            print(self)

        def generates(self) -> Iterator[None]:
            yield

    methods = Methods()
    empty = [name for name in dir(Methods) if not name.startswith("_")]
    assert [name for name in empty if _empty(getattr(methods, name))] == [
        "documented",
        "passes",
        "returns_none",
    ]
    assert _empty(lambda: None)
    assert not _empty(print)
    assert _empty(BatchSpanProcessor(InMemorySpanExporter()).on_start)


class _Sums(CostSumExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export_sums(self, sums: CostSums) -> CostExportResult:
        self.spans += sum(total.spans for total in sums.costs.values())
        return CostExportResult.SUCCESS


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.skipif("ending_hook" not in PATHS, reason="this SDK has no ending hook")
def test_a_forked_child_sums_the_spans_its_threads_price_in_the_hook() -> None:
    # The thread that forks has priced spans: in the child it prices into the child's
    # tally, not into the dict it added to before the fork (which only the parent reads).
    sums = _Sums()
    processor = CostSpanProcessor(PRICES, [sums], pricing_path="ending_hook")
    provider = TracerProvider(
        resource=Resource.create({"service.name": "batch"}), shutdown_on_exit=False
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests")
    try:
        for _ in range(5):
            end_span(tracer, "job")
        assert processor.force_flush(10_000)
        assert sums.spans == 5

        def child() -> str:
            sums.spans = 0
            for _ in range(7):
                end_span(tracer, "job")
            flushed = processor.force_flush(10_000)
            return json.dumps({"flushed": flushed, "spans": sums.spans})

        assert json.loads(in_forked_child(child)) == {"flushed": True, "spans": 7}
        end_span(tracer, "job")
        assert processor.force_flush(10_000)
        assert sums.spans == 6
    finally:
        processor.shutdown()


def test_records_hold_no_reference_to_the_span(harness: Harness) -> None:
    end_span(harness.tracer("batch"), "job")
    record, _ = harness.only()
    for name in record.__slots__:
        value = getattr(record, name)
        assert not isinstance(value, ReadableSpan)
        assert isinstance(value, str | int | float | bool | type(None)) or name == "usage"


def test_spans_ended_concurrently_are_all_accounted_for(harness: Harness) -> None:
    tracer = harness.tracer("batch")

    def run() -> None:
        for _ in range(500):
            end_span(tracer, "job")

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    harness.flush()
    stats = harness.processor.stats()
    assert stats["spans_seen"] == stats["spans_priced"] == len(harness.costs.records) == 2_000
