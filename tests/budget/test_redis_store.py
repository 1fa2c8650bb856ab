"""RedisBudgetStore specifics on a real redis-server: keys, slots, script loading, clocks."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from _budget_support import MINUTE, T0, UNIT, Clock
from redis.crc import key_slot

from otelcost.budget import Budget, Fence, RedisBudgetStore
from otelcost.budget.redis_store import SCRIPT

ALL_PERIODS = [Budget("*", 1, period) for period in ("1h", "24h", "7d", "30d")]


@pytest.mark.parametrize("service", ["payment-svc", "a{b}c", "x}y", "{", "zahlungsdienst-é", "a:b"])
def test_all_keys_of_a_service_share_one_slot(redis_client: redis.Redis, service: str) -> None:
    store = RedisBudgetStore(redis_client, ALL_PERIODS, clock=Clock())
    assert store.apply(service, 5 * UNIT, Fence("producer-1", 1)).throttled
    store.apply(service, UNIT, Fence("kafka:otel-cost-spans:2", 7))
    keys = redis_client.keys("*")
    assert len(keys) == 4 + 2 + 1  # 4 budget hashes, 2 fences, the flag
    assert f"enforce:throttle:{{{service}}}".encode() in keys
    assert {key_slot(key) for key in keys} == {key_slot(f"enforce:throttle:{{{service}}}".encode())}
    assert store.services() == [service]


def test_keys_are_integer_buckets_with_the_window_id_and_a_ttl(redis_client: redis.Redis) -> None:
    store = RedisBudgetStore(redis_client, [Budget("s", 100, "24h")], clock=Clock())
    store.apply("s", 123)
    fields = redis_client.hgetall("otelcost:budget:{s}:24h")
    bucket = f"b:{T0 // 3_600_000}".encode()
    assert fields[bucket] == b"123"
    assert fields[b"c:limit"] == b"100000000000"
    assert not redis_client.keys("*incr*")
    ttl = redis_client.pttl("otelcost:budget:{s}:24h")
    assert 24 * 60 * MINUTE < ttl <= (24 + 1 + 24) * 60 * MINUTE  # period + bucket + a day


def test_script_flush_mid_run_reloads_the_script(redis_client: redis.Redis) -> None:
    store = RedisBudgetStore(redis_client, [Budget("s", 100)], clock=Clock())
    for seq in range(1, 4):
        store.apply("s", UNIT, Fence("p", seq))
    redis_client.script_flush()
    assert store.apply("s", UNIT, Fence("p", 4)).budgets[0].spend_nanos == 4 * UNIT
    assert store.apply("s", UNIT, Fence("p", 4)).duplicate
    assert store.status("s").budgets[0].spend_nanos == 4 * UNIT


def test_server_clock_is_the_default(redis_client: redis.Redis) -> None:
    store = RedisBudgetStore(redis_client, [Budget("s", 100)])
    before = time.time_ns() // 1_000_000
    status = store.apply("s", UNIT)
    assert before - 5_000 <= status.now_ms <= time.time_ns() // 1_000_000 + 5_000
    assert abs(store.status("s").now_ms - status.now_ms) < 5_000


def test_report_reads_budgets_stored_with_the_state(redis_client: redis.Redis) -> None:
    budget = Budget("s", 42.5, "7d", window="5m", ema_alpha=0.25, consecutive=2)
    clock = Clock()
    writer = RedisBudgetStore(redis_client, [budget], clock=clock)
    writer.apply("s", 10 * UNIT)
    clock.advance(5 * MINUTE)
    written = writer.apply("s", 0)
    reader = RedisBudgetStore(redis_client, clock=clock)  # no budgets configured
    assert reader.services() == ["s"]
    status = reader.status("s")
    assert status.budgets == written.budgets
    assert status.budgets[0].limit == 42.5
    assert status.budgets[0].ema_rate == 0.25 * 10 * (7 * 24 * 12)  # 10 per 5 min, for 7 days


def test_flag_ttl_is_refreshed_in_redis(redis_client: redis.Redis, clock: Clock) -> None:
    store = RedisBudgetStore(redis_client, [Budget("s", 10, "1h", consecutive=10_000)], clock=clock)
    clock.at(0)
    store.apply("s", 10 * UNIT)
    assert 59 * MINUTE < redis_client.pttl("enforce:throttle:{s}") <= 60 * MINUTE
    clock.at(30 * MINUTE)
    store.apply("s", 0)  # no new spend: the flag still ends when bucket 0 leaves
    assert 29 * MINUTE < redis_client.pttl("enforce:throttle:{s}") <= 30 * MINUTE
    store.apply("s", 10 * UNIT)  # more spend: the flag is pushed out again
    assert 59 * MINUTE < redis_client.pttl("enforce:throttle:{s}") <= 60 * MINUTE
    clock.at(95 * MINUTE)
    assert not store.apply("s", 0).throttled
    assert redis_client.exists("enforce:throttle:{s}") == 0


def _call(client: redis.Redis, args: list[Any]) -> Any:
    keys = ["enforce:throttle:{s}", "otelcost:fence:{s}:", "otelcost:budget:{s}:1h"]
    return client.eval(SCRIPT, len(keys), *keys, *args)


GOOD = [T0, 5, "", "", 86_400_000, 86_400_000, 1]
GOOD_BUDGET = ["1h", 3_600_000, 300_000, 60_000, 10**9, "0.1", 3, "0.8", 5, "1"]


@pytest.mark.parametrize(
    ("position", "value", "message"),
    [
        (1, "-5", "delta_nanos must be a non-negative integer"),
        (1, "1e3", "delta_nanos must be a non-negative integer"),
        (1, str(2**53), "delta_nanos must be below 2^53"),
        (0, "yesterday", "now_ms must be a non-negative integer"),
        (2, "abc", "seq must be a non-negative integer"),
        (7 + 4, "0", "limit_nanos must be a positive integer"),
        (7 + 4, "-1", "limit_nanos must be a positive integer"),
        (7 + 5, "nan", "alpha must be a number in (0, 1]"),
        (7 + 5, "2", "alpha must be a number in (0, 1]"),
        (7 + 7, "0", "release_ratio must be a number in (0, 1]"),
        (7 + 2, "7", "must be positive"),  # bucket does not divide the period
        (7 + 9, "yes", "hard_cap must be 0 or 1"),
        (6, "2", "expected 4 keys and 27 arguments"),
    ],
)
def test_script_validates_its_arguments(
    redis_client: redis.Redis, position: int, value: str, message: str
) -> None:
    args: list[Any] = GOOD + GOOD_BUDGET
    assert _call(redis_client, args)[0] == b"ok"
    args = [*args[:position], value, *args[position + 1 :]]
    with pytest.raises(redis.ResponseError, match="otelcost budget script") as info:
        _call(redis_client, args)
    assert message in str(info.value)


def test_store_accepts_a_url(redis_server: Any, redis_client: redis.Redis) -> None:
    store = RedisBudgetStore(redis_server.url, [Budget("s", 1)], clock=Clock())
    assert store.apply("s", UNIT).throttled
    assert redis_client.get("enforce:throttle:{s}") is not None
    store.client.close()
