"""InMemoryCostExporter: bounded records, exact totals, refusal after shutdown."""

from __future__ import annotations

import collections
import gc
import random
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Tracer

from otelcost import CostRecord, CostSpanProcessor, PricingCache, environment
from otelcost.costing.coster import Coster, SpanCost
from otelcost.exporters import CostExporter, CostExportResult, InMemoryCostExporter
from otelcost.exporters import memory as memory_module
from otelcost.money import to_nanos

_T0 = 1_764_236_400_000_000_000


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


@pytest.mark.parametrize("limit", [0, 1, 7, 50, None])
def test_the_bound_holds_exactly_across_exports_of_any_size(limit: int | None) -> None:
    """Kept in chunks of one export each, the records are those a deque(maxlen=limit)
    would keep, with the evictions counted, whatever the exports' sizes."""
    exporter = InMemoryCostExporter(max_records=limit)
    expected: collections.deque[CostRecord] = collections.deque(maxlen=limit)
    sizes = random.Random(7).choices([0, 1, 2, 3, 6, 9, 20, 60], k=40)
    n = 0
    for size in sizes:
        batch = [record(n + i) for i in range(size)]
        n += size
        exporter.export(batch)
        expected.extend(batch)
        assert exporter.records == list(expected)
    evicted = n - len(expected)
    assert exporter.stats() == {"exported": n, "evicted": evicted, "refused": 0}


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


def _server_span(tracer: Tracer, route: str, start: int) -> Span:
    """A started server span of ``route`` (the stable HTTP conventions)."""
    return tracer.start_span(
        f"GET {route}",
        kind=SpanKind.SERVER,
        attributes={"http.request.method": "GET", "http.route": route},
        start_time=start,
    )


class _Records(CostExporter):
    """A plain record exporter: the processor builds a CostRecord per span for it."""

    def __init__(self) -> None:
        self.records: list[CostRecord] = []

    def export(self, records: Sequence[CostRecord]) -> CostExportResult:
        self.records.extend(records)
        return CostExportResult.SUCCESS


