"""BudgetExporter on the embedded store, the install() helper, and life without redis-py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _budget_support import UNIT, Clock

from otelcost.budget import (
    Budget,
    BudgetExporter,
    BudgetGuard,
    InMemoryBudgetStore,
    budget_exporter,
)
from otelcost.exporters import CostExportResult, RedisBudgetExporter
from otelcost.record import CostRecord

ROOT = Path(__file__).resolve().parents[2]


def rec(service: str, cost: float) -> CostRecord:
    return CostRecord("0" * 32, "0" * 16, service, "op", cost, "USD", 1.0, 1_764_236_400_123)


def test_embedded_exporter_feeds_the_store_and_the_guard() -> None:
    clock = Clock()
    store = InMemoryBudgetStore([Budget("checkout", 1, "1h", consecutive=10_000)], clock=clock)
    exporter = BudgetExporter(store, flush_interval=3600)
    guard = BudgetGuard(store, max_staleness=0)
    try:
        assert (
            exporter.export([rec("checkout", 0.4), rec("search", 5.0)]) is CostExportResult.SUCCESS
        )
        assert store.services() == []  # nothing before the flush
        assert exporter.force_flush(1_000)
        assert store.status("checkout").budgets[0].spend_nanos == 400_000_000
        assert not guard.is_throttled("checkout")
        exporter.export([rec("checkout", 0.6)])
        assert exporter.force_flush(1_000)
        assert guard.is_throttled("checkout")
        assert exporter.stats()["throttled_services"] == 1
        assert exporter.stats()["nanos_delivered"] == 6 * UNIT
    finally:
        exporter.shutdown(1_000)


def test_budget_exporter_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTELCOST_BUDGETS", raising=False)
    monkeypatch.delenv("OTELCOST_REDIS_URL", raising=False)
    assert budget_exporter() is None  # no budgets: no exporter
    path = tmp_path / "budgets.json"
    path.write_text(json.dumps({"budgets": [{"service": "*", "limit": 5}]}))
    monkeypatch.setenv("OTELCOST_BUDGETS", str(path))
    embedded = budget_exporter()
    assert isinstance(embedded, BudgetExporter)
    assert isinstance(embedded.store, InMemoryBudgetStore)
    monkeypatch.setenv("OTELCOST_REDIS_URL", "redis://127.0.0.1:1/0")
    remote = budget_exporter(flush_interval=2.0)
    assert isinstance(remote, RedisBudgetExporter)
    assert remote.flush_interval == 2.0
    assert [b.limit for b in remote.store.budgets.budgets] == [5]
    for exporter in (embedded, remote):
        exporter.shutdown(100)


def test_bad_options_are_rejected() -> None:
    store = InMemoryBudgetStore()
    with pytest.raises(ValueError, match="flush_interval"):
        BudgetExporter(store, flush_interval=0)
    with pytest.raises(ValueError, match="early_fraction"):
        BudgetExporter(store, early_fraction=2)


def test_without_redis_py_only_what_needs_it_fails() -> None:
    """Plain redis://, rediss:// and unix:// URLs run otelcost's own client; cluster and
    sentinel URLs and ``RedisBudgetStore.client`` need the redis extra, and say so."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["redis"] = None  # as if the redis extra were not installed
        import otelcost, otelcost.budget, otelcost.exporters
        from otelcost.budget import Budget, BudgetExporter, InMemoryBudgetStore, RedisBudgetStore
        store = InMemoryBudgetStore([Budget("s", 1)])
        assert store.apply("s", 2 * 10**9).throttled
        plain = RedisBudgetStore("redis://127.0.0.1:1/0")
        cluster = "redis+cluster://127.0.0.1:1"
        for make in (lambda: RedisBudgetStore(cluster), lambda: plain.client):
            try:
                make()
            except ImportError as exc:
                print(exc)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    needs = "Redis support needs the redis package: pip install 'otelcost[redis]'"
    assert out.splitlines() == [needs, needs]


def test_a_service_the_store_rejects_does_not_hold_up_the_others() -> None:
    store = InMemoryBudgetStore([Budget("*", 100)])
    exporter = BudgetExporter(store, flush_interval=3600)
    try:
        exporter.export([rec("x" * 300, 1.0), rec("ok", 2.0)])  # a name too long for a key
        assert exporter.force_flush(1_000)
        assert store.status("ok").budgets[0].spend_nanos == 2 * UNIT
        stats = exporter.stats()
        assert (stats["records_dropped"], stats["nanos_dropped"]) == (1, UNIT)
        assert stats["flush_errors"] == 0
    finally:
        exporter.shutdown(1_000)
