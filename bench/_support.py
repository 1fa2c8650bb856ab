"""What several benchmarks set up alike: no-op OpenTelemetry exporters and private servers.

- ``NoopSpanExporter``: the user's span exporter of every baseline (it counts what it
  receives, and on request how many spans carry ``cost.amount``);
- ``noop_meter_provider()``: a MeterProvider whose reader collects every second into a
  no-op exporter, for MetricsCostExporter;
- ``backends(cpu)``: a private redis-server and Tansu broker (tests/_servers.py) pinned to
  one CPU, or the reason they could not be started.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

TESTS = Path(__file__).resolve().parent.parent / "tests"


class NoopSpanExporter(SpanExporter):
    """Accepts every span. ``inspect`` (off while timing) counts spans with ``cost.amount``."""

    def __init__(self) -> None:
        self.exported = 0
        self.priced = 0
        self.inspect = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        if self.inspect:
            self.priced += sum(1 for s in spans if s.attributes and "cost.amount" in s.attributes)
        return SpanExportResult.SUCCESS


class _NoopMetricExporter(MetricExporter):
    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def noop_meter_provider() -> MeterProvider:
    """A MeterProvider collected every second (a busy setting) into a no-op exporter."""
    reader = PeriodicExportingMetricReader(_NoopMetricExporter(), export_interval_millis=1_000)
    return MeterProvider(metric_readers=[reader])


@contextlib.contextmanager
def backends(cpu: int | None, prefix: str) -> Iterator[dict[str, Any] | str]:
    """A private redis-server and Tansu broker, pinned to ``cpu`` (None: not pinned).

    Yields ``{"bootstrap", "topic", "redis_url"}``, or why they could not be started.
    """
    sys.path.insert(0, str(TESTS))
    from _servers import (
        KafkaBroker,
        RedisServer,
        ServerUnavailableError,
        find_redis_binary,
        find_tansu_binary,
    )

    with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as tmp:
        try:
            broker = KafkaBroker(find_tansu_binary(), Path(tmp) / "tansu")
            redis_server = RedisServer(find_redis_binary(), Path(tmp) / "redis")
        except ServerUnavailableError as exc:
            yield str(exc).splitlines()[0]
            return
        try:
            broker.start()
            redis_server.start()
            if cpu is not None:
                for pid in (broker.pid, redis_server.pid):
                    if pid is not None:
                        os.sched_setaffinity(pid, {cpu})
            topic = broker.create_topic(f"{prefix}-{uuid.uuid4().hex[:8]}", partitions=3)
            yield {"bootstrap": broker.bootstrap, "topic": topic, "redis_url": redis_server.url}
        except ServerUnavailableError as exc:
            yield str(exc).splitlines()[0]
        finally:
            broker.stop()
            redis_server.stop()