def test_the_processors_cost_tuples_become_the_same_records_when_read() -> None:
    """Fed by CostSpanProcessor, the exporter keeps the per-span cost tuples and builds their
    records when ``records`` is read: the same records, totals and counts as a record
    exporter beside it gets, in order with records exported directly, and bounded alike."""
    memory, plain = InMemoryCostExporter(max_records=25), _Records()
    processor = CostSpanProcessor(
        {
            "version": "v1",
            "currency": "USD",
            "prices": {"shop:GET /users/{id}": {"per_ms": 2.1e-6, "per_request": 1e-6}},
        },
        [memory, plain],
        pricing_path="ending_hook",
    )
    provider = TracerProvider(
        resource=Resource.create({"service.name": "shop"}), shutdown_on_exit=False
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    try:
        assert memory.export([record(0)]) is CostExportResult.SUCCESS
        for i in range(30):
            span = _server_span(tracer, "/users/{id}" if i % 3 else "/unpriced", _T0 + i)
            span.end(end_time=_T0 + i + 1_500_000 * (i + 1))
        assert processor.force_flush(10_000)
        assert memory._unbuilt  # nothing built on the export worker
        # Rows of plain values, a batch's in one flat untracked tuple: a full collection (a
        # pause of the application) walks none of their values, only the few chunks.
        gc.collect()
        rows = [chunk for width, chunk in memory._chunks if width == memory_module._ROW_WIDTH]
        assert sum(len(chunk) for chunk in rows) == 25 * memory_module._ROW_WIDTH
        assert not any(gc.is_tracked(chunk) for chunk in rows)
        assert all(
            width == memory_module._ROW_WIDTH for width, _ in memory._chunks
        )  # record(0) evicted
        # (From Python 3.12 deque is a heap type: its traverse also visits the type.)
        items = [r for r in gc.get_referents(memory._chunks) if r is not collections.deque]
        assert items == list(memory._chunks) and len(items) < 25
        assert memory.records == plain.records[-25:]
        assert not memory._unbuilt
        assert memory.records == plain.records[-25:]  # built once, kept
        totals = {key: (t.spans, t.unpriced, t.nanos) for key, t in memory.totals().items()}
        expected: dict[tuple[str, str], list[int]] = {}
        for r in [record(0), *plain.records]:
            counts = expected.setdefault((r.service, r.operation), [0, 0, 0])
            counts[0] += 1
            counts[1] += r.error is not None
            counts[2] += r.cost_nanos
        assert totals == {key: tuple(v) for key, v in expected.items()}
        assert memory.stats() == {"exported": 31, "evicted": 6, "refused": 0}
    finally:
        processor.shutdown()
    assert memory.export([record(1)]) is CostExportResult.FAILURE


def test_records_exported_and_cost_tuples_keep_their_order() -> None:
    memory = InMemoryCostExporter(max_records=None)
    processor = CostSpanProcessor(
        {"version": "v1", "currency": "USD", "prices": {"*:*": {"per_ms": 1e-6}}},
        [memory],
        pricing_path="ending_hook",
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(processor)
    try:
        memory.export([record(1)])
        provider.get_tracer("t").start_span("work").end()
        assert processor.force_flush(10_000)
        memory.export([record(2)])
        provider.get_tracer("t").start_span("work").end()
        assert processor.force_flush(10_000)
        kinds = [r.operation if r.operation == "work" else r.timestamp % 10 for r in memory.records]
        assert kinds == [1, "work", 2, "work"]
    finally:
        processor.shutdown()


class _HandMadeContext:
    """A span context that is not the SDK's (a hand-built span's): ids as attributes."""

    def __init__(self, trace_id: int, span_id: int) -> None:
        self.trace_id, self.span_id = trace_id, span_id


@pytest.mark.skipif(memory_module._speedups is None, reason="the extension is not built")
def test_the_compiled_rows_equal_the_python_rows() -> None:
    """Priced, unpriced, nested and usage-priced spans of two services and two deploys,
    with each kind of context a cost can carry: ``memory_rows`` makes the rows and totals
    ``_python_rows`` makes, and leaves untracked exactly the rows of plain values."""
    cache = PricingCache(
        {
            "version": "v1",
            "currency": "USD",
            "region": "eu-west-1",
            "prices": {
                "shop:GET /users/{id}": {"per_ms": 2.1e-6, "per_request": 1e-6},
                "shop:chat m": {"per_unit": {"gen_ai.usage.input_tokens": 1e-6}},
            },
        }
    )
    cache.refresh()
    coster = Coster(
        cache, currency="USD", region=None, max_operations_per_service=10, normalizer=None
    )
    costs: list[Any] = []
    for deploy in ("1.0", "2.0"):
        provider = TracerProvider(
            resource=Resource.create({"service.name": "shop", "service.version": deploy})
        )
        tracer = provider.get_tracer("test")
        for i in range(12):
            parent = _server_span(tracer, "/users/{id}" if i % 4 else "/unpriced", _T0 + i)
            chat = tracer.start_span(
                "chat m",
                context=trace.set_span_in_context(parent),
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "m",
                    "gen_ai.usage.input_tokens": 100 + i,
                },
                start_time=_T0 + i,
            )
            chat.end(end_time=_T0 + i + 1_000_000)
            parent.end(end_time=_T0 + i + 2_500_000)
            for span in (parent, chat):
                cost = coster.price(span)
                context = span.get_span_context()
                # The SDK's context, the compiled planner's ids, or a hand-made context.
                ids = (context.trace_id, context.span_id)
                ctx = (context, ids, _HandMadeContext(*ids))[len(costs) % 3]
                costs.append((*cost[:9], ctx))
    # A usage mapping the collector tracks (any Mapping may come from a hand-built span).
    costs[1] = (*costs[1][:5], MappingProxyType({"gen_ai.usage.input_tokens": 5.0}), *costs[1][6:])
    costs[2] = SpanCost(*costs[2])  # what the copy path queues: a NamedTuple of the fields
    assert any(cost[6] is not None for cost in costs)  # unpriced
    assert any(cost[5] for cost in costs)  # usage-priced
    assert not all(cost[7] for cost in costs)  # nested
    python_totals: dict[tuple[str, str], list[int]] = {}
    compiled_totals = {("shop", "GET /users/{id}"): [1, 0, 5]}  # adds to what is there
    python_totals.update({key: list(value) for key, value in compiled_totals.items()})
    python_rows = memory_module._python_rows(costs, python_totals)
    compiled_rows = memory_module._compiled_rows(costs, compiled_totals)
    assert compiled_rows == python_rows
    assert compiled_totals == python_totals
    width = memory_module._ROW_WIDTH
    assert len(compiled_rows) == len(costs) * width
    # One tuple for the batch, untracked from the start unless it holds something tracked
    # (here: the mapping proxy).
    assert gc.is_tracked(compiled_rows)
    assert not gc.is_tracked(memory_module._compiled_rows(costs[2:], {}))
    rows = [compiled_rows[i : i + width] for i in range(0, len(compiled_rows), width)]
    records = [memory_module._record_of(row) for row in rows]
    assert [(r.trace_id, r.span_id, r.service_version) for r in records[:2]] == [
        (f"{c[9].trace_id:032x}", f"{c[9].span_id:016x}", "1.0") for c in costs[:1]
    ] + [(f"{costs[1][9][0]:032x}", f"{costs[1][9][1]:016x}", "1.0")]


def test_pure_python_rows_where_asked() -> None:
    pure = InMemoryCostExporter(environ={environment.PURE_PYTHON: "1"})
    assert pure._rows is memory_module._python_rows
    compiled = InMemoryCostExporter(environ={})
    expected = memory_module._python_rows
    if memory_module._speedups is not None:
        expected = memory_module._compiled_rows
    assert compiled._rows is expected


def _costs(count: int) -> list[Any]:
    """The cost tuples of ``count`` ended server spans, priced (one in four unpriced), each
    with the SDK's span context: what the processor's export worker hands the exporter."""
    cache = PricingCache(
        {
            "version": "v1",
            "currency": "USD",
            "prices": {"shop:GET /users/{id}": {"per_ms": 2.1e-6, "per_request": 1e-6}},
        }
    )
    cache.refresh()
    coster = Coster(
        cache, currency="USD", region=None, max_operations_per_service=10, normalizer=None
    )
    tracer = TracerProvider(resource=Resource.create({"service.name": "shop"})).get_tracer("t")
    costs = []
    for i in range(count):
        span = _server_span(tracer, "/users/{id}" if i % 4 else "/unpriced", _T0 + i)
        span.end(end_time=_T0 + i + 1_000_000 * (i % 7 + 1))
        costs.append((*coster.price(span)[:9], span.get_span_context()))
    return costs


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "python"])
def test_a_batch_of_costs_allocates_one_container_not_one_per_span(pure: bool) -> None:
    """Every container allocated, tracked or not, brings the collector's next young
    collection nearer until it is freed; the kept rows live for thousands of spans."""
    memory = InMemoryCostExporter(environ={environment.PURE_PYTHON: "1"} if pure else {})
    costs = _costs(512)
    memory._export_costs(costs[:8])  # the totals' entries exist, as in a running service
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        assert memory._export_costs(costs) is CostExportResult.SUCCESS
        allocated = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert allocated <= 16  # a handful per batch (its tuple, its chunk), not one per span
    assert len(memory.records) == 520


