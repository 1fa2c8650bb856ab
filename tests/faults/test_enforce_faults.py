"""``otelcost enforce`` faults while a live app streams its costs: SIGKILL, rebalancing.

The enforce path is kept in Redis database 1; the app's own RedisBudgetExporter uses
database 0, so each path's total is read on its own.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from _stack import (
    BUDGETS,
    FAST_GROUP,
    FIGURES,
    SERVICES,
    EnforcerThread,
    Ledger,
    Stack,
    assert_latency,
    db_url,
    wait_for,
)

from _servers import KafkaBroker, RedisServer
from otelcost.budget import RedisBudgetStore
from otelcost.reconcile import rolling_spend

_SHORT_SESSION = {"session.timeout.ms": 3000, "heartbeat.interval.ms": 300}


@pytest.fixture
def stack_args(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    kafka_broker: KafkaBroker,
    kafka_topic: str,
) -> dict[str, str]:
    return {
        "redis_url": redis_server.url,
        "bootstrap": kafka_broker.bootstrap,
        "topic": kafka_topic,
    }


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
def test_enforce_sigkilled_mid_batch_and_restarted_twice(
    redis_server: RedisServer,
    stack_args: dict[str, str],
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    budgets = tmp_path / "budgets.json"
    budgets.write_text(json.dumps({"budgets": [{"service": "*", "limit": 1e6}]}))
    enforce_url = db_url(redis_server.url, 1)
    argv = [
        sys.executable, "-m", "otelcost.cli", "enforce",
        "--bootstrap-servers", stack_args["bootstrap"], "--redis-url", enforce_url,
        "--topic", stack_args["topic"], "--group", f"faults-{uuid.uuid4().hex[:8]}",
        "--budgets", str(budgets), "--batch-size", "50",
        # A killed member holds its partitions until its session times out: keep it short.
        *(f"-X{k}={v}" for k, v in {**FAST_GROUP, **_SHORT_SESSION}.items()),
    ]  # fmt: skip
    store = RedisBudgetStore(enforce_url, BUDGETS)
    stack = Stack(**stack_args)
    try:
        baseline = stack.drive(1.0)
        with stack.driving() as faulted:
            for _ in range(2):  # killed twice, at different points of a batch
                before = rolling_spend(store, SERVICES)
                proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
                processes.append(proc)
                wait_for(lambda b=before: rolling_spend(store, SERVICES) > b, 60, "enforce")
                time.sleep(random.uniform(0.0, 0.3))
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        stack.flush()
        ledger = Ledger.read(stack, **stack_args)
        assert 0 < rolling_spend(store, SERVICES) < ledger.reference_nanos
        final = subprocess.run(
            [*argv, "--idle-timeout", "15", "--json"], capture_output=True, timeout=120, check=False
        )
    finally:
        stack.close()
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    stats = json.loads(final.stdout)
    assert_latency(baseline, faulted)
    ledger.check()
    assert not ledger.dropped
    assert rolling_spend(store, SERVICES) == ledger.reference_nanos
    assert stats["records"] == stats["applied"] + stats["duplicates"] and stats["dlq"] == 0
    FIGURES.update(enforce_replayed=stats["duplicates"], enforce_spend=ledger.reference_nanos)


@pytest.mark.slow
def test_two_enforcers_in_one_group_rebalancing(
    redis_server: RedisServer, stack_args: dict[str, str]
) -> None:
    group = f"faults-{uuid.uuid4().hex[:8]}"
    enforce_url = db_url(redis_server.url, 1)
    stack = Stack(**stack_args)
    second: EnforcerThread | None = None
    try:
        baseline = stack.drive(1.0)
        first = EnforcerThread(stack_args["bootstrap"], stack_args["topic"], enforce_url, group)
        with stack.driving() as faulted:
            wait_for(lambda: first.spend() > 0, 60, "the first enforcer")
            second = EnforcerThread(
                stack_args["bootstrap"], stack_args["topic"], enforce_url, group
            )
            # Both members hold partitions (the rebalance is done) before the first leaves:
            # every partition has traffic, so the second one consumes whatever it got.
            wait_for(lambda: second is not None and second.enforcer.stats()["batches"] > 0, 60, "b")
            left = first.stop()  # a second rebalance: its partitions move to the other
            time.sleep(1.0)
        stack.flush()
        ledger = Ledger.read(stack, **stack_args)
        wait_for(lambda: second is not None and second.spend() == ledger.reference_nanos, 60, "b")
        stayed = second.stop()
    finally:
        stack.close()
    assert_latency(baseline, faulted)
    ledger.check()
    assert not ledger.dropped
    for stats in (left, stayed):
        assert stats["records"] == stats["applied"] + stats["duplicates"] and stats["dlq"] == 0
    assert left["applied"] > 0 and stayed["applied"] > 0
    FIGURES.update(enforce_replayed=left["duplicates"] + stayed["duplicates"])
