"""Redis faults under a live instrumented app: unreachable, restarted, paused, flushed.

Each test drives the app with and without the fault, then reads every sink back. Redis
holds two paths apart: the RedisBudgetExporter's in database 0 and, where an enforcer
runs, ``otelcost enforce``'s in database 1.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from _stack import (
    EnforcerThread,
    Ledger,
    Stack,
    assert_latency,
    assert_unharmed,
    check_down_at_start,
    db_url,
)

from _kafka import new_group
from _servers import RedisServer
from _wait import wait_for


def test_redis_unreachable_at_start(redis_server: RedisServer, stack_args: dict[str, str]) -> None:
    check_down_at_start(
        redis_server,
        stack_args,
        lambda stack: stack.redis is not None and stack.redis.stats()["flush_errors"] > 0,
    )


def _persist_on_shutdown(client: redis.Redis) -> None:
    """Make the fixture's (non-persistent) server save its data when it is stopped, like a
    production Redis with persistence."""
    client.config_set("save", "3600 1")


@pytest.mark.slow
def test_redis_stopped_mid_run_and_restarted(
    redis_server: RedisServer, redis_client: redis.Redis, stack_args: dict[str, str]
) -> None:
    enforcer = EnforcerThread(
        stack_args["bootstrap"], stack_args["topic"], db_url(redis_server.url, 1), new_group()
    )
    stack = Stack(**stack_args)
    dump = Path(redis_server.workdir) / "dump.rdb"
    try:
        baseline = stack.drive(1.5)
        _persist_on_shutdown(redis_client)
        with stack.driving() as faulted:
            time.sleep(0.3)
            redis_server.stop()  # SIGTERM: Redis saves, then exits
            time.sleep(2.0)
            redis_server.start()
            time.sleep(1.0)
        assert stack.redis is not None and stack.redis.stats()["flush_errors"] > 0
        stack.flush()
        ledger = Ledger.read(stack, **stack_args)
        wait_for(lambda: enforcer.spend() == ledger.reference_nanos, 60, "the enforcer")
        enforced = enforcer.stop()
    finally:
        stack.close()
        dump.unlink(missing_ok=True)  # later restarts of the shared server start empty
    assert_unharmed(baseline, faulted, ledger)
    assert enforced["records"] == enforced["applied"] + enforced["duplicates"]
    assert enforced["store_errors"] > 0 and enforced["dlq"] == 0


@pytest.mark.slow
def test_redis_slowed_by_client_pause(
    redis_server: RedisServer, redis_client: redis.Redis, stack_args: dict[str, str]
) -> None:
    stack = Stack(**stack_args)
    try:
        baseline = stack.drive(1.5)
        with stack.driving() as faulted:
            time.sleep(0.3)
            # Every command of every client waits, as on an overloaded or failing-over Redis.
            redis_client.execute_command("CLIENT", "PAUSE", 2500, "ALL")
            time.sleep(3.0)
        stack.flush()
        ledger = Ledger.read(stack, **stack_args)
    finally:
        stack.close()
    # The guard met the paused Redis (its reads timed out) and the requests still never
    # waited out the 2.5 s pause: at most its timeout, once per backoff period.
    assert stack.guard is not None and stack.guard.errors > 0
    assert_latency(baseline, faulted)
    ledger.check()
    assert not ledger.dropped


@pytest.mark.slow
def test_redis_flushed_spend_restarts_and_the_stream_rebuilds_it(
    redis_server: RedisServer, redis_client: redis.Redis, stack_args: dict[str, str]
) -> None:
    """FLUSHALL (or a restart without persistence) loses the budgets' state.

    Defined behaviour: the rolling spend restarts from what is delivered after the loss
    (nothing is re-sent, nothing is counted twice, the exporters' counters still account
    for every nano-unit) and throttle flags are gone until the next evaluation. The Kafka
    stream keeps everything: replaying it with a new consumer group into an empty
    database rebuilds the exact spend.
    """
    enforcer = EnforcerThread(
        stack_args["bootstrap"], stack_args["topic"], db_url(redis_server.url, 1), new_group()
    )
    stack = Stack(**stack_args)
    try:
        baseline = stack.drive(1.5)
        stack.flush()
        assert stack.redis is not None
        before = int(stack.redis.stats()["nanos_delivered"])
        assert before == stack.reference.nanos > 0
        wait_for(lambda: enforcer.spend() == before, 60, "the enforcer before the flush")
        redis_client.flushall()
        faulted = stack.drive(2.0)
        stack.flush()
        ledger = Ledger.read(stack, **stack_args)
        after = ledger.reference_nanos - before
        wait_for(lambda: enforcer.spend() == after, 60, "the enforcer after the flush")
        enforced = enforcer.stop()
        rebuild = EnforcerThread(
            stack_args["bootstrap"], stack_args["topic"], db_url(redis_server.url, 2), new_group()
        )
        wait_for(lambda: rebuild.spend() == ledger.reference_nanos, 60, "the rebuild")
        rebuilt = rebuild.stop()
    finally:
        stack.close()
    assert_latency(baseline, faulted)
    ledger.check(redis_before=before)
    assert not ledger.dropped
    assert enforced["duplicates"] == 0 and rebuilt["duplicates"] == 0
