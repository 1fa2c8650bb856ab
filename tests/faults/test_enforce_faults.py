"""``otelcost enforce`` faults while a live app streams its costs: SIGKILL, rebalancing.

The enforce path is kept in Redis database 1; the app's own RedisBudgetExporter uses
database 0, so each path's total is read on its own.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from _stack import (
    BUDGETS,
    FIGURES,
    SERVICES,
    EnforcerThread,
    Ledger,
    Stack,
    assert_unharmed,
    db_url,
)

from _kafka import FAST_GROUP, consumer_argv, new_group, run_until_idle, sigkill_twice
from _servers import RedisServer
from _wait import wait_for
from otelcost.budget import RedisBudgetStore
from otelcost.reconcile import rolling_spend

_SHORT_SESSION = {"session.timeout.ms": 3000, "heartbeat.interval.ms": 300}


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
    argv = consumer_argv(
        "enforce", stack_args["bootstrap"], stack_args["topic"], new_group(),
        "--redis-url", enforce_url, "--budgets", str(budgets), batch_size=50,
        # A killed member holds its partitions until its session times out: keep it short.
        kafka_config={**FAST_GROUP, **_SHORT_SESSION},
    )  # fmt: skip
    store = RedisBudgetStore(enforce_url, BUDGETS)
    stack = Stack(**stack_args)
    try:
        baseline = stack.drive(1.0)
        with stack.driving() as faulted:  # killed twice, at different points of a batch
            sigkill_twice(argv, processes, lambda: rolling_spend(store, SERVICES))
        stack.flush()
        ledger = Ledger.read(stack, **stack_args)
        assert 0 < rolling_spend(store, SERVICES) < ledger.reference_nanos
        stats = run_until_idle(argv, idle=15, timeout=120)
    finally:
        stack.close()
    assert_unharmed(baseline, faulted, ledger)
    assert rolling_spend(store, SERVICES) == ledger.reference_nanos
    assert stats["records"] == stats["applied"] + stats["duplicates"] and stats["dlq"] == 0
    FIGURES.update(enforce_replayed=stats["duplicates"], enforce_spend=ledger.reference_nanos)


@pytest.mark.slow
def test_two_enforcers_in_one_group_rebalancing(
    redis_server: RedisServer, stack_args: dict[str, str], group: str
) -> None:
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
    assert_unharmed(baseline, faulted, ledger)
    for stats in (left, stayed):
        assert stats["records"] == stats["applied"] + stats["duplicates"] and stats["dlq"] == 0
    assert left["applied"] > 0 and stayed["applied"] > 0
    FIGURES.update(enforce_replayed=left["duplicates"] + stayed["duplicates"])
