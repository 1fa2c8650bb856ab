"""Memory: RSS at a steady 10,000 spans/s, and through an outage of Redis and of the broker.

A worker process ends spans (4 services; built directly as the SDK's ReadableSpan, as
span processors receive them) at ``RATE`` spans/s into a CostSpanProcessor with every
exporter on: InMemoryCostExporter, MetricsCostExporter,
RedisBudgetExporter on a private redis-server and KafkaCostExporter on a private Tansu
broker (tests/_servers.py), and the enriched spans go on to a BatchSpanProcessor with a
no-op SpanExporter. It reports its RSS (``/proc/self/status``) and its queues every
second. The coordinator runs a timeline against it:

    warm-up | steady | Redis down | Redis back | broker down | broker back

stopping each server by PID and starting it again on the same port. Tansu's memory
storage forgets the idempotent producer's id when it restarts (a Kafka cluster keeps
it), and librdkafka then retries the queued batches until ``message.timeout.ms``
(default 5 min) before the exporter folds them and starts a new producer; the bench sets
``MESSAGE_TIMEOUT_MS`` so that recovery happens within the run. Memory must stay
bounded by configuration: librdkafka's queue (``queue.buffering.max.messages`` /
``.kbytes``) fills during the broker outage, then records fold into one overflow aggregate
per service; the budget exporter holds one delta per service while Redis is down. So RSS
may step up while the queue fills and must then stay flat: the slope over the second half
of each outage is the target (<= 1 MiB/min). Baseline, in the same run: the same worker
with only the BatchSpanProcessor (no otelcost), for the steady phase.

``--quick`` shortens every phase to a few seconds and caps librdkafka's queue at 10,000
messages, so the queue still fills and the plateau is still visible.

Run ``python -m bench.bench_memory [--quick]``; it rewrites the ``memory`` section of
docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bench._report import Metric, Result, bench_parser, command, environment, finish, table

TESTS = Path(__file__).resolve().parent.parent / "tests"
RATE = 10_000
TICK = 0.01  # spans are ended in bursts of RATE * TICK
SERVICES = ("checkout", "search", "payments", "llm-gateway")
PRICING = {
    "version": "bench-memory",
    "currency": "USD",
    "prices": {"checkout:GET /users/{id}": {"per_ms": 2.1e-6}, "*:*": {"per_ms": 5e-7}},
}
ATTRIBUTES: dict[str, str | int] = {
    "http.request.method": "GET",
    "http.route": "/users/{id}",
    "url.path": "/users/123",
    "http.response.status_code": 200,
}
SLOPE_TARGET = 1.0  # MiB/min over the second half of an outage
QUICK_QUEUE_MESSAGES = 10_000
MESSAGE_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class Timeline:
    warm: float
    steady: float
    outage: float
    recovery: float

    @property
    def total(self) -> float:
        return self.warm + self.steady + 2 * (self.outage + self.recovery)


# -- worker side ----------------------------------------------------------------------------


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def work(config: str, seconds: float, params: dict[str, Any]) -> None:
    """End spans at RATE for ``seconds``, printing one JSON sample per second."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    class NoopSpanExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    processor: Any = None
    exporters: dict[str, Any] = {}
    if config == "otelcost":
        processor, exporters = _cost_processor(params, BatchSpanProcessor(NoopSpanExporter()))
        on_end = processor.on_end
    else:
        on_end = BatchSpanProcessor(NoopSpanExporter()).on_end
    resources = [Resource.create({"service.name": service}) for service in SERVICES]
    sampled = TraceFlags(TraceFlags.SAMPLED)
    bits = random.Random(7).getrandbits

    def span(resource: Resource, end_ns: int) -> ReadableSpan:
        # What the SDK hands span processors when a span ends, built directly: the tracer's
        # own span creation would cap one process below RATE together with otelcost here.
        return ReadableSpan(
            name="GET /users/{id}",
            context=SpanContext(bits(128), bits(64), is_remote=False, trace_flags=sampled),
            resource=resource,
            attributes=ATTRIBUTES,
            kind=SpanKind.SERVER,
            start_time=end_ns - 12_000_000,
            end_time=end_ns,
        )

    ended = [0]
    stop = threading.Event()

    def sample(started: float) -> None:
        while not stop.wait(1.0 - (time.perf_counter() - started) % 1.0):
            line: dict[str, Any] = {
                "t": time.perf_counter() - started,
                "rss": _rss_mib(),
                "spans": ended[0],
            }
            if processor is not None:
                stats = processor.stats()
                kafka = exporters["kafka"].stats()
                redis = exporters["redis"].stats()
                line.update(
                    dropped=stats["spans_dropped"] + stats["records_dropped"],
                    span_queue=stats["queue_size"],
                    record_queue=stats["record_queue_size"],
                    kafka_queue=kafka["in_queue"],
                    kafka_overflow=kafka["overflow_pending_spans"],
                    redis_held=redis["held_services"],
                )
            print(json.dumps(line), flush=True)

    print(json.dumps({"idle": _rss_mib()}), flush=True)
    per_tick = round(RATE * TICK)
    started = time.perf_counter()
    sampler = threading.Thread(target=sample, args=(started,), daemon=True)
    sampler.start()
    tick = 0
    while time.perf_counter() - started < seconds:
        resource = resources[tick % len(resources)]
        end_ns = time.time_ns()
        for _ in range(per_tick):
            on_end(span(resource, end_ns))
        ended[0] += per_tick
        tick += 1
        delay = started + tick * TICK - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    stop.set()
    sampler.join()
    final: dict[str, Any] = {"done": True, "spans": ended[0]}
    if processor is not None:
        final["flushed"] = processor.force_flush(60_000)
        stats = processor.stats()
        final["processor"] = {k: v for k, v in stats.items() if isinstance(v, int)}
        final["kafka"] = dict(exporters["kafka"].stats())
        final["redis"] = dict(exporters["redis"].stats())
        processor.shutdown()
    print(json.dumps(final), flush=True)


