"""MetricsCostExporter through the SDK's InMemoryMetricReader (and the Prometheus reader)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric

from _processes import in_forked_child
from _records import cost_record
from otelcost.exporters import CostExportResult, MetricsCostExporter
from otelcost.exporters._budget_poll import BudgetPoller
from otelcost.money import from_nanos, to_nanos
from otelcost.record import CostRecord

TS = 1_764_236_400_123


def rec(
    service: str = "payment-svc",
    operation: str = "POST /api/v2/payments",
    cost: float = 0.0,
    *,
    error: str | None = None,
    currency: str = "USD",
    span_count: int = 1,
) -> CostRecord:
    return cost_record(
        service=service,
        operation=operation,
        cost_amount=cost,
        currency=currency,
        duration_ms=1.5,
        timestamp=TS,
        error=error,
        aggregate=span_count > 1,
        span_count=span_count,
    )


@dataclass
class Metrics:
    provider: MeterProvider
    reader: InMemoryMetricReader

    def exporter(self, **kw: Any) -> MetricsCostExporter:
        return MetricsCostExporter(self.provider, **kw)

    def collect(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return {
            m.name: m
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            if sm.scope.name == "otelcost"
            for m in sm.metrics
        }

    def points(self, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
        metric = self.collect().get(name)
        if metric is None:
            return {}
        return {
            tuple(sorted((p.attributes or {}).items())): p.value  # type: ignore[union-attr]
            for p in metric.data.data_points
        }


@pytest.fixture
def m() -> Iterator[Metrics]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield Metrics(provider, reader)
    provider.shutdown()


def key(**attrs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(attrs.items()))


def test_cost_counter_by_service_and_operation_with_currency_unit(m: Metrics) -> None:
    exporter = m.exporter()
    assert exporter.export([rec(cost=0.25), rec(cost=0.5), rec("search", "GET /q", 1e-6)]) == (
        CostExportResult.SUCCESS
    )
    metric = m.collect()["otelcost.cost"]
    assert metric.unit == "USD"
    assert metric.data.is_monotonic  # type: ignore[union-attr]
    got = {
        tuple(sorted((p.attributes or {}).items())): p.value  # type: ignore[union-attr]
        for p in metric.data.data_points
    }
    assert got == {
        key(service="payment-svc", operation="POST /api/v2/payments"): 0.75,
        key(service="search", operation="GET /q"): 1e-6,
    }


def test_cost_total_is_exact_where_a_float_running_sum_drifts(m: Metrics) -> None:
    exporter = m.exporter()
    batch = [rec(cost=0.1)] * 1000
    naive = 0.0
    for _ in range(100):
        exporter.export(batch)
        for r in batch:
            naive += r.cost_amount
    assert naive != 10_000.0  # what summing floats per span would report
    assert m.points("otelcost.cost") == {
        key(service="payment-svc", operation="POST /api/v2/payments"): 10_000.0
    }


def test_cumulative_value_grows_across_collections(m: Metrics) -> None:
    exporter = m.exporter()
    exporter.export([rec(cost=1.0)])
    assert list(m.points("otelcost.cost").values()) == [1.0]
    exporter.export([rec(cost=2.0)])
    assert list(m.points("otelcost.cost").values()) == [3.0]


def test_priced_and_unpriced_counts_with_reason(m: Metrics) -> None:
    exporter = m.exporter()
    exporter.export(
        [
            rec(cost=0.1),
            rec(error="pricing_stale: pricing table older than ttl (last sync 12:00:01)"),
            rec(error="pricing_stale: pricing table older than ttl (last sync 12:00:02)"),
            rec("search", error="pricing_not_found: no price for search:GET /q"),
            rec("search", error="no colon here"),
            rec("search", error=":"),
            rec("batch", cost=2.0, span_count=40),
            rec("batch", error="pricing_stale: x", span_count=7),
        ]
    )
    assert m.points("otelcost.spans.priced") == {
        key(service="payment-svc"): 1,
        key(service="batch"): 40,
    }
    assert m.points("otelcost.spans.unpriced") == {
        key(service="payment-svc", reason="pricing_stale"): 2,
        key(service="search", reason="pricing_not_found"): 1,
        key(service="search", reason="no colon here"): 1,
        key(service="search", reason="unknown"): 1,
        key(service="batch", reason="pricing_stale"): 7,
    }
    assert exporter.stats()["spans"] == 1 + 2 + 1 + 1 + 1 + 40 + 7


def test_reason_is_bounded_in_length(m: Metrics) -> None:
    exporter = m.exporter()
    exporter.export([rec(error="x" * 500)])
    ((attrs, _),) = m.points("otelcost.spans.unpriced").items()
    assert dict(attrs)["reason"] == "x" * 64


def test_other_currency_is_not_added_to_the_cost(m: Metrics) -> None:
    exporter = m.exporter(currency="EUR")
    exporter.export([rec(cost=1.0, currency="USD"), rec(cost=2.0, currency="EUR")])
    assert m.collect()["otelcost.cost"].unit == "EUR"
    assert list(m.points("otelcost.cost").values()) == [2.0]
    assert m.points("otelcost.spans.unpriced") == {
        key(service="payment-svc", reason="currency_mismatch"): 1
    }
    assert exporter.stats()["currency_mismatch"] == 1


def test_series_are_bounded_and_fold_into_other(m: Metrics) -> None:
    exporter = m.exporter(max_series=3)
    exporter.export(
        [
            rec("a", "op1", 1.0),
            rec("a", "op2", 1.0),
            rec("b", "op1", 1.0),
            rec("c", "op9", 1.0),  # full: no (c, OTHER) yet -> (OTHER, OTHER)
            rec("a", "op3", 1.0),  # full: (a, OTHER) does not exist -> (OTHER, OTHER)
            rec("a", "op1", 1.0),  # existing series still counts
        ]
    )
    assert m.points("otelcost.cost") == {
        key(service="a", operation="op1"): 2.0,
        key(service="a", operation="op2"): 1.0,
        key(service="b", operation="op1"): 1.0,
        key(service="OTHER", operation="OTHER"): 2.0,
    }
    assert exporter.stats()["folded"] == 2
    total = sum(m.points("otelcost.cost").values())
    assert total == 6.0  # folding moves cost, never loses it


def test_max_series_must_leave_room_for_other(m: Metrics) -> None:
    with pytest.raises(ValueError, match="max_series"):
        m.exporter(max_series=1)


def test_export_after_shutdown_is_dropped_and_counted(m: Metrics) -> None:
    exporter = m.exporter()
    exporter.export([rec(cost=1.0)])
    exporter.shutdown()
    assert exporter.export([rec(cost=5.0), rec(cost=5.0)]) == CostExportResult.FAILURE
    assert exporter.stats()["dropped"] == 2
    assert list(m.points("otelcost.cost").values()) == [1.0]


def test_concurrent_exports_give_exact_totals(m: Metrics) -> None:
    exporter = m.exporter()
    batch = [rec(cost=0.000_001_7)] * 500

    def work() -> None:
        for _ in range(20):
            exporter.export(batch)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert list(m.points("otelcost.cost").values()) == [from_nanos(8 * 20 * 500 * to_nanos(1.7e-6))]
    assert list(m.points("otelcost.spans.priced").values()) == [8 * 20 * 500]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_starts_from_zero(m: Metrics) -> None:
    exporter = m.exporter()
    exporter.export([rec(cost=3.0)])

    def child() -> str:  # what it would export
        exporter.export([rec(cost=0.5)])
        return repr(exporter.stats()["spans"])

    assert in_forked_child(child) == "1"
    assert list(m.points("otelcost.cost").values()) == [3.0]


# -- budget gauges -------------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodStatus:
    period: str
    limit: float
    spend: float

    @property
    def utilization(self) -> float:
        return self.spend / self.limit


@dataclass(frozen=True)
class ServiceStatus:
    throttled: bool
    budgets: tuple[PeriodStatus, ...]


@dataclass
class ScriptedStore:
    """A budget-status source whose answers (or failures, or hangs) the test controls.

    The real stores are exercised in test_metrics_budget_stores below; this one is for the
    faults a real store cannot be told to produce on demand (raising, hanging forever).
    """

    table: dict[str, ServiceStatus] = field(default_factory=dict)
    fail: bool = False
    hang: threading.Event | None = None
    reads: int = 0

    def services(self) -> Iterable[str]:
        self.reads += 1
        if self.hang is not None:
            self.hang.wait(30)
        if self.fail:
            raise ConnectionError("budget store down")
        return list(self.table)

    def status(self, service: str) -> ServiceStatus:
        return self.table[service]


def test_budget_utilization_gauge_is_a_ratio_per_service_and_period(m: Metrics) -> None:
    store = ScriptedStore(
        {
            "payment-svc": ServiceStatus(
                True, (PeriodStatus("24h", 500.0, 512.5), PeriodStatus("1h", 50.0, 5.0))
            ),
            "search": ServiceStatus(False, (PeriodStatus("24h", 100.0, 25.0),)),
        }
    )
    m.exporter(budget_store=store)
    metrics = m.collect()
    assert metrics["otelcost.budget.utilization"].unit == "1"
    assert m.points("otelcost.budget.utilization") == {
        key(service="payment-svc", period="24h"): 1.025,
        key(service="payment-svc", period="1h"): 0.1,
        key(service="search", period="24h"): 0.25,
    }
    assert m.points("otelcost.budget.spend")[key(service="search", period="24h")] == 25.0
    assert m.points("otelcost.budget.limit")[key(service="search", period="24h")] == 100.0
    assert m.points("otelcost.budget.throttled") == {
        key(service="payment-svc"): 1,
        key(service="search"): 0,
    }


def test_no_budget_gauges_without_a_store(m: Metrics) -> None:
    exporter = m.exporter()
    exporter.export([rec(cost=1.0)])
    assert not [name for name in m.collect() if name.startswith("otelcost.budget")]


def test_failing_store_reports_no_budget_points_and_counts_errors(m: Metrics) -> None:
    store = ScriptedStore(fail=True)
    exporter = m.exporter(budget_store=store, budget_refresh_interval=0.0)
    exporter.export([rec(cost=1.0)])
    metrics = m.collect()
    assert list(m.points("otelcost.cost").values()) == [1.0]
    assert (
        "otelcost.budget.utilization" not in metrics
        or not metrics["otelcost.budget.utilization"].data.data_points
    )
    assert exporter.stats()["budget_errors"] >= 1


def test_hanging_store_does_not_block_collection(m: Metrics) -> None:
    release = threading.Event()
    store = ScriptedStore(
        {"search": ServiceStatus(False, (PeriodStatus("24h", 100.0, 50.0),))}, hang=release
    )
    exporter = m.exporter(budget_store=store, budget_timeout=0.1, budget_refresh_interval=0.0)
    exporter.export([rec(cost=1.0)])
    try:
        started = time.monotonic()
        m.collect()
        m.collect()
        elapsed = time.monotonic() - started
        # Four gauge callbacks per collection, one read in flight: each waits <= 0.1 s.
        assert elapsed < 5.0
        assert store.reads == 1
    finally:
        release.set()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_poller_keeps_last_points_through_errors_until_stale() -> None:
    store = ScriptedStore({"search": ServiceStatus(False, (PeriodStatus("24h", 10.0, 5.0),))})
    clock = FakeClock()
    poller = BudgetPoller(store, refresh_interval=5.0, timeout=5.0, stale_after=60.0, clock=clock)
    assert [p.utilization for p in poller.points()] == [0.5]
    store.fail = True
    clock.now += 30
    assert [p.utilization for p in poller.points()] == [0.5]  # failed read: previous points
    assert poller.errors == 1
    clock.now += 31
    assert poller.points() == ()  # no successful read for > 60 s: report nothing
    store.fail = False
    store.table["search"] = ServiceStatus(False, (PeriodStatus("24h", 10.0, 7.5),))
    clock.now += 5
    assert [p.utilization for p in poller.points()] == [0.75]


def test_poller_reads_at_most_once_per_interval() -> None:
    store = ScriptedStore({"a": ServiceStatus(False, (PeriodStatus("1h", 1.0, 0.5),))})
    clock = FakeClock()
    poller = BudgetPoller(store, refresh_interval=5.0, timeout=5.0, stale_after=60.0, clock=clock)
    for _ in range(4):
        poller.points()
    assert store.reads == 1
    clock.now += 5
    poller.points()
    assert store.reads == 2


# -- Prometheus names -------------------------------------------------------------------------


def test_prometheus_names() -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    try:
        store = ScriptedStore({"a": ServiceStatus(False, (PeriodStatus("24h", 10.0, 2.5),))})
        exporter = MetricsCostExporter(provider, budget_store=store)
        exporter.export([rec("a", "GET /x", 0.5), rec("a", error="pricing_stale: old")])
        text = generate_latest(registry).decode()
    finally:
        provider.shutdown()
    samples = {line.split("{", 1)[0] for line in text.splitlines() if not line.startswith("#")}
    assert {
        "otelcost_cost_USD_total",
        "otelcost_spans_priced_total",
        "otelcost_spans_unpriced_total",
        "otelcost_budget_utilization",
        "otelcost_budget_spend_USD",
        "otelcost_budget_limit_USD",
        "otelcost_budget_throttled",
    } <= samples


# -- the real budget stores -------------------------------------------------------------------


def test_metrics_budget_stores_in_memory(m: Metrics) -> None:
    from otelcost.budget import Budget, InMemoryBudgetStore
    from otelcost.money import to_nanos

    store = InMemoryBudgetStore([Budget("checkout", 10.0, period="1h"), Budget("*", 100.0)])
    store.apply("checkout", to_nanos(2.5))
    store.apply("search", to_nanos(120.0))  # over its 24h "*" budget: hard cap
    m.exporter(budget_store=store)
    assert m.points("otelcost.budget.utilization") == {
        key(service="checkout", period="1h"): 0.25,
        key(service="checkout", period="24h"): 0.025,
        key(service="search", period="24h"): 1.2,
    }
    assert m.points("otelcost.budget.throttled") == {
        key(service="checkout"): 0,
        key(service="search"): 1,
    }


@pytest.mark.integration
def test_metrics_budget_stores_redis(m: Metrics, redis_client: Any) -> None:
    from otelcost.budget import Budget, RedisBudgetStore
    from otelcost.money import to_nanos

    store = RedisBudgetStore(redis_client, [Budget("checkout", 10.0, period="1h")])
    store.apply("checkout", to_nanos(7.5))
    m.exporter(budget_store=store)
    assert m.points("otelcost.budget.utilization") == {key(service="checkout", period="1h"): 0.75}
    assert m.points("otelcost.budget.spend") == {key(service="checkout", period="1h"): 7.5}
    assert m.points("otelcost.budget.throttled") == {key(service="checkout"): 0}


@pytest.mark.integration
def test_redis_down_keeps_last_budget_points(
    m: Metrics, redis_client: Any, redis_server: Any
) -> None:
    from otelcost.budget import Budget, RedisBudgetStore
    from otelcost.money import to_nanos

    store = RedisBudgetStore(redis_server.url, [Budget("checkout", 10.0, period="1h")])
    store.apply("checkout", to_nanos(5.0))
    exporter = m.exporter(budget_store=store, budget_refresh_interval=0.0, budget_timeout=5.0)
    assert m.points("otelcost.budget.utilization") == {key(service="checkout", period="1h"): 0.5}
    redis_server.stop()
    exporter.export([rec("checkout", cost=1.0)])
    assert m.points("otelcost.budget.utilization") == {key(service="checkout", period="1h"): 0.5}
    assert list(m.points("otelcost.cost").values()) == [1.0]
    assert exporter.stats()["budget_errors"] >= 1
