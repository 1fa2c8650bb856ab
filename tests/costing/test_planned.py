"""The ending hook's planned path gives exactly what Coster.price gives.

Most spans are priced without calling Coster.price (CostSpanProcessor._price_planned: a memo
hit, a fresh table, a charge decided by the table alone). These tests end the same spans on
two processors, one of them with the planned path switched off, and hold every output equal:
the span's ``cost.*`` attributes, the sums, the records and the counters. The planned side
runs each planner: the compiled one as the SDK calls it (``hook``: ``_on_ending`` in C), the
compiled ``_price_planned`` under the Python ``_on_ending`` (``planner``), and pure Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from tests.costing._costing_support import HAS_ENDING_HOOK

from otelcost import CostSpanProcessor, PricingTable, environment
from otelcost.costing import processor as processor_module
from otelcost.exporters import CostExportResult, CostSumExporter, CostSums, InMemoryCostExporter

pytestmark = pytest.mark.skipif(not HAS_ENDING_HOOK, reason="the SDK has no ending hook")

COMPILED = processor_module._speedups is not None
NOT_BUILT = "the compiled planner was not built (no C compiler when otelcost was installed)"
# How the planned side prices: see the module docstring.
PLANNERS = [
    pytest.param("hook", marks=pytest.mark.skipif(not COMPILED, reason=NOT_BUILT)),
    pytest.param("planner", marks=pytest.mark.skipif(not COMPILED, reason=NOT_BUILT)),
    "python",
]

_T0 = 1_764_236_400_000_000_000
TABLE = {
    "version": "planned",
    "currency": "USD",
    "prices": {
        # An entry key with both parts, a targeted nested key, a usage price, the bare star.
        "checkout:GET /users/{id}": {"per_ms": 2.1e-6, "per_request": 1e-6},
        "checkout:postgresql SELECT *": {"per_request": 3e-7},
        "checkout:openai chat *": {"per_unit": {"gen_ai.usage.input_tokens": 1e-6}},
        "*:*": {"per_ms": 5e-7, "per_request": 2e-7},
    },
}
# The service's bare star for entry spans, a `*:` key for its nested redis spans (their
# records carry the nested binding).
NESTED_KEYS = {
    "version": "nested",
    "currency": "USD",
    "prices": {
        "checkout:*": {"per_ms": 1.3e-6, "per_request": 4e-7},
        "*:redis *": {"per_request": 7e-8},
        "*:*": {"per_ms": 5e-7},
    },
}
ONLY_SOME = {"version": "some", "prices": {"checkout:GET /users/{id}": {"per_ms": 1e-6}}}


class Sums(CostSumExporter):
    def __init__(self) -> None:
        self.sums: list[CostSums] = []

    def export_sums(self, sums: CostSums) -> CostExportResult:
        self.sums.append(sums)
        return CostExportResult.SUCCESS

    def totals(self) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for batch in self.sums:
            for key, cost in batch.costs.items():
                total = out.setdefault(key, [0, 0])
                total[0] += cost.nanos
                total[1] += cost.spans
            for key, spans in batch.unpriced.items():
                out[key] = out.get(key, 0) + spans
        return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}


class Side:
    """One processor and its provider; ``planned=False`` switches the planned path off
    (pure Python); ``planner``: which planner prices (see the module docstring)."""

    def __init__(self, table: dict[str, Any], *, planned: bool, planner: str = "python") -> None:
        self.sums, self.records = Sums(), InMemoryCostExporter(max_records=None)
        compiled = planned and planner != "python"
        self.processor = CostSpanProcessor(
            PricingTable.parse(table),
            [self.sums, self.records],
            pricing_path="ending_hook",
            environ={} if compiled else {environment.PURE_PYTHON: "1"},
        )
        assert self.processor.stats()["compiled"] is compiled
        if planner == "planner":  # the Python _on_ending, calling the compiled planner
            del self.processor._on_ending
        if not planned:
            self.processor._price_planned = lambda span: False  # type: ignore[method-assign]
        # Spans not planned are priced by _price_in_place (which the C hook calls too).
        self.in_place = 0
        price_in_place = self.processor._price_in_place

        def counted(span: Any) -> None:
            self.in_place += 1
            price_in_place(span)

        self.processor._price_in_place = counted  # type: ignore[method-assign]
        # What is queued for the records, as plain values (the Named and Binding objects
        # are each processor's own; the span context differs).
        self.queued: list[tuple[Any, ...]] = []
        put_cost = self.processor._put_cost

        def queued(cost: Any) -> bool:
            named, binding, nanos, duration_ms, timestamp_ms, *values, _ = cost
            if (values[1] or "").startswith("invalid_span"):
                timestamp_ms = None  # the time it was priced
            match = binding.match
            self.queued.append(
                (
                    named.service,
                    named.operation,
                    match and match.key,
                    binding.error,
                    nanos,
                    duration_ms,
                    timestamp_ms,
                    *values,
                )
            )
            return put_cost(cost)

        self.processor._put_cost = queued
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "checkout"}), shutdown_on_exit=False
        )
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("test")
        self.ended: list[dict[str, Any]] = []

    def end(self, spec: dict[str, Any]) -> None:
        parent = None
        if spec["parent"] != "none":
            parent_span = self.tracer.start_span("parent", start_time=_T0)
            context = parent_span.get_span_context()
            if spec["parent"] == "remote":
                context = trace.SpanContext(
                    context.trace_id, context.span_id, True, context.trace_flags
                )
            parent = trace.set_span_in_context(trace.NonRecordingSpan(context))
        span = self.tracer.start_span(
            spec["name"],
            context=parent,
            kind=spec["kind"],
            attributes=spec["attributes"],
            start_time=spec["start"],
        )
        span.end(end_time=spec["start"] + spec["duration_ns"])
        self.ended.append(dict(span.attributes or {}))

    @property
    def planned(self) -> int:
        """Spans priced by the planned path: every ended one not priced in place."""
        return len(self.ended) - self.in_place

    def outputs(self) -> tuple[Any, ...]:
        assert self.processor.force_flush(10_000)
        stats = self.processor.stats()
        # An invalid span's record gets the time it was priced: left out.
        records = [
            {
                k: v
                for k, v in r.to_dict().items()
                if k not in ("trace_id", "span_id")
                and not (k == "timestamp" and (r.error or "").startswith("invalid_span"))
            }
            for r in self.records.records
        ]
        counters = {
            k: stats[k]
            for k in ("spans_seen", "spans_priced", "unpriced", "spans_not_billable", "errors")
        }
        return self.ended, self.sums.totals(), records, counters, self.queued

    def close(self) -> None:
        self.processor.shutdown()


@pytest.fixture(params=PLANNERS)
def sides(request: pytest.FixtureRequest) -> Iterator[tuple[Side, Side]]:
    pair = Side(TABLE, planned=True, planner=request.param), Side(TABLE, planned=False)
    yield pair
    for side in pair:
        side.close()


_ATTRIBUTE_SETS = st.sampled_from(
    [
        {"http.request.method": "GET", "http.route": "/users/{id}", "url.path": "/users/7"},
        {"http.method": "GET", "http.target": "/users/8", "http.status_code": 404},
        # Named by a raw path or URL (the path rule): new ids, a fixed path, no usable path.
        {"http.method": "GET", "http.target": "/users/9", "http.status_code": 404},
        {"http.method": "GET", "http.target": "/health", "http.status_code": 404},
        {"http.method": "GET", "http.target": " ", "http.status_code": 404},
        # The WSGI middleware's: a full URL, no target (the compiled server rule's case).
        {"http.method": "GET", "http.url": "http://127.0.0.1/users/10", "http.status_code": 200},
        {"http.method": "GET", "http.url": "http://127.0.0.1/users/11?x=1", "net.host.port": 80},
        {"http.method": "POST", "http.url": "http://127.0.0.1/Users/Jos%C3%A9/1"},
        {"http.request.method": "GET", "url.full": "https://api.example.com/v1/items/5"},
        {"http.request.method": "GET", "url.full": "https://api.example.com/v1/items/6"},
        {"db.system": "postgresql", "db.operation": "SELECT", "db.sql.table": "users"},
        {"db.system": "redis", "db.operation": "GET"},
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.system": "openai",
        },
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.system": "openai",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.response.id": "r-1",
        },
        {"rpc.system": "grpc", "rpc.service": "Pay", "rpc.method": "Charge"},
        {},
    ]
)
_SPECS = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["GET /users/{id}", "GET", "SELECT users", "chat gpt-4o", "work"]),
        "kind": st.sampled_from([SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL]),
        "attributes": _ATTRIBUTE_SETS,
        "parent": st.sampled_from(["none", "local", "remote"]),
        # Valid epoch times mostly; a zero start and an end before the start sometimes.
        "start": st.sampled_from([_T0, _T0 + 123_456_789, 0]),
        "duration_ns": st.one_of(
            st.integers(0, 10**12), st.sampled_from([0, 1, 499_999, 2_500_000, -5])
        ),
    }
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs=st.lists(_SPECS, min_size=1, max_size=12))
def test_planned_path_equals_coster_price(
    sides: tuple[Side, Side], specs: list[dict[str, Any]]
) -> None:
    fast, slow = sides
    for spec in specs:
        for side in sides:
            side.end(spec)
    assert fast.outputs() == slow.outputs()
    assert slow.planned == 0


@pytest.mark.parametrize("planner", PLANNERS)
@settings(max_examples=50, deadline=None)
@given(specs=st.lists(_SPECS, min_size=1, max_size=12))
def test_planned_path_equals_coster_price_with_nested_keys(
    planner: str, specs: list[dict[str, Any]]
) -> None:
    fast, slow = Side(NESTED_KEYS, planned=True, planner=planner), Side(NESTED_KEYS, planned=False)
    try:
        for spec in specs:
            fast.end(spec)
            slow.end(spec)
        assert fast.outputs() == slow.outputs()
    finally:
        fast.close()
        slow.close()


def test_repeat_spans_take_the_planned_path(sides: tuple[Side, Side]) -> None:
    """Not vacuous: after the first span of each kind (a memo miss), repeats are planned,
    entry spans and nested ones (targeted, untargeted, no key) alike."""
    fast, slow = sides
    specs = [
        {
            "name": "GET /users/{id}",
            "kind": SpanKind.SERVER,
            "attributes": {"http.request.method": "GET", "http.route": "/users/{id}"},
            "parent": "none",
        },
        {
            "name": "SELECT users",
            "kind": SpanKind.CLIENT,
            "attributes": {
                "db.system": "postgresql",
                "db.operation": "SELECT",
                "db.sql.table": "users",
            },
            "parent": "local",
        },
        {
            "name": "GET",
            "kind": SpanKind.CLIENT,
            "attributes": {"db.system": "redis", "db.operation": "GET"},
            "parent": "local",
        },
    ]
    for round_ in range(3):
        for kind in specs:
            spec = {**kind, "start": _T0 + round_, "duration_ns": 1_500_000}
            fast.end(spec)
            slow.end(spec)
    assert fast.planned == 6
    assert fast.outputs() == slow.outputs()
    amounts = [span.get("cost.amount") for span in fast.ended[-3:]]
    assert amounts[0] == pytest.approx(1e-6 + 2.1e-6 * 1.5)  # entry: per_request + per_ms
    assert amounts[1] == pytest.approx(3e-7)  # a key names the SELECT
    assert amounts[2] is None  # redis GET: no key names it, not billable
    assert "cost.error" not in fast.ended[-1]


def test_spans_a_raw_path_names_take_the_planned_path(sides: tuple[Side, Side]) -> None:
    """A new id in every span's path: the path rule names it, still planned after the first
    span of the shape (its memo miss)."""
    fast, slow = sides
    for user in range(4):
        spec = {
            "name": "GET",
            "kind": SpanKind.SERVER,
            "attributes": {"http.method": "GET", "http.target": f"/users/{user}"},
            "parent": "none",
            "start": _T0 + user,
            "duration_ns": 2_000_000,
        }
        fast.end(spec)
        slow.end(spec)
    assert fast.planned == 3
    assert fast.outputs() == slow.outputs()
    assert {span["cost.operation"] for span in fast.ended} == {"GET /users/*"}


def test_shapes_of_other_resources_and_kinds_take_the_planned_path(
    sides: tuple[Side, Side],
) -> None:
    """The same attribute names under two resources (two providers sharing the processor)
    and two kinds: each combination has its own shape in one chain, and repeats of every
    one are planned, not only those of the chain's first shape."""
    fast, slow = sides
    for side in sides:
        provider = TracerProvider(
            resource=Resource.create({"service.name": "payment-svc"}), shutdown_on_exit=False
        )
        provider.add_span_processor(side.processor)
        side.other = provider.get_tracer("test")  # type: ignore[attr-defined]
    attributes = {"http.request.method": "GET", "http.route": "/users/{id}"}
    for round_ in range(3):
        for kind in (SpanKind.SERVER, SpanKind.INTERNAL):
            for side in sides:
                for tracer in (side.tracer, side.other):  # type: ignore[attr-defined]
                    span = tracer.start_span(
                        "GET /users/{id}", kind=kind, attributes=attributes, start_time=_T0
                    )
                    span.end(end_time=_T0 + 1_500_000 + round_)
                    side.ended.append(dict(span.attributes or {}))
    assert fast.planned == 8  # 12 spans, the first of each of the 4 shapes a memo miss
    assert fast.outputs() == slow.outputs()
    assert all("cost.amount" in span and "cost.error" not in span for span in fast.ended)


