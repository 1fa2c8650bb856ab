"""RedisBudgetExporter against a real redis-server: aggregation, fences, faults, processes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from _processes import in_forked_child
from _wait import wait_for
from otelcost.budget import Budget, RedisBudgetStore
from otelcost.exporters import CostExportResult, RedisBudgetExporter
from otelcost.record import CostRecord

TS = 1_764_236_400_123
UNIT = 1_000_000_000
ROOT = Path(__file__).resolve().parents[2]


def rec(service: str = "svc", cost: float = 0.001, error: str | None = None) -> CostRecord:
    return CostRecord(
        trace_id="0" * 31 + "1",
        span_id="0" * 15 + "1",
        service=service,
        operation="GET /x",
        cost_amount=0.0 if error else cost,
        currency="USD",
        duration_ms=1.0,
        timestamp=TS,
        error=error,
    )


def spend(client: redis.Redis, service: str = "svc") -> int:
    return RedisBudgetStore(client).status(service).budgets[0].spend_nanos


def evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.fixture
def exporters() -> Iterator[list[RedisBudgetExporter]]:
    made: list[RedisBudgetExporter] = []
    yield made
    for exporter in made:
        exporter.shutdown(timeout_millis=2_000)


BUDGETS = [Budget("*", 1_000_000, "24h")]


def test_one_script_call_per_service_per_flush(
    redis_server: Any, redis_client: redis.Redis, exporters: list[RedisBudgetExporter]
) -> None:
    exporter = RedisBudgetExporter(redis_server.url, BUDGETS, flush_interval=60)
    exporters.append(exporter)
    exporter.store.apply("warm-up", 0)  # load the script before counting
    redis_client.config_resetstat()
    rng = random.Random(7)
    expected: dict[str, int] = {"a": 0, "b": 0, "c": 0}
    for _ in range(100):
        batch = [rec(rng.choice("abc"), rng.randrange(1, 10**6) / UNIT) for _ in range(100)]
        for record in batch:
            expected[record.service] += record.cost_nanos
        assert exporter.export(batch) is CostExportResult.SUCCESS
    assert exporter.force_flush(5_000)
    assert evalsha_calls(redis_client) == 3  # 10,000 records, 3 services: 3 calls
    assert {s: spend(redis_client, s) for s in expected} == expected
    stats = exporter.stats()
    assert stats["records"] == stats["records_delivered"] == 10_000
    assert stats["nanos_delivered"] == sum(expected.values())
    assert stats["flushes"] == 3
    assert stats["records_dropped"] == stats["nanos_dropped"] == 0


def test_unpriced_records_add_nothing_but_are_counted(
    redis_client: redis.Redis, exporters: list[RedisBudgetExporter]
) -> None:
    exporter = RedisBudgetExporter(redis_client, BUDGETS)
    exporters.append(exporter)
    exporter.export([rec(cost=0.5), rec(error="PricingNotFoundError: svc:GET /x")])
    assert exporter.force_flush(5_000)
    assert spend(redis_client) == UNIT // 2
    stats = exporter.stats()
    assert (stats["records"], stats["records_unpriced"], stats["records_delivered"]) == (2, 1, 2)


def test_flushes_early_when_a_delta_passes_one_percent_of_a_budget(
    redis_client: redis.Redis, exporters: list[RedisBudgetExporter]
) -> None:
    exporter = RedisBudgetExporter(
        redis_client, [Budget("svc", 100, "1h"), Budget("svc", 1000)], flush_interval=3600
    )
    exporters.append(exporter)
    exporter.export([rec(cost=0.5)])  # 0.5% of the smallest budget: waits for the interval
    exporter.export([rec(cost=0.6)])  # now 1.1%: flushed at once
    wait_for(lambda: exporter.stats()["flushes"] == 1)
    assert spend(redis_client) == 1_100_000_000


class StoreCalls:
    """A store that notes the name of every thread that calls one of its methods."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.threads: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.threads.add(threading.current_thread().name)
            return attr(*args, **kwargs)

        return call


def test_redis_stopped_mid_run_then_restarted(
    redis_server: Any, exporters: list[RedisBudgetExporter]
) -> None:
    exporter = RedisBudgetExporter(redis_server.url, BUDGETS, flush_interval=0.05)
    exporters.append(exporter)
    exporter.export([rec(cost=1.0)])
    assert exporter.force_flush(5_000)
    redis_server.stop()  # no persistence: what was applied before is gone with it
    watch = exporter.store = StoreCalls(exporter.store)  # type: ignore[assignment]
    held = 0
    for i in range(200):
        batch = [rec(cost=(i + 1) / 1000)]
        assert exporter.export(batch) is CostExportResult.SUCCESS
        held += batch[0].cost_nanos
        time.sleep(0.005)
    wait_for(lambda: exporter.stats()["flush_errors"] > 0)
    # export never waits for Redis: only the flusher thread ever called the store (a
    # thread, not a wall-clock bound, which a loaded machine can break with no wait at all).
    assert watch.threads == {"otelcost-budget-flusher"}, watch.threads
    assert exporter.stats()["held_nanos"] == held
    assert not exporter.force_flush(200)
    redis_server.start()
    exporter.export([rec(cost=0.25)])
    assert exporter.force_flush(10_000)
    client = redis_server.client()
    assert spend(client) == held + UNIT // 4  # every held delta landed, exactly once
    stats = exporter.stats()
    assert stats["records_dropped"] == stats["held_nanos"] == 0
    client.close()