@pytest.mark.parametrize("limit", [0, 1, 7, 50, None])
def test_the_bound_holds_exactly_across_records_and_rows(limit: int | None) -> None:
    """Chunks of records (``export``) and of the costs' flat rows (``_export_costs``),
    mixed in any sizes, keep what a deque(maxlen=limit) of their records would keep."""
    exporter = InMemoryCostExporter(max_records=limit)
    model = InMemoryCostExporter(max_records=None)  # every record, in order
    costs = iter(_costs(400))
    sizes = random.Random(11).choices([0, 1, 2, 3, 6, 9, 20, 33], k=30)
    for n, size in enumerate(sizes):
        if n % 2:
            batch: list[Any] = [record(1000 * n + i) for i in range(size)]
            exporter.export(batch)
            model.export(batch)
        else:
            batch = [next(costs) for _ in range(size)]
            exporter._export_costs(batch)
            model._export_costs(batch)
        if n % 7 == 3:  # reading builds the rows kept so far into records
            assert exporter.records == model.records[len(model.records) - len(exporter.records) :]
    expected = collections.deque(model.records, maxlen=limit)
    assert exporter.records == list(expected)
    assert exporter.stats() == {
        "exported": sum(sizes),
        "evicted": sum(sizes) - len(expected),
        "refused": 0,
    }