@pytest.mark.parametrize("planner", PLANNERS)
def test_a_table_without_a_price_leaves_entry_spans_to_coster_price(planner: str) -> None:
    fast, slow = Side(ONLY_SOME, planned=True, planner=planner), Side(ONLY_SOME, planned=False)
    try:
        spec = {
            "name": "POST /orders",
            "kind": SpanKind.SERVER,
            "attributes": {"http.request.method": "POST", "http.route": "/orders"},
            "parent": "none",
            "start": _T0,
            "duration_ns": 3_000_000,
        }
        for _ in range(3):
            fast.end(spec)
            slow.end(spec)
        assert fast.planned == 0  # pricing_not_found is an error: Coster.price says so
        assert fast.outputs() == slow.outputs()
        assert fast.ended[-1]["cost.error"].startswith("pricing_not_found")
    finally:
        fast.close()
        slow.close()


@pytest.mark.parametrize("planner", PLANNERS)
def test_a_stale_table_is_never_planned(planner: str) -> None:
    """The planned path compares the span's end with the table's stale time."""
    side = Side(TABLE, planned=True, planner=planner)
    try:
        cache = side.processor.pricing
        cache.refresh()
        spec = {
            "name": "GET /users/{id}",
            "kind": SpanKind.SERVER,
            "attributes": {"http.request.method": "GET", "http.route": "/users/{id}"},
            "parent": "none",
            "start": _T0,
            "duration_ns": 1_000_000,
        }
        side.end(spec)
        side.end(spec)
        assert side.planned == 1
        held = cache.held
        assert held is not None
        late = int(held[1] * 1e9) + 1  # ends after the table went stale
        side.end({**spec, "start": late - 1_000_000})
        assert side.planned == 1
    finally:
        side.close()
