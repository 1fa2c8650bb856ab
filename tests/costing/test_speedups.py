"""The compiled planner (otelcost.costing._speedups): in use where it is built, off with
OTELCOST_PURE_PYTHON, the Python ``_on_ending``'s duties kept (hooks, errors, shutdown,
table swaps), no reference or memory leak.

tests/costing/test_planned.py holds what it computes equal to the pure-Python path.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import sys
import sysconfig
import tracemalloc
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind, Tracer
from tests.costing._costing_support import HAS_ENDING_HOOK

from otelcost import CostSpanProcessor, PricingCache, environment
from otelcost.costing import processor as processor_module
from otelcost.costing.coster import NO_USAGE, Named
from otelcost.exporters import CostExporter, CostExportResult, InMemoryCostExporter
from otelcost.record import CostRecord

pytestmark = pytest.mark.skipif(not HAS_ENDING_HOOK, reason="the SDK has no ending hook")

_speedups = processor_module._speedups
_T0 = 1_764_236_400_000_000_000
TABLE = {
    "version": "v1",
    "currency": "USD",
    "prices": {
        "checkout:GET /users/{id}": {"per_ms": 2.1e-6, "per_request": 1e-6},
        "*:*": {"per_request": 2e-7},
    },
}
ROUTE = {"http.request.method": "GET", "http.route": "/users/{id}"}
NOT_BUILT = "the compiled planner was not built (no C compiler when otelcost was installed)"
needs_compiled = pytest.mark.skipif(_speedups is None, reason=NOT_BUILT)
# Each test that is about the hook's duties runs on both implementations.
BOTH = [pytest.param(True, marks=needs_compiled, id="compiled"), pytest.param(False, id="python")]


def _could_build() -> bool:
    """Whether this interpreter has what building the extension needs."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    return shutil.which(compiler) is not None and headers.exists()


