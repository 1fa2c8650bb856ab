"""BudgetGuard: cached flag reads, TTL-based Retry-After, fail-open on a dead Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis
from _budget_support import Clock

from _servers import free_port
from otelcost.budget import Budget, BudgetGuard, InMemoryBudgetStore, Throttle

FLAG = "enforce:throttle:{svc}"


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reads_flag_with_ttl_and_caches_it(redis_client: redis.Redis) -> None:
    mono = Monotonic()
    guard = BudgetGuard(redis_client, max_staleness=1.0, clock=mono)
    assert not guard.is_throttled("svc")
    redis_client.set(FLAG, '{"source":"otelcost"}', px=90_500)
    mono.now += 0.9
    assert not guard.is_throttled("svc")  # cached "not throttled" is at most 1 s old
    mono.now += 0.2
    assert guard.throttle("svc") == Throttle('{"source":"otelcost"}', 91)
    assert guard.reads == 2
    redis_client.delete(FLAG)
    mono.now += 0.5
    assert guard.is_throttled("svc")  # within staleness
    mono.now += 0.6
    assert not guard.is_throttled("svc")
    assert guard.reads == 3


def test_cached_flag_expires_with_its_ttl(redis_client: redis.Redis) -> None:
    mono = Monotonic()
    guard = BudgetGuard(redis_client, max_staleness=60.0, clock=mono)
    redis_client.set(FLAG, "1", px=2_000)
    assert guard.throttle("svc") == Throttle("1", 2)
    mono.now += 1.5
    assert guard.throttle("svc") == Throttle("1", 1)
    mono.now += 0.6
    assert guard.throttle("svc") is None  # the flag ran out; no read needed to know it
    assert guard.reads == 1


def test_flag_without_ttl_uses_default_retry_after(redis_client: redis.Redis) -> None:
    redis_client.set(FLAG, "1")
    assert BudgetGuard(redis_client).throttle("svc") == Throttle("1", 60)


def test_fails_open_and_backs_off_when_redis_is_unreachable() -> None:
    mono = Monotonic()
    guard = BudgetGuard(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2, clock=mono)
    started = time.monotonic()
    assert not guard.is_throttled("svc")
    assert time.monotonic() - started < 2.0
    assert guard.errors == 1
    mono.now += 0.3
    assert not guard.is_throttled("svc")  # within the 0.5 s backoff: no new attempt
    assert guard.errors == 1
    mono.now += 0.3
    assert not guard.is_throttled("svc")
    assert guard.errors == 2


def test_keeps_a_known_flag_while_redis_is_down(
    redis_server: Any, redis_client: redis.Redis
) -> None:
    mono = Monotonic()
    guard = BudgetGuard(redis_server.url, max_staleness=1.0, timeout=0.2, clock=mono)
    redis_client.set(FLAG, "1", px=30_000)
    assert guard.is_throttled("svc")
    redis_server.stop()
    mono.now += 5
    assert guard.is_throttled("svc")  # the read failed; the known flag still runs
    assert guard.errors == 1
    mono.now += 30
    assert not guard.is_throttled("svc")  # its TTL is over: fail open


def test_in_memory_store_as_source() -> None:
    clock = Clock()
    store = InMemoryBudgetStore([Budget("svc", 1, "1h", consecutive=10_000)], clock=clock)
    guard = BudgetGuard(store, max_staleness=0)
    assert not guard.is_throttled("svc")
    store.apply("svc", 2 * 10**9)
    assert guard.throttle("svc") == Throttle(store.read_flag("svc")[0] or "", 3600)


def test_async_variant(redis_client: redis.Redis) -> None:
    guard = BudgetGuard(redis_client, max_staleness=0)
    redis_client.set(FLAG, "1", px=5_000)
    assert asyncio.run(guard.is_throttled_async("svc"))
    assert not asyncio.run(guard.is_throttled_async("other"))
