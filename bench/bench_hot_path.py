"""Cost of CostSpanProcessor on the thread that ends a span, and of the two enrichment designs.

Baseline, in the same run: the SDK's BatchSpanProcessor with a no-op SpanExporter alone,
which is what an instrumented service already pays. Every configuration creates and ends
the same HTTP server span (8 attributes) on a TracerProvider with one resource.

1. App thread: CPU time of the thread that creates and ends spans (``time.thread_time``),
   in bursts short enough that no background worker runs during the burst (each burst
   follows a force_flush), so the number is what ``on_end`` adds to a request. Wall time of
   the same bursts is shown too; it includes scheduler noise of a shared machine.
2. Sustained: process CPU time (all threads) per span over a run that includes pricing,
   record building, enrichment and the final flush: the whole cost, on whichever thread.
3. Enrichment designs (DESIGN §5, docs/design-decisions.md): (A) wrap the user's exporter so
   enrichment runs on its export thread, sharing results with the record path through a
   span-id memo (prototype below), versus (B) wrap the downstream processors: the pricing
   worker hands enriched copies to the user's BatchSpanProcessor (what CostSpanProcessor
   ships with ``span_processors=``).

Run ``python -m bench.bench_hot_path [--quick]``; it rewrites the ``hot_path`` section of
docs/performance.md.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.util.types import AttributeValue

from bench._report import Metric, Result, command, environment, main_for, table
from otelcost.costing._pipeline import BatchPipeline
from otelcost.costing.coster import Coster, PricingSnapshot, SpanCost
from otelcost.costing.enrich import enriched_copy
from otelcost.costing.processor import CostSpanProcessor
from otelcost.exporters.base import CostExporter, CostExportResult
from otelcost.pricing import PricingCache
from otelcost.record import CostRecord

PRICING = {
    "version": "bench",
    "currency": "USD",
    "prices": {
        "checkout:GET /users/{id}": {"per_ms": 2.1e-6, "per_request": 1e-6},
        "*:*": {"per_ms": 5e-7},
    },
}
ATTRIBUTES: dict[str, AttributeValue] = {
    "http.request.method": "GET",
    "http.route": "/users/{id}",
    "url.path": "/users/123",
    "server.address": "api.internal",
    "server.port": 8080,
    "http.response.status_code": 200,
    "network.protocol.version": "1.1",
    "user_agent.original": "curl/8.5.0",
}
BURST = 400  # below the BatchSpanProcessor's 512 wake-up and the pricing stage's 1024


class NoopSpanExporter(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.keep = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.keep:
            self.spans.extend(spans)
        return SpanExportResult.SUCCESS


class NoopCostExporter(CostExporter):
    def __init__(self) -> None:
        self.records: list[CostRecord] = []
        self.keep = False

    def export(self, records: Sequence[CostRecord]) -> CostExportResult:
        if self.keep:
            self.records.extend(records)
        return CostExportResult.SUCCESS


# -- design A: enrichment on the user's export thread, results shared through a memo -------


class _Memo:
    """Span-id keyed results: whichever path prices a span first stores it, the other takes
    it. Bounded (oldest evicted); an evicted span is priced again by the second path."""

    def __init__(self, capacity: int = 65_536) -> None:
        self._results: dict[tuple[int, int], SpanCost] = {}
        self._lock = threading.Lock()
        self._capacity = capacity
        self.evicted = 0

    def take_or_price(self, span: ReadableSpan, coster: Coster, snap: PricingSnapshot) -> SpanCost:
        context = span.context
        key = (context.trace_id, context.span_id)
        with self._lock:
            found = self._results.pop(key, None)
        if found is not None:
            return found
        cost = coster.cost(span, snap)
        if not context.trace_flags.sampled:  # only sampled spans reach the other path
            return cost
        with self._lock:
            winner = self._results.setdefault(key, cost)
            if winner is not cost:
                del self._results[key]
            elif len(self._results) > self._capacity:
                del self._results[next(iter(self._results))]
                self.evicted += 1
        return winner


class _MemoCostProcessor(SpanProcessor):
    """Design A's record path: the same queue and pricing as CostSpanProcessor, plus the memo."""

    def __init__(self, coster: Coster, memo: _Memo, exporter: CostExporter) -> None:
        self._coster, self._memo, self._exporter = coster, memo, exporter
        self._spans: BatchPipeline[ReadableSpan] = BatchPipeline(
            self,
            name="bench-memo-pricing",
            max_queue_size=16_384,
            max_batch_size=1_024,
            schedule_delay_millis=200,
            export_timeout_millis=30_000,
        )
        self._put = self._spans.put

    def on_end(self, span: ReadableSpan) -> None:
        self._put(span)

    def process(self, batch: Sequence[ReadableSpan]) -> None:
        snap = self._coster.snapshot()
        records = []
        for span in batch:
            cost = self._memo.take_or_price(span, self._coster, snap)
            records.append(cost.record(span.context.trace_id, span.context.span_id))
        self._exporter.export(records)

    def flush(self, timeout_millis: int) -> bool:
        return True

    def close(self, timeout_millis: int) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._spans.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._spans.shutdown()


