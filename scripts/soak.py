"""Soak: a sustained span rate through every exporter for minutes, then an exact reconciliation.

Not part of CI. Starts a private redis-server and Tansu broker (tests/_servers.py), then in
this process ends spans with the OpenTelemetry SDK (one TracerProvider per service, all
feeding one CostSpanProcessor) at ``--rate`` spans/s for ``--minutes``, into every exporter
at once: InMemoryCostExporter, MetricsCostExporter, KafkaCostExporter and
RedisBudgetExporter (database 0). ``otelcost enforce`` runs meanwhile as a separate process
into database 1. Every ``--every`` seconds it records this process's RSS and CPU, the
enforcer's RSS, the queues and the counters (JSON lines in ``--out``).

At the end it flushes, reads the topic back and lets the enforcer drain, then checks that
the spans' ``cost.amount``, the in-memory totals, the topic, and both Redis paths hold the
same number of nano-units, and prints a Markdown summary (the figures in
docs/reliability.md come from it). Exit 0 when everything reconciles and nothing was
dropped, 1 otherwise.

    .venv/bin/python scripts/soak.py [--minutes 10] [--rate 5000] [--out soak.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's private-server helpers

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402

from _servers import KafkaBroker, RedisServer, find_redis_binary, find_tansu_binary  # noqa: E402
from otelcost import CostSpanProcessor  # noqa: E402
from otelcost.budget import Budget, RedisBudgetStore  # noqa: E402
from otelcost.exporters import (  # noqa: E402
    InMemoryCostExporter,
    KafkaCostExporter,
    MetricsCostExporter,
    RedisBudgetExporter,
)
from otelcost.reconcile import CostSumSpanExporter, rolling_spend, topic_totals  # noqa: E402

SERVICES = ("checkout", "search", "payments", "llm-gateway", "catalog", "auth")
PRICING = {
    "version": "soak",
    "currency": "USD",
    "prices": {
        "checkout:POST /orders": {"per_ms": 2.1e-6, "per_request": 1e-6},
        "llm-gateway:*": {
            "per_unit": {"gen_ai.usage.input_tokens": 3e-6, "gen_ai.usage.output_tokens": 1.5e-5}
        },
        "*:GET /health": None,
        "*:*": {"per_ms": 5e-7, "per_request": 2e-7},
    },
}
ROUTES = ("POST /orders", "GET /items/{id}", "GET /search", "GET /health", "PUT /cart/{id}")
BUDGETS = [Budget("*", limit=1e9, period="24h")]
TICK = 0.01
_MAX_LAG_S = 0.5
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def rss_mib(pid: int | str = "self") -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Soak:
    def __init__(self, args: argparse.Namespace, redis: RedisServer, broker: KafkaBroker) -> None:
        self.args = args
        self.redis = redis
        self.broker = broker
        self.topic = broker.create_topic(f"soak-{os.getpid()}", partitions=3)
        self.memory = InMemoryCostExporter()
        self.metrics = MetricsCostExporter(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        self.kafka = KafkaCostExporter(broker.bootstrap, self.topic)
        self.redis_exporter = RedisBudgetExporter(redis.url, BUDGETS)
        self.reference = CostSumSpanExporter()
        self.processor = CostSpanProcessor(
            PRICING,
            [self.memory, self.metrics, self.kafka, self.redis_exporter],
            span_processors=[SimpleSpanProcessor(self.reference)],
        )
        self.providers = []
        for service in SERVICES:
            provider = TracerProvider(
                resource=Resource.create({"service.name": service}), shutdown_on_exit=False
            )
            provider.add_span_processor(self.processor)
            self.providers.append(provider)
        self.enforcer_url = f"redis://{redis.host}:{redis.port}/1"
        self.enforcer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otelcost.cli",
                "enforce",
                "--bootstrap-servers",
                broker.bootstrap,
                "--redis-url",
                self.enforcer_url,
                "--topic",
                self.topic,
                "--group",
                f"soak-{os.getpid()}",
                "--budgets",
                str(self._budgets_file()),
                "--idle-timeout",
                "10",
                "--json",
                *(f"-X{k}={v}" for k, v in FAST_GROUP.items()),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.ended = 0
        self.skipped_s = 0.0
        self.samples: list[dict[str, Any]] = []
        self._cpu = self._at = 0.0  # CPU seconds and monotonic time of the last sample

    def _budgets_file(self) -> Path:
        path = Path(tempfile.mkdtemp()) / "budgets.json"
        path.write_text(json.dumps({"budgets": [{"service": "*", "limit": 1e9, "period": "24h"}]}))
        return path

    def sample(self, started: float) -> None:
        now = time.monotonic()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        cpu_pct = 100 * (cpu - self._cpu) / max(now - self._at, 1e-9)
        self._cpu, self._at = cpu, now
        stats = self.processor.stats()
        kafka = self.kafka.stats()
        redis = self.redis_exporter.stats()
        line = {
            "t": round(now - started, 1),
            "spans_ended": self.ended,
            "skipped_s": round(self.skipped_s, 2),
            "rss_mib": round(rss_mib(), 1),
            "enforce_rss_mib": round(rss_mib(self.enforcer.pid), 1),
            "cpu_pct": round(cpu_pct, 1),
            "span_queue": stats["queue_size"],
            "record_queue": stats["record_queue_size"],
            "spans_dropped": stats["spans_dropped"],
            "records_dropped": stats["records_dropped"],
            "kafka_in_queue": kafka["in_queue"],
            "kafka_delivered_spans": kafka["delivered_spans"],
            "kafka_dropped_spans": kafka["dropped_spans"],
            "kafka_overflowed": kafka["overflowed"],
            "redis_flushes": redis["flushes"],
            "redis_held_nanos": redis["held_nanos"],
            "redis_nanos_dropped": redis["nanos_dropped"],
        }
        self.samples.append(line)
        if self.args.out:
            with open(self.args.out, "a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)

    def drive(self) -> None:
        tracers = [p.get_tracer("soak") for p in self.providers]
        rng = random.Random(5)
        per_tick = max(1, round(self.args.rate * TICK))
        seconds = self.args.minutes * 60
        stop = threading.Event()
        started = time.monotonic()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._cpu, self._at = usage.ru_utime + usage.ru_stime, started

        def sampler() -> None:
            while not stop.wait(self.args.every):
                self.sample(started)

        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        tick = 0
        while time.monotonic() - started < seconds:
            end = time.time_ns()
            for i in range(per_tick):
                n = self.ended + i
                tracer = tracers[n % len(tracers)]
                attributes: dict[str, Any] = {
                    "http.request.method": ROUTES[n % len(ROUTES)].split()[0],
                    "http.route": ROUTES[n % len(ROUTES)].split()[1],
                }
                if n % len(tracers) == 3:  # llm-gateway
                    attributes["gen_ai.usage.input_tokens"] = rng.randrange(10, 4000)
                    attributes["gen_ai.usage.output_tokens"] = rng.randrange(1, 800)
                span = tracer.start_span(
                    ROUTES[n % len(ROUTES)],
                    attributes=attributes,
                    start_time=end - rng.randrange(100_000, 400_000_000),
                )
                span.end(end_time=end)
            self.ended += per_tick
            tick += 1
            delay = started + tick * TICK - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -_MAX_LAG_S:
                # Stalled (a busy machine): skip the missed ticks instead of bursting to catch
                # up, so the rate stays the sustained one; the skipped time is reported.
                skipped = int(-delay / TICK)
                tick += skipped
                self.skipped_s += skipped * TICK
        stop.set()
        thread.join()
        self.sample(started)

    def finish(self) -> dict[str, Any]:
        flushed = self.processor.force_flush(120_000)
        self.processor.shutdown(60_000)
        stats = self.processor.stats()
        kafka = self.kafka.stats()
        redis = self.redis_exporter.stats()
        on_topic = topic_totals(
            self.broker.bootstrap, self.topic, expected_spans=kafka["delivered_spans"]
        )
        try:
            out, _ = self.enforcer.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            self.enforcer.send_signal(signal.SIGTERM)
            out, _ = self.enforcer.communicate(timeout=60)
        enforced = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        memory_nanos = sum(t.nanos for t in self.memory.totals().values())
        exporter_spend = rolling_spend(RedisBudgetStore(self.redis.url, BUDGETS), SERVICES)
        enforce_spend = rolling_spend(RedisBudgetStore(self.enforcer_url, BUDGETS), SERVICES)
        totals = {
            "span attributes (cost.amount)": self.reference.nanos,
            "in-memory exporter": memory_nanos,
            "Kafka topic": on_topic.nanos,
            "Redis, exporter path": exporter_spend,
            "Redis, enforce path": enforce_spend,
        }
        dropped = {
            "spans_dropped": stats["spans_dropped"],
            "records_dropped": stats["records_dropped"],
            "kafka_dropped_spans": kafka["dropped_spans"],
            "redis_nanos_dropped": redis["nanos_dropped"],
            "enforce_dlq": enforced.get("dlq", -1),
        }
        sinks = list(totals.values())[1:]
        counted = stats["records_dropped"] + kafka["dropped_spans"]
        return {
            "flushed": flushed,
            "spans_ended": self.ended,
            "skipped_s": round(self.skipped_s, 2),
            "spans_priced": stats["spans_priced"],
            "spans_unpriced": stats["spans_unpriced"],
            "topic_messages": on_topic.messages,
            "topic_spans": on_topic.spans,
            "enforce": enforced,
            "totals": totals,
            "dropped": dropped,
            # Exact: every sink holds the spans' total. Otherwise the sinks must still agree
            # with each other and miss exactly the records the counters say were dropped.
            "reconciled": len(set(totals.values())) == 1,
            "shortfall_counted": len(set(sinks)) == 1
            and stats["spans_priced"] - on_topic.spans == counted
            and not redis["nanos_dropped"],
        }


def summary(
    args: argparse.Namespace, samples: Sequence[dict[str, Any]], final: dict[str, Any]
) -> str:
    """Markdown: the run, RSS over time (one row a minute), the totals."""
    lines = [
        f"Rate {args.rate} spans/s for {args.minutes} min, {len(SERVICES)} services; "
        f"{final['spans_ended']} spans ended.",
        "",
        "| t (s) | spans ended | RSS app (MiB) | RSS enforce (MiB) | CPU app (%) "
        "| span queue | record queue | Kafka in queue | dropped |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    step = max(1, round(60 / args.every))
    chosen = [*samples[::step], samples[-1]] if samples else []
    seen: set[float] = set()
    for s in chosen:
        if s["t"] in seen:
            continue
        seen.add(s["t"])
        dropped = s["spans_dropped"] + s["records_dropped"] + s["kafka_dropped_spans"]
        lines.append(
            f"| {s['t']:.0f} | {s['spans_ended']} | {s['rss_mib']:.1f} | "
            f"{s['enforce_rss_mib']:.1f} | {s['cpu_pct']:.0f} | {s['span_queue']} | "
            f"{s['record_queue']} | {s['kafka_in_queue']} | {dropped} |"
        )
    lines += ["", "| sink | total (nano-units) |", "|---|---|"]
    lines += [f"| {sink} | {nanos} |" for sink, nanos in final["totals"].items()]
    lines += [
        "",
        f"Drop counters: {final['dropped']}; every sink exact: {final['reconciled']}; "
        f"shortfall equals the counted drops: {final['shortfall_counted']}; ticks skipped "
        f"by a stalled generator: {final['skipped_s']} s.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=5000, help="spans per second")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--out", help="append the samples to this JSON-lines file")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="otelcost-soak-"))
    redis = RedisServer(find_redis_binary(), workdir / "redis")
    broker = KafkaBroker(find_tansu_binary(), workdir / "tansu")
    redis.start()
    broker.start()
    soak: Soak | None = None
    try:
        soak = Soak(args, redis, broker)
        soak.drive()
        final = soak.finish()
    finally:
        if soak is not None and soak.enforcer.poll() is None:
            soak.enforcer.kill()
        broker.stop()
        redis.stop()
    print(json.dumps(final, indent=2))
    print(summary(args, soak.samples, final))
    ok = final["reconciled"] and final["flushed"] and not any(final["dropped"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