def test_lost_replies_are_retried_with_the_same_fence(
    redis_server: Any, redis_client: redis.Redis, exporters: list[RedisBudgetExporter]
) -> None:
    # A paused server queues the commands; the client times out and retries. When the
    # server resumes it runs every queued copy: the fence lets exactly one of them count.
    exporter = RedisBudgetExporter(redis_server.url, BUDGETS, flush_interval=3600)
    exporters.append(exporter)
    exporter.store.apply("warm-up", 0)
    redis_client.config_resetstat()
    exporter.export([rec(cost=0.125)])
    redis_server.pause()
    try:
        assert not exporter.force_flush(1_500)
    finally:
        redis_server.resume()
    assert exporter.force_flush(10_000)
    assert evalsha_calls(redis_client) >= 2
    assert spend(redis_client) == UNIT // 8


def test_spend_held_too_long_is_dropped_and_counted(
    redis_server: Any, redis_client: redis.Redis, exporters: list[RedisBudgetExporter]
) -> None:
    now = [1000.0]
    exporter = RedisBudgetExporter(
        redis_server.url, BUDGETS, flush_interval=3600, max_hold=60, monotonic=lambda: now[0]
    )
    exporters.append(exporter)
    redis_server.stop()
    exporter.export([rec(cost=0.5), rec(cost=0.25)])
    assert not exporter.force_flush(100)
    now[0] += 61
    redis_server.start()
    assert exporter.force_flush(5_000)
    stats = exporter.stats()
    assert (stats["records_dropped"], stats["nanos_dropped"]) == (2, 750_000_000)
    assert RedisBudgetStore(redis_server.client()).services() == []


def test_services_beyond_the_bound_are_dropped(
    redis_client: redis.Redis, exporters: list[RedisBudgetExporter]
) -> None:
    exporter = RedisBudgetExporter(redis_client, BUDGETS, max_services=2, flush_interval=3600)
    exporters.append(exporter)
    exporter.export([rec("a"), rec("b"), rec("c", cost=0.5)])
    assert exporter.stats()["records_dropped"] == 1
    assert exporter.stats()["nanos_dropped"] == UNIT // 2
    assert exporter.force_flush(5_000)
    assert RedisBudgetStore(redis_client).services() == ["a", "b"]


def test_throttled_service_is_re_evaluated_without_traffic(
    redis_client: redis.Redis, exporters: list[RedisBudgetExporter]
) -> None:
    clock = [1_764_288_000_000]
    exporter = RedisBudgetExporter(
        redis_client,
        [Budget("svc", 1, "1h", consecutive=10_000)],
        clock=lambda: clock[0],
        flush_interval=0.05,
        heartbeat=0.1,
    )
    exporters.append(exporter)
    exporter.export([rec(cost=2.0)])
    wait_for(lambda: redis_client.exists("enforce:throttle:{svc}") == 1)
    clock[0] += 3_600_000  # the spend left the rolling hour; no new records arrive
    wait_for(lambda: redis_client.exists("enforce:throttle:{svc}") == 0)
    wait_for(lambda: exporter.stats()["throttled_services"] == 0)


def test_shutdown_delivers_and_later_exports_are_dropped(
    redis_client: redis.Redis,
) -> None:
    exporter = RedisBudgetExporter(redis_client, BUDGETS, flush_interval=3600)
    exporter.export([rec(cost=0.5)])
    exporter.shutdown(5_000)
    assert spend(redis_client) == UNIT // 2
    assert exporter.export([rec(cost=0.25)]) is CostExportResult.FAILURE
    assert (exporter.stats()["records_dropped"], exporter.stats()["nanos_dropped"]) == (
        1,
        UNIT // 4,
    )


_WORKER = textwrap.dedent(
    """
    import random, sys
    from otelcost.budget import Budget
    from otelcost.exporters import RedisBudgetExporter
    from otelcost.record import CostRecord

    url, seed = sys.argv[1], int(sys.argv[2])
    exporter = RedisBudgetExporter(url, [Budget("*", 10**6)], flush_interval=0.01)
    rng = random.Random(seed)
    total = 0
    print("ready", flush=True)
    sys.stdin.readline()  # both processes start together
    for i in range(400):
        batch = [
            CostRecord("0" * 32, "0" * 16, rng.choice(["a", "b"]), "op",
                       rng.randrange(1, 10**7) / 1e9, "USD", 1.0, 1764236400123)
            for _ in range(50)
        ]
        total += sum(r.cost_nanos for r in batch)
        exporter.export(batch)
        if i % 10 == 9:
            assert exporter.force_flush(10_000)
    exporter.shutdown(20_000)
    stats = exporter.stats()
    assert stats["records_dropped"] == 0, stats
    print(total, stats["flushes"], flush=True)
    """
)


@pytest.mark.slow
def test_two_processes_flushing_concurrently_give_exact_totals(
    redis_server: Any, redis_client: redis.Redis
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, redis_server.url, str(seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for seed in (1, 2)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline() == "ready\n"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    results = []
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        total, flushes = map(int, out.split())
        results.append(total)
        assert flushes >= 80  # each of 40 force_flush rounds (or the thread) flushed a and b
    assert spend(redis_client, "a") + spend(redis_client, "b") == sum(results)


def test_fork_gives_the_child_its_own_producer_and_no_parent_spend(
    redis_client: redis.Redis, exporters: list[RedisBudgetExporter]
) -> None:
    exporter = RedisBudgetExporter(redis_client, BUDGETS, flush_interval=3600)
    exporters.append(exporter)
    exporter.export([rec(cost=1.0)])  # pending in the parent when it forks

    def child() -> str:
        exporter.export([rec(cost=0.5)])
        ok = exporter.force_flush(5_000)
        return f"{exporter.producer} {int(ok)}"

    child_producer, ok = in_forked_child(child).split()
    assert ok == "1"
    assert child_producer != exporter.producer
    assert spend(redis_client) == UNIT // 2  # only the child's own record so far
    assert exporter.force_flush(5_000)
    assert spend(redis_client) == UNIT + UNIT // 2