class _EnrichingSpanExporter(SpanExporter):
    """Design A's enrichment: runs on the user's BatchSpanProcessor thread."""

    def __init__(self, inner: SpanExporter, coster: Coster, memo: _Memo) -> None:
        self._inner, self._coster, self._memo = inner, coster, memo

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        snap = self._coster.snapshot()
        take = self._memo.take_or_price
        return self._inner.export(
            [enriched_copy(s, take(s, self._coster, snap).attributes()) for s in spans]
        )


# -- configurations ------------------------------------------------------------------------


class Setup:
    """One TracerProvider configuration with the exporters it feeds."""

    def __init__(self, name: str, spans: NoopSpanExporter, costs: NoopCostExporter) -> None:
        self.name = name
        self.span_exporter = spans
        self.cost_exporter = costs
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "checkout"}), shutdown_on_exit=False
        )
        self.tracer = self.provider.get_tracer("bench")
        self.dropped_by_user_bsp = 0


def _coster(cache: PricingCache) -> Coster:
    return Coster(
        cache, currency="USD", region=None, max_operations_per_service=1000, normalizer=None
    )


def build(name: str) -> Setup:
    spans, costs = NoopSpanExporter(), NoopCostExporter()
    setup = Setup(name, spans, costs)
    add = setup.provider.add_span_processor
    if name == "baseline":
        add(BatchSpanProcessor(spans))
    elif name == "cost":
        add(CostSpanProcessor(PRICING, [costs]))
        add(BatchSpanProcessor(spans))
    elif name in ("cost+enrich", "B"):
        add(CostSpanProcessor(PRICING, [costs], span_processors=[BatchSpanProcessor(spans)]))
    elif name == "A":
        cache = PricingCache(PRICING)
        cache.refresh()
        coster, memo = _coster(cache), _Memo()
        add(_MemoCostProcessor(coster, memo, costs))
        add(BatchSpanProcessor(_EnrichingSpanExporter(spans, coster, memo)))
    else:
        raise ValueError(name)
    return setup


def bursts(setups: Sequence[Setup], rounds: int) -> list[list[int]]:
    """Nanoseconds to create and end each span, per setup.

    Setups take turns span by span, so a slow moment of a shared machine hits all of them
    alike, and each round starts with every worker idle (after force_flush) and is short
    enough that none wakes up during it.
    """
    samples: list[list[int]] = [[] for _ in setups]
    tracers = [setup.tracer for setup in setups]
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for setup in setups:
            setup.provider.force_flush(60_000)
        gc.collect()
        for _ in range(BURST):
            for index, tracer in enumerate(tracers):
                started = clock()
                tracer.start_span("GET /users/{id}", attributes=ATTRIBUTES).end()
                samples[index].append(clock() - started)
    return samples


def added_us(samples: list[int], baseline: list[int]) -> float:
    """Median over spans of (this setup's time - the baseline's time for the same turn)."""
    return statistics.median(a - b for a, b in zip(samples, baseline, strict=True)) / 1e3


def sustained(name: str, spans: int) -> tuple[float, int, int]:
    """Process CPU µs per span including all background work, spans the user's exporter
    missed, and enriched amounts that differ from their record's."""
    setup = build(name)
    setup.span_exporter.keep = setup.cost_exporter.keep = True
    start_span = setup.tracer.start_span
    gc.collect()
    cpu = time.process_time()
    for _ in range(spans):
        start_span("GET /users/{id}", attributes=ATTRIBUTES).end()
    setup.provider.force_flush(120_000)
    cpu = time.process_time() - cpu
    setup.provider.shutdown()
    exported = setup.span_exporter.spans
    amounts = {r.span_id: r.cost_amount for r in setup.cost_exporter.records}
    mismatched = sum(
        1
        for s in exported
        if s.context is not None
        and s.attributes is not None
        and "cost.amount" in s.attributes
        and s.attributes["cost.amount"] != amounts.get(f"{s.context.span_id:016x}")
    )
    return cpu / spans * 1e6, spans - len(exported), mismatched