def _cost_processor(params: dict[str, Any], downstream: Any) -> tuple[Any, dict[str, Any]]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from otelcost import CostSpanProcessor
    from otelcost.budget import Budget
    from otelcost.exporters import (
        InMemoryCostExporter,
        KafkaCostExporter,
        MetricsCostExporter,
        RedisBudgetExporter,
    )

    exporters = {
        "memory": InMemoryCostExporter(),
        "metrics": MetricsCostExporter(MeterProvider(metric_readers=[InMemoryMetricReader()])),
        "redis": RedisBudgetExporter(params["redis_url"], [Budget("*", 1_000_000.0, "24h")]),
        "kafka": KafkaCostExporter(params["bootstrap"], params["topic"], **params["kafka"]),
    }
    processor = CostSpanProcessor(PRICING, list(exporters.values()), span_processors=[downstream])
    return processor, exporters


# -- coordinator ------------------------------------------------------------------------------


class _Worker:
    """A worker process and the samples it prints, read on a thread."""

    def __init__(self, config: str, seconds: float, params: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bench_memory",
                "--worker",
                config,
                str(seconds),
                json.dumps(params),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.samples: list[dict[str, Any]] = []
        self.final: dict[str, Any] = {}
        self.idle = 0.0
        self.first = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        for line in stdout:
            data = json.loads(line)
            if data.get("done"):
                self.final = data
            elif "idle" in data:
                self.idle = data["idle"]
            else:
                self.samples.append(data)
                self.first.set()
        self.first.set()

    def wait(self, timeout: float) -> None:
        self.proc.wait(timeout)
        self._reader.join(10)
        if self.proc.returncode != 0 or not self.final:
            raise RuntimeError(f"memory worker failed (exit {self.proc.returncode})")


def _sleep_until(start: float, at: float) -> None:
    delay = start + at - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def _slope_mib_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per minute."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var * 60


def _window(samples: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    return [s for s in samples if start <= s["t"] < end]


def run(quick: bool) -> Result:
    timeline = Timeline(1.0, 2.0, 3.0, 2.0) if quick else Timeline(5.0, 20.0, 60.0, 15.0)
    kafka_config: dict[str, Any] = {"message.timeout.ms": MESSAGE_TIMEOUT_MS}
    if quick:
        kafka_config["queue.buffering.max.messages"] = QUICK_QUEUE_MESSAGES
    sys.path.insert(0, str(TESTS))
    from _servers import KafkaBroker, RedisServer, find_redis_binary, find_tansu_binary

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        broker = KafkaBroker(find_tansu_binary(), Path(tmp) / "tansu")
        redis_server = RedisServer(find_redis_binary(), Path(tmp) / "redis")
        broker.start()
        redis_server.start()
        try:
            baseline = _Worker("baseline", timeline.warm + timeline.steady, {})
            baseline.wait(timeline.warm + timeline.steady + 60)
            topic = broker.create_topic(f"bench-mem-{uuid.uuid4().hex[:8]}", partitions=3)
            params = {
                "bootstrap": broker.bootstrap,
                "topic": topic,
                "redis_url": redis_server.url,
                "kafka": kafka_config,
            }
            worker = _Worker("otelcost", timeline.total, params)
            if not worker.first.wait(60):
                raise RuntimeError("the memory worker did not start")
            start = time.perf_counter() - worker.samples[0]["t"]
            at = timeline.warm + timeline.steady
            phases: dict[str, tuple[float, float]] = {}
            for name, server in (("Redis", redis_server), ("broker", broker)):
                _sleep_until(start, at)
                server.stop()
                _sleep_until(start, at + timeline.outage)
                server.start()
                phases[name] = (at, at + timeline.outage)
                at += timeline.outage + timeline.recovery
            worker.wait(timeline.recovery + 180)
        finally:
            broker.stop()
            redis_server.stop()
    return _result(
        quick=quick,
        timeline=timeline,
        baseline=baseline,
        worker=worker,
        phases=phases,
        kafka_config=kafka_config,
    )


def _result(
    *,
    quick: bool,
    timeline: Timeline,
    baseline: _Worker,
    worker: _Worker,
    phases: dict[str, tuple[float, float]],
    kafka_config: dict[str, Any],
) -> Result:
    steady_from, steady_to = timeline.warm, timeline.warm + timeline.steady

    def steady(samples: list[dict[str, Any]]) -> tuple[float, float]:
        window = _window(samples, steady_from, steady_to)
        rate = (window[-1]["spans"] - window[0]["spans"]) / (window[-1]["t"] - window[0]["t"])
        return statistics.median(s["rss"] for s in window), rate

    def dropped(start: float, end: float) -> int:
        """Spans and records the processor dropped between two moments (sample times)."""
        window = _window(worker.samples, start - 1, end)
        return int(window[-1]["dropped"] - window[0]["dropped"]) if window else 0

    base_rss, base_rate = steady(baseline.samples)
    ours_rss, ours_rate = steady(worker.samples)
    rows = [
        ["steady: BatchSpanProcessor alone (baseline)", f"{base_rate:,.0f}", f"{base_rss:.1f}"]
        + [""] * 6,
        ["steady: + otelcost, every exporter", f"{ours_rate:,.0f}", f"{ours_rss:.1f}"]
        + [""] * 5
        + [f"{dropped(steady_from, steady_to):,}"],
    ]
    slopes: dict[str, float] = {}
    growth: dict[str, float] = {}
    for name, (down, up) in phases.items():
        before = _window(worker.samples, down - 2, down)
        during = _window(worker.samples, down, up + timeline.recovery)
        second_half = _window(worker.samples, (down + up) / 2, up)
        after = _window(worker.samples, up, up + timeline.recovery)
        start_rss = before[-1]["rss"] if before else during[0]["rss"]
        peak = max(s["rss"] for s in during)
        slopes[name] = _slope_mib_per_min([(s["t"], s["rss"]) for s in second_half])
        growth[name] = peak - start_rss
        queue = "kafka_queue" if name == "broker" else "redis_held"
        rate = (during[-1]["spans"] - during[0]["spans"]) / (during[-1]["t"] - during[0]["t"])
        rows.append(
            [
                f"{name} down {up - down:.0f} s, then back {timeline.recovery:.0f} s",
                f"{rate:,.0f}",
                f"{start_rss:.1f}",
                f"{peak:.1f}",
                f"{after[-1]['rss'] if after else during[-1]['rss']:.1f}",
                f"{slopes[name]:+.2f}",
                f"{max(s[queue] for s in during):,}",
                f"{max(s['kafka_overflow'] for s in during):,}",
                f"{dropped(down, up + timeline.recovery):,}",
            ]
        )
    step = 1 if quick else 5
    series = []
    for name, (down, up) in phases.items():
        points = _window(worker.samples, down - 1, up + timeline.recovery)[::step]
        series.append(
            f"- {name} down at {down:g} s, back at {up:g} s; RSS every {step} s (MiB): "
            + ", ".join(f"{s['rss']:.0f}" for s in points)
        )
    final = worker.final
    kafka, redis, proc = final["kafka"], final["redis"], final["processor"]
    from otelcost.exporters.kafka import _PRODUCER_DEFAULTS

    defaults = {**_PRODUCER_DEFAULTS, **kafka_config}
    bound = (
        f"librdkafka queue capped at {defaults['queue.buffering.max.messages']:,} messages "
        f"/ {defaults['queue.buffering.max.kbytes'] // 1024} MiB (each message holding many "
        f"records), message.timeout.ms {MESSAGE_TIMEOUT_MS / 1000:g} s"
    )
    body = "\n".join(
        [
            "## Memory: steady state and outages",
            "",
            f"{command('bench_memory', quick)} — {environment()}.",
            f"One worker process ends spans at {RATE:,}/s ({len(SERVICES)} services; "
            "`ReadableSpan`s built directly, as span processors receive them) into "
            "a CostSpanProcessor with InMemory, Metrics, RedisBudgetExporter and "
            "KafkaCostExporter, the enriched spans going on to a BatchSpanProcessor; RSS "
            "sampled every second. Timeline: "
            f"{timeline.warm:g} s warm-up, {timeline.steady:g} s steady, Redis stopped for "
            f"{timeline.outage:g} s then restarted, {timeline.recovery:g} s, the broker "
            f"stopped for {timeline.outage:g} s then restarted, {timeline.recovery:g} s. "
            f"Configuration: processor defaults (span queue 16,384, record queue 65,536), "
            f"{bound}. Baseline in the same run: the same worker without otelcost.",
            "",
            table(
                [
                    "phase",
                    "spans/s ended",
                    "RSS MiB (steady: median; outage: start)",
                    "peak MiB",
                    "end MiB",
                    "slope, 2nd half of outage (MiB/min)",
                    "max held (broker: librdkafka msgs; Redis: services)",
                    "max spans in overflow aggregates",
                    "spans + records the processor dropped",
                ],
                rows,
            ),
            "",
            *series,
            "",
            f"otelcost adds {ours_rss - base_rss:+.1f} MiB at {RATE:,} spans/s; of that, "
            f"{worker.idle - baseline.idle:+.1f} MiB is there before the first span (RSS after "
            f"setup: {baseline.idle:.1f} MiB without otelcost, {worker.idle:.1f} MiB with it and "
            "its exporters' libraries: confluent-kafka/librdkafka, redis, the metrics SDK). "
            f"After the run ({'all flushed' if final['flushed'] else 'force_flush timed out'}): "
            f"{proc['spans_priced']:,} of {final['spans']:,} spans priced, "
            f"{proc['spans_dropped']:,} spans and {proc['records_dropped']:,} records dropped "
            "by the processor (full queues); Kafka "
            f"{kafka['delivered_spans']:,} spans delivered ({kafka['aggregates_delivered']:,} "
            f"overflow aggregates), {kafka['dropped_spans']:,} dropped; Redis budgets "
            f"{redis['records_delivered']:,} records delivered, {redis['records_dropped']:,} "
            f"dropped. The Tansu broker keeps topics in memory, so its restart also loses "
            "the topic (recreated on the next produce).",
        ]
    )
    metrics = [
        Metric(
            f"Memory: RSS at {RATE:,} spans/s, every exporter on",
            ours_rss,
            "MiB",
            vs_baseline=f"{ours_rss - base_rss:+.1f} MiB over BatchSpanProcessor alone "
            f"({ours_rate:,.0f} spans/s reached)",
            fmt=".1f",
        )
    ]
    for name in phases:
        metrics.append(
            Metric(
                f"Memory: RSS slope, 2nd half of a {timeline.outage:g} s {name} outage",
                slopes[name],
                "MiB/min",
                target=SLOPE_TARGET,
                vs_baseline=f"peak {growth[name]:+.1f} MiB over the start; {bound}"
                if name == "broker"
                else f"peak {growth[name]:+.1f} MiB over the start",
                fmt="+.2f",
            )
        )
    return Result("memory", body, metrics)


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        config, seconds, params = args.worker
        work(config, float(seconds), json.loads(params))
        return
    finish(run(args.quick), args)


if __name__ == "__main__":
    main()