class Dropping(CostExporter):
    """A record exporter that keeps nothing (the records path runs, memory stays flat)."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, records: Sequence[CostRecord]) -> CostExportResult:
        self.count += len(records)
        return CostExportResult.SUCCESS


class Ending(SpanProcessor):
    """A user processor with its own ending hook (``span_processors=``)."""

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[dict[str, Any]] = []
        self.fail = fail

    def _on_ending(self, span: Span) -> None:
        self.seen.append(dict(span._attributes._dict))  # type: ignore[union-attr]
        if self.fail:
            raise RuntimeError("user hook failed")


def _processor(compiled: bool, pricing: Any = None, **kwargs: Any) -> CostSpanProcessor:
    environ = {} if compiled else {environment.PURE_PYTHON: "1"}
    made = CostSpanProcessor(
        TABLE if pricing is None else pricing,
        pricing_path="ending_hook",
        environ=environ,
        **kwargs,
    )
    assert made.stats()["compiled"] is compiled
    return made


def _tracer(processor: CostSpanProcessor) -> Tracer:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "checkout"}), shutdown_on_exit=False
    )
    provider.add_span_processor(processor)
    return provider.get_tracer("test")


def _end(tracer: Tracer, start: int | float = _T0, end: int | float | None = None) -> Any:
    span = tracer.start_span(
        "GET /users/{id}", kind=SpanKind.SERVER, attributes=ROUTE, start_time=start
    )  # type: ignore[arg-type]
    span.end(end_time=start + 2_500_000 if end is None else end)  # type: ignore[arg-type]
    return span


@pytest.fixture
def processors() -> Iterator[list[CostSpanProcessor]]:
    made: list[CostSpanProcessor] = []
    yield made
    for processor in made:
        processor.shutdown()


def test_the_compiled_planner_is_used_where_it_is_built(
    processors: list[CostSpanProcessor], caplog: pytest.LogCaptureFixture
) -> None:
    if _speedups is None:
        if _could_build():
            pytest.fail(
                "a C compiler and Python.h are here but otelcost.costing._speedups is not "
                "built: reinstall (pip install -e .) to build it"
            )
        pytest.skip(NOT_BUILT)
    with caplog.at_level(logging.INFO, logger="otelcost.costing.processor"):
        processor = CostSpanProcessor(TABLE, pricing_path="ending_hook", environ={})
    processors.append(processor)
    assert processor.stats()["compiled"] is True
    assert isinstance(processor._on_ending, _speedups.EndingHook)
    assert isinstance(processor._price_planned, _speedups.Planner)
    assert "compiled planner" in caplog.text
    in_place = []
    processor._price_in_place = in_place.append  # type: ignore[method-assign]
    tracer = _tracer(processor)
    _end(tracer)  # a memo miss, which the hook hands to _price_in_place
    second = _end(tracer)
    assert len(in_place) == 1
    assert second.attributes["cost.amount"] == pytest.approx(1e-6 + 2.1e-6 * 2.5)


@needs_compiled
def test_spans_of_two_providers_with_the_same_attribute_names_stay_in_c(
    processors: list[CostSpanProcessor],
) -> None:
    """The planner finds a shape again from the last attribute names it saw; a span of
    another resource with the same names still finds its own shape (made after the one it
    remembers), in C, once Python has made it."""
    processor = _processor(True)
    processors.append(processor)
    in_place: list[Any] = []
    price_in_place = processor._price_in_place

    def counted(span: Any) -> None:
        in_place.append(span)
        price_in_place(span)

    processor._price_in_place = counted  # type: ignore[method-assign]
    first, second = _tracer(processor), _tracer(processor)  # two providers, two resources
    spans = [_end(tracer) for _ in range(5) for tracer in (first, second)]
    assert len(in_place) == 2  # each resource's first span: a memo miss
    assert all(span.attributes["cost.amount"] > 0 for span in spans)
    assert processor.stats()["spans_priced"] == 10


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_otelcost_pure_python_switches_it_off(
    value: str,
    monkeypatch: pytest.MonkeyPatch,
    processors: list[CostSpanProcessor],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(environment.PURE_PYTHON, value)
    with caplog.at_level(logging.INFO, logger="otelcost.costing.processor"):
        processor = CostSpanProcessor(TABLE, pricing_path="ending_hook")
    processors.append(processor)
    assert processor.stats()["compiled"] is False
    assert "_on_ending" not in vars(processor)
    assert "pure Python" in caplog.text
    span = _end(_tracer(processor))
    assert span.attributes["cost.price_key"] == "checkout:GET /users/{id}"


@pytest.mark.parametrize("compiled", BOTH)
def test_spans_a_raw_path_names_use_the_compiled_server_rule_unless_pure_python(
    compiled: bool, processors: list[CostSpanProcessor]
) -> None:
    processor = _processor(compiled)
    processors.append(processor)
    tracer = _tracer(processor)
    for user in (7, 8):
        span = tracer.start_span(
            "GET",
            kind=SpanKind.SERVER,
            attributes={"http.method": "GET", "http.url": f"http://h/users/{user}"},
        )
        span.end()
        assert span.attributes["cost.operation"] == "GET /users/*"
    rules = [
        shape.path_rule
        for shape in processor._coster._shapes.values()
        if shape.path_rule is not None
    ]
    assert len(rules) == 1
    assert isinstance(rules[0], _speedups.ServerRule) is compiled


@pytest.mark.parametrize("compiled", BOTH)
def test_the_compiled_planner_names_new_paths_without_python(
    compiled: bool, processors: list[CostSpanProcessor]
) -> None:
    """A new id in every path: once the shape and its operation are known, the compiled
    planner finds the operation's Named itself (Coster._by_path's memo hit); a new
    operation, or a path with nothing volatile, goes to Python."""
    processor = _processor(compiled)
    processors.append(processor)
    coster = processor._coster
    asked: list[str] = []
    by_path = coster._by_path

    def counted(rule: Any, kind: Any, attributes: Any, *rest: Any) -> Any:
        asked.append(attributes["http.url"])
        return by_path(rule, kind, attributes, *rest)

    coster._by_path = counted  # type: ignore[method-assign]
    tracer = _tracer(processor)
    urls = [f"http://h/users/{user}" for user in range(5)] + ["http://h/health"] * 2
    urls += ["http://h/orders/1", "http://h/orders/2"]
    operations = []
    for url in urls:
        span = tracer.start_span(
            "GET", kind=SpanKind.SERVER, attributes={"http.method": "GET", "http.url": url}
        )
        span.end()
        operations.append(span.attributes["cost.operation"])
    assert operations == ["GET /users/*"] * 5 + ["GET /health"] * 2 + ["GET /orders/*"] * 2
    # A new operation is asked twice: by the planner, then by Coster.price for its first
    # span (its binding is made there). /health's values are memoized after the first.
    first = [urls[0], urls[5], urls[7], urls[7]]
    if compiled:
        assert asked == first
    else:
        assert asked == [*urls[:6], urls[7], *urls[7:]]


@needs_compiled
def test_off_values_and_the_copy_path_keep_it_off_or_on(
    monkeypatch: pytest.MonkeyPatch, processors: list[CostSpanProcessor]
) -> None:
    monkeypatch.setenv(environment.PURE_PYTHON, "0")
    on = CostSpanProcessor(TABLE, pricing_path="ending_hook")
    copy = CostSpanProcessor(TABLE, pricing_path="copy")  # priced on a worker: no hook
    processors.extend([on, copy])
    assert on.stats()["compiled"] is True
    assert copy.stats()["compiled"] is False


@needs_compiled
def test_a_subclass_that_overrides_the_hook_keeps_python(
    processors: list[CostSpanProcessor],
) -> None:
    class Custom(CostSpanProcessor):
        def _on_ending(self, span: Span) -> None:
            span._attributes._dict["custom"] = True  # type: ignore[union-attr]
            super()._on_ending(span)

    processor = Custom(TABLE, pricing_path="ending_hook", environ={})
    processors.append(processor)
    assert processor.stats()["compiled"] is False
    span = _end(_tracer(processor))
    assert span.attributes["custom"] is True
    assert "cost.amount" in span.attributes


@pytest.mark.parametrize("compiled", BOTH)
def test_errors_are_counted_and_logged_with_their_traceback(
    compiled: bool, processors: list[CostSpanProcessor], caplog: pytest.LogCaptureFixture
) -> None:
    user = Ending(fail=True)
    processor = _processor(compiled, span_processors=[user])
    processors.append(processor)

    def broken(span: Any) -> None:
        raise ValueError("pricing broke")

    processor._price_in_place = broken  # type: ignore[method-assign]
    tracer = _tracer(processor)
    with caplog.at_level(logging.ERROR, logger="otelcost.costing.processor"):
        _end(tracer)  # the memo miss goes to _price_in_place, which raises
        _end(tracer)
    assert len(user.seen) == 2  # the user's hook runs after a pricing error
    assert processor.stats()["errors"] == 3  # one pricing error, two hook errors
    failures = {str(r.exc_info[1]) for r in caplog.records if r.exc_info}
    assert failures == {"pricing broke", "user hook failed"}


class Forwarded(SpanProcessor):
    """A user processor behind ``span_processors=``: what it was handed, or an error."""

    def __init__(self, fail: bool = False) -> None:
        self.started: list[Any] = []
        self.ended: list[Any] = []
        self.fail = fail

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        self.started.append((span, parent_context))
        if self.fail:
            raise RuntimeError("user on_start failed")

    def on_end(self, span: Any) -> None:
        self.ended.append(span)
        if self.fail:
            raise RuntimeError("user on_end failed")


@pytest.mark.parametrize("compiled", BOTH)
def test_on_start_and_on_end_forward_each_span_once_and_count_errors(
    compiled: bool, processors: list[CostSpanProcessor], caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = Forwarded(), Forwarded(fail=True)
    processor = _processor(compiled, span_processors=[bad, good])
    processors.append(processor)
    if compiled:  # no Python frame of otelcost's per span
        assert isinstance(processor.on_start, _speedups.Forwarder)
        assert isinstance(processor.on_end, _speedups.Forwarder)
    tracer = _tracer(processor)
    with caplog.at_level(logging.ERROR, logger="otelcost.costing.processor"):
        spans = [_end(tracer) for _ in range(3)]
    for user in (good, bad):
        assert [span for span, _ in user.started] == spans
        assert all(context is None for _, context in user.started)
        # Once each, as the SDK hands them to on_end (its read-only view), priced.
        assert [span.context for span in user.ended] == [span.context for span in spans]
        assert all("cost.amount" in span.attributes for span in user.ended)
    # The failing processor's on_start and on_end, three spans each; the good one still ran.
    assert processor.stats()["errors"] == 6
    failures = {str(r.exc_info[1]) for r in caplog.records if r.exc_info}
    assert failures == {"user on_start failed", "user on_end failed"}


@needs_compiled
def test_on_end_knows_the_span_the_planner_just_priced(
    processors: list[CostSpanProcessor],
) -> None:
    """The SDK hands on_end a view sharing the attributes the hook just priced: on_end
    forwards it on that alone, without looking at them; a span whose attributes are not
    the last priced is looked at, and priced if it is not."""
    user = Forwarded()
    processor = _processor(True, span_processors=[user])
    processors.append(processor)
    tracer = _tracer(processor)
    _end(tracer)  # the first of its shape: named and priced in Python, which memoizes it
    span = _end(tracer)  # priced by the planner
    assert processor.stats()["spans_priced"] == 2
    view = user.ended[-1]
    # Take cost.source away: looked at, the view would read as unpriced and be priced again.
    del span._attributes._dict["cost.source"]
    processor.on_end(view)
    assert user.ended[-2:] == [view, view]
    assert processor.stats()["spans_priced"] == 2
    other = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    unpriced = _end(other.get_tracer("test"))
    processor.on_end(unpriced)
    assert user.ended[-1] is not unpriced and "cost.amount" in user.ended[-1].attributes
    assert processor.stats()["spans_priced"] == 3
    _end(tracer)
    # The view of a span priced before the last one: looked at, and priced again.
    processor.on_end(view)
    assert user.ended[-1] is not view and "cost.amount" in user.ended[-1].attributes
    assert processor.stats()["spans_priced"] == 5


@pytest.mark.parametrize("compiled", BOTH)
def test_on_end_prices_a_span_the_hook_did_not_see(
    compiled: bool, processors: list[CostSpanProcessor]
) -> None:
    """Handed to on_end directly (another provider's span): priced there, and the
    processors get an enriched copy; after shutdown, counted as late and not forwarded."""
    user = Forwarded()
    processor = _processor(compiled, span_processors=[user])
    processors.append(processor)
    other = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    span = _end(other.get_tracer("test"))
    processor.on_end(span)
    assert "cost.amount" not in span.attributes
    (copy,) = user.ended
    assert copy is not span and copy.context == span.context
    assert copy.attributes["cost.amount"] == pytest.approx(1e-6 + 2.1e-6 * 2.5)
    assert processor.stats()["spans_priced"] == 1
    processor.shutdown()
    processor.on_end(_end(other.get_tracer("test")))
    assert len(user.ended) == 1


class Interrupt(BaseException):
    pass


@pytest.mark.parametrize("compiled", BOTH)
def test_a_base_exception_is_not_swallowed(
    compiled: bool, processors: list[CostSpanProcessor]
) -> None:
    processor = _processor(compiled)
    processors.append(processor)

    def interrupted(span: Any) -> None:
        raise Interrupt

    processor._price_in_place = interrupted  # type: ignore[method-assign]
    with pytest.raises(Interrupt):
        _end(_tracer(processor))
    assert processor.stats()["errors"] == 0


@pytest.mark.parametrize("compiled", BOTH)
def test_after_shutdown_spans_are_not_priced_but_hooks_run(compiled: bool) -> None:
    user = Ending()
    processor = _processor(compiled, span_processors=[user])
    tracer = _tracer(processor)
    _end(tracer)
    _end(tracer)
    processor.shutdown()
    late = _end(tracer)
    assert "cost.amount" not in late.attributes
    assert len(user.seen) == 3
    assert processor.stats()["spans_priced"] == 2


@pytest.mark.parametrize("compiled", BOTH)
def test_a_new_table_prices_the_next_span(
    compiled: bool, tmp_path: Path, processors: list[CostSpanProcessor]
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(TABLE))
    cache = PricingCache(str(path))
    cache.refresh()
    processor = _processor(compiled, pricing=cache)
    processors.append(processor)
    tracer = _tracer(processor)
    for _ in range(3):
        before = _end(tracer)
    assert before.attributes["cost.pricing_version"] == "v1"
    doubled = {
        "version": "v2",
        "currency": "USD",
        "prices": {"checkout:GET /users/{id}": {"per_ms": 4.2e-6, "per_request": 2e-6}},
    }
    path.write_text(json.dumps(doubled))
    cache.refresh()
    after = [_end(tracer) for _ in range(3)]
    for span in after:  # the first through Coster.price, the others planned
        assert span.attributes["cost.pricing_version"] == "v2"
        assert span.attributes["cost.amount"] == pytest.approx(2 * before.attributes["cost.amount"])


@needs_compiled
def test_times_outside_the_fast_path_give_what_python_gives(
    processors: list[CostSpanProcessor],
) -> None:
    """Float times and ints beyond 64 bits: the compiled planner calls the Python method."""
    compiled, python = _processor(True), _processor(False)
    processors.extend([compiled, python])
    runs = []
    for processor in (compiled, python):
        tracer = _tracer(processor)
        _end(tracer)  # the memo miss
        runs.append(
            [
                dict(_end(tracer, start, end).attributes)
                for start, end in [
                    (float(_T0), float(_T0 + 3_000_000)),
                    (_T0, float(_T0 + 1_000_000)),
                    (2**64, 2**64 + 5),
                    (_T0, _T0 + 2**63),
                ]
            ]
        )
    assert runs[0] == runs[1]
    assert "cost.amount" in runs[0][0]  # float times are priced
    assert runs[0][2]["cost.error"].startswith("invalid_span")


@needs_compiled
def test_the_planner_adds_into_a_cell_in_place_and_python_reads_it_as_a_pair() -> None:
    """A priced total becomes a Cell the planner adds every span into (no object per span);
    the Python paths add to it as to a pair, the harvest and the statistics read it as one,
    and a total past 64 bits goes on in Python ints, exact."""
    processor = _processor(True, exporters=[Dropping()])
    tracer = _tracer(processor)
    try:
        _end(tracer)  # the first of its shape: named and priced in Python, a pair
        totals = processor._tally.totals()
        (named,) = (key for key in totals if type(key) is Named)
        first = totals[named]
        assert type(first) is tuple
        _end(tracer)  # the planner: the pair becomes a cell holding both spans
        cell = totals[named]
        assert type(cell) is _speedups.Cell
        nanos = first[0]
        assert (len(cell), cell[0], cell[1]) == (2, 2 * nanos, 2)
        for _ in range(3):
            _end(tracer)
        assert totals[named] is cell and tuple(cell) == (5 * nanos, 5)  # added in place
        assert processor._tally.harvest() == {named: (5 * nanos, 5)}
        # A Python path adds to it as to a pair, storing a pair; the planner's next span
        # makes a cell of it again.
        processor._account(totals, (named, None, nanos, 0.0, 0, NO_USAGE, None, True, True, None))
        assert totals[named] == (6 * nanos, 6)
        _end(tracer)
        assert type(totals[named]) is _speedups.Cell and tuple(totals[named]) == (7 * nanos, 7)
        assert processor._tally.harvest() == {named: (2 * nanos, 2)}
        assert processor.stats()["spans_priced"] == 7
        # Past 64 bits: a pair of Python ints, exact, and so on after.
        big = 2**63 - 1 - nanos // 2
        totals[named] = _speedups.Cell(big, 10)
        _end(tracer)
        assert totals[named] == (big + nanos, 11)
        _end(tracer)
        assert totals[named] == (big + 2 * nanos, 12)
    finally:
        processor.shutdown()


@needs_compiled
def test_a_snapshot_reads_each_cell_as_its_pair_and_keeps_the_rest() -> None:
    cell = _speedups.Cell(nanos=7, spans=2)
    assert repr(cell) == "Cell(nanos=7, spans=2)"
    with pytest.raises(IndexError):
        cell[2]
    key = object()
    totals: dict[object, object] = {key: cell, "apart": 3, "pair": (4, 1)}
    snap = _speedups.snapshot(totals)
    assert snap == {key: (7, 2), "apart": 3, "pair": (4, 1)}
    assert snap is not totals and totals[key] is cell
    assert snap["pair"] is totals["pair"]
    with pytest.raises(TypeError):
        _speedups.snapshot([])  # type: ignore[arg-type]


@needs_compiled
def test_no_reference_or_memory_leaks() -> None:
    """Spans through the compiled hook, entry, nested and named by a new raw path each,
    with records queued: the shared objects' reference counts and the traced memory end
    where they started."""
    # A span processor too: the compiled on_start and on_end forward to it.
    # InMemoryCostExporter: its rows are made in C too (evicted past 1,000; cleared before
    # counting references, as the rows it keeps hold some).
    memory = InMemoryCostExporter(max_records=1_000)
    processor = _processor(
        True,
        exporters=[Dropping(), memory],
        span_processors=[SpanProcessor()],
    )
    tracer = _tracer(processor)
    parent = tracer.start_span("parent", kind=SpanKind.SERVER, start_time=_T0)
    from opentelemetry import trace

    inside = trace.set_span_in_context(parent)

    def burst(count: int) -> None:
        for i in range(count):
            _end(tracer, _T0 + i)
            nested = tracer.start_span(
                "SELECT", context=inside, kind=SpanKind.CLIENT, start_time=_T0 + i
            )
            nested.set_attribute("db.system", "redis")
            nested.end(end_time=_T0 + i + 1_000)
            # A new id in every path: the compiled server rule and the planner's by_path hit.
            unrouted = tracer.start_span(
                "GET",
                kind=SpanKind.SERVER,
                attributes={"http.method": "GET", "http.url": f"http://h/users/{i}?q=v2"},
                start_time=_T0 + i,
            )
            unrouted.end(end_time=_T0 + i + 2_000_000)
        assert processor.force_flush(10_000)

    try:
        burst(200)  # memos, threads, queues in place
        shared = [
            processor._coster.live[1],
            *{named for named in processor._tally.totals() if type(named) is not tuple},
            NO_USAGE,
        ]
        shared += [named.binding for named in shared[1:-1]]
        shared += [named.operation for named in shared[1:-1] if type(named) is Named]
        shared += [processor._coster._normalize, "GET"]
        memory.clear()
        before = [sys.getrefcount(obj) for obj in shared]
        gc.collect()
        objects = len(gc.get_objects())
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            burst(5_000)
            memory.clear()
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - start
        finally:
            tracemalloc.stop()
        # A reference lost per span would add 5,000 (the export worker may still hold a
        # batch from before: a few either way).
        grew = [sys.getrefcount(obj) - count for obj, count in zip(shared, before, strict=True)]
        assert max(grew) < 10, grew
        assert len(gc.get_objects()) - objects < 100
        # One leaked float per span would be 240 kB; a leaked record tuple 1.4 MB.
        assert grown < 100_000, grown
        # The entry and the unrouted spans; the nested ones are not billable.
        assert processor.stats()["spans_priced"] == 10_400
        assert processor.stats()["spans_not_billable"] == 5_200
    finally:
        processor.shutdown()


@pytest.mark.parametrize("compiled", BOTH)
def test_a_processor_is_collected_once_dropped(compiled: bool) -> None:
    """The compiled hook refers to its processor (a cycle the collector breaks)."""
    processor = _processor(compiled)
    _end(_tracer(processor))
    processor.shutdown()
    ref = weakref.ref(processor)
    del processor
    gc.collect()
    assert ref() is None


@needs_compiled
def test_a_queued_cost_holds_the_spans_own_context_and_is_untracked(
    processors: list[CostSpanProcessor],
) -> None:
    """The cost the hook queues for a record exporter carries the span's own SpanContext,
    not a new (trace_id, span_id) tuple: every container allocated brings the collector's
    next young collection nearer, tracked or not, and the context lives as long as the
    span does anyway (in the user's BatchSpanProcessor)."""
    kept: list[Any] = []

    class Keeping(InMemoryCostExporter):
        def _export_costs(self, costs: Sequence[Any]) -> CostExportResult:
            kept.extend(costs)
            return super()._export_costs(costs)

    exporter = Keeping()
    processor = _processor(True, exporters=[exporter])
    processors.append(processor)
    tracer = _tracer(processor)
    _end(tracer)  # a memo miss: priced in Python, which makes the shape the planner keeps
    span = _end(tracer)
    assert processor.force_flush(10_000)
    context = span.get_span_context()
    assert len(kept) == 2
    assert kept[1][9] is context
    assert not gc.is_tracked(kept[1])  # its collections skip it while it waits in the queue
    record = exporter.records[1]
    assert (record.trace_id, record.span_id) == (
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    )