def interleaved(
    names: Sequence[str], rounds: int, run: Callable[[str], tuple[float, int, int]]
) -> dict[str, list[tuple[float, int, int]]]:
    """Every configuration once per round, so machine load hits all alike."""
    samples: dict[str, list[tuple[float, int, int]]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            samples[name].append(run(name))
    return samples


def _quartiles(samples: list[int]) -> str:
    q1, median, q3 = statistics.quantiles(samples, n=4)
    return f"{median / 1e3:.2f} ({q1 / 1e3:.2f}-{q3 / 1e3:.2f})"


def hot_path(rounds: int) -> tuple[str, dict[str, float], dict[str, float]]:
    names = ("baseline", "cost", "cost+enrich")
    labels = {
        "baseline": "BatchSpanProcessor + no-op SpanExporter (baseline)",
        "cost": "CostSpanProcessor + no-op CostExporter, and the baseline beside it",
        "cost+enrich": "CostSpanProcessor + no-op CostExporter, baseline as its span_processors",
    }
    setups = [build(name) for name in names]
    samples = dict(zip(names, bursts(setups, rounds), strict=True))
    for setup in setups:
        setup.provider.shutdown()
    base = statistics.median(samples["baseline"]) / 1e3
    rows, added, ratios = [], {}, {}
    for name in names:
        added[name] = added_us(samples[name], samples["baseline"])
        median = statistics.median(samples[name]) / 1e3
        ratios[name] = median / base
        rows.append(
            (
                labels[name],
                _quartiles(samples[name]),
                f"{added[name]:+.2f}",
                f"{median / base:.3f}",
            )
        )
    text = table(
        ("configuration", "µs/span median (IQR)", "added µs/span (paired median)", "ratio"),
        rows,
    )
    return text, added, ratios


def designs(rounds: int, spans: int) -> str:
    names = ("baseline", "A", "B")
    labels = {
        "baseline": "baseline (no cost accounting)",
        "A": "A: wrap the user's exporter (+ memo)",
        "B": "B: wrap the downstream processor (shipped)",
    }
    setups = [build(name) for name in names]
    samples = dict(zip(names, bursts(setups, rounds), strict=True))
    for setup in setups:
        setup.provider.shutdown()
    runs = interleaved(names, max(rounds // 3, 3), lambda name: sustained(name, spans))
    base_cpu = statistics.median(run[0] for run in runs["baseline"])
    rows = []
    for name in names:
        total = statistics.median(run[0] for run in runs[name])
        rows.append(
            (
                labels[name],
                f"{added_us(samples[name], samples['baseline']):+.2f}",
                f"{total:.1f} ({total - base_cpu:+.1f})",
                f"{statistics.mean(run[1] for run in runs[name]):.0f}",
                f"{sum(run[2] for run in runs[name])}",
            )
        )
    return table(
        (
            "design",
            "app thread: added µs/span",
            f"process CPU µs/span incl. background, {spans} spans (added)",
            "spans the user's exporter missed (mean per run)",
            "cost.amount != record",
        ),
        rows,
    )


def run(quick: bool) -> Result:
    rounds, spans = (10, 2_000) if quick else (40, 5_000)
    hot, added, ratios = hot_path(rounds)
    compared = designs(rounds, spans)
    worst_name = max(("cost", "cost+enrich"), key=lambda name: added[name])
    worst = added[worst_name]
    verdict = "within" if worst <= 2.0 else "OVER"
    body = "\n".join(
        (
            "## Hot path: cost on the thread that ends a span",
            "",
            f"{command('bench_hot_path', quick)} — {environment()}. "
            "Create and end one HTTP server span with 8 attributes; "
            f"{rounds} rounds of {BURST} spans per configuration, the configurations taking "
            "turns span by span, each round starting with idle workers. Added = median over "
            "spans of the difference to the baseline span of the same turn.",
            "",
            hot,
            "",
            f"Added on the app thread: at most {worst:+.2f} µs/span ({verdict} the 2 µs "
            "budget of DESIGN §9). `on_end` only appends the ended span to a deque; pricing, "
            "record building and enrichment run on the pricing worker (their cost is in the "
            "process CPU column below).",
            "",
            "### Enrichment designs",
            "",
            "App-thread CPU as above; process CPU covers every thread over a sustained run "
            "ending with force_flush (pricing, records, enriched copies, exports).",
            "",
            compared,
        )
    )
    metric = Metric(
        "Hot path: added on the thread that ends a span",
        worst,
        "µs/span",
        target=2.0,
        vs_baseline=f"{ratios[worst_name]:.3f}x BatchSpanProcessor alone",
        fmt="+.2f",
    )
    return Result("hot_path", body, [metric])


def main(argv: Sequence[str] | None = None) -> None:
    main_for(run, __doc__, argv)


if __name__ == "__main__":
    main()
