"""otelcost enforce / Enforcer against the real broker and Redis fixtures."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from _consumer_scenarios import Consumer, ConsumerScenarios
from _kafka import (
    FAST_GROUP,
    committed,
    consumer_argv,
    ends,
    produce,
    read_all,
    run_in_thread,
    stop_all,
)
from _records import T0, cost_record
from _servers import KafkaBroker, RedisServer
from _wait import wait_for
from otelcost.budget import Budget, RedisBudgetStore
from otelcost.money import from_nanos
from otelcost.record import CostRecord
from otelcost.stream.enforce import Enforcer

_SERVICES = ("payment-svc", "llm-gateway", "search", "checkout", "auth", "cart", "ünïcode")
# A budget no test reaches, so that every record is kept as spend.
_BUDGETS = [Budget("*", limit=10_000_000.0, period="24h")]


def _records(count: int, *, start: int = 0, seed: int = 11) -> list[CostRecord]:
    rng = random.Random(seed + start)
    return [
        cost_record(
            i + 1,
            service=_SERVICES[i % len(_SERVICES)],
            operation="POST /api/v2/orders",
            cost_amount=from_nanos(rng.randrange(1, 50_000_000)),
            duration_ms=12.5,
            timestamp=T0 + i,
        )
        for i in range(start, start + count)
    ]


def _expected(records: Sequence[CostRecord]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for record in records:
        totals[record.service] = totals.get(record.service, 0) + record.cost_nanos
    return totals


def _spend(store: RedisBudgetStore, services: Sequence[str] = _SERVICES) -> dict[str, int]:
    totals = {}
    for service in services:
        usage = store.status(service).budgets
        if usage and usage[0].spend_nanos:
            totals[service] = usage[0].spend_nanos
    return totals


def _enforcer(
    broker: KafkaBroker, store: RedisBudgetStore, topic: str, group: str, **kwargs: Any
) -> Enforcer:
    return Enforcer(
        broker.bootstrap, store, topic=topic, group=group, kafka_config=FAST_GROUP, **kwargs
    )


@pytest.fixture
def store(redis_server: RedisServer, redis_client: redis.Redis) -> RedisBudgetStore:
    """The store as the CLI builds it: from the URL, with otelcost's short Redis timeouts
    (redis_client only empties the server first)."""
    return RedisBudgetStore(redis_server.url, _BUDGETS)


@pytest.mark.slow
def test_replays_by_another_group_are_fenced(
    kafka_broker: KafkaBroker, kafka_topic: str, store: RedisBudgetStore, group: str
) -> None:
    """A second group re-reads everything, with other batch boundaries: no double count.

    This is the state a crash between apply and commit leaves: spend applied, offsets not
    committed. The first run stops part-way, so the replay's batches straddle the fences
    (FenceOverlapError: re-aggregated from the first unapplied offset).
    """
    records = _records(2000)
    produce(kafka_broker.bootstrap, kafka_topic, records)
    first = _enforcer(kafka_broker, store, kafka_topic, group, batch_size=150)
    assert first.run(max_records=1000, idle_timeout=30)
    assert first.stats()["applied"] == 1000

    replay = _enforcer(kafka_broker, store, kafka_topic, f"{group}-replay", batch_size=5000)
    assert replay.run(max_records=2000, idle_timeout=30)
    stats = replay.stats()
    assert _spend(store) == _expected(records)
    assert (stats["applied"], stats["duplicates"]) == (1000, 1000)


def _one_service(count: int) -> list[CostRecord]:
    return [r for r in _records(count * len(_SERVICES), start=9000) if r.service == "search"]


@pytest.mark.slow
def test_redis_outage_pauses_commits_nothing_loses_nothing(
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    redis_server: RedisServer,
    store: RedisBudgetStore,
    group: str,
) -> None:
    records = _records(500)
    produce(kafka_broker.bootstrap, kafka_topic, records)
    redis_server.stop()
    enforcer = _enforcer(kafka_broker, store, kafka_topic, group, backoff=0.2, max_backoff=1.0)
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(enforcer.run(max_records=500)))
    thread.start()
    try:
        wait_for(lambda: enforcer.stats()["paused"] == 1, 60)
        wait_for(lambda: enforcer.stats()["store_errors"] >= 2, 30)  # retried, not dropped
        assert set(committed(kafka_broker.bootstrap, kafka_topic, group).values()) == {None}
        redis_server.start()
        thread.join(60)
    finally:
        enforcer.stop()
        thread.join(60)
    assert outcome == [True]
    stats = enforcer.stats()
    assert (stats["consumed"], stats["applied"], stats["paused"]) == (500, 500, 0)
    assert _spend(store) == _expected(records)
    on_broker = read_all(kafka_broker.bootstrap, kafka_topic)
    assert committed(kafka_broker.bootstrap, kafka_topic, group) == ends(on_broker)


@pytest.mark.slow
def test_revoke_while_redis_is_down_hands_the_pending_batch_over(
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    redis_server: RedisServer,
    store: RedisBudgetStore,
    group: str,
) -> None:
    """The paused owner cannot apply its batch when it loses its partitions: it drops the
    batch uncommitted and the new owners replay it once Redis is back."""
    records = _records(2000)
    produce(kafka_broker.bootstrap, kafka_topic, records)
    redis_server.stop()
    options: dict[str, Any] = {"backoff": 0.2, "max_backoff": 1.0}
    first = _enforcer(kafka_broker, store, kafka_topic, group, **options)
    second = _enforcer(kafka_broker, store, kafka_topic, group, **options)
    first_thread, first_outcome = run_in_thread(first, idle_timeout=20)
    second_thread = threading.Thread()
    try:
        wait_for(lambda: first.stats()["paused"] == 1, 60)
        second_thread, second_outcome = run_in_thread(second, idle_timeout=20)
        wait_for(lambda: second.stats()["store_errors"] > 0, 60)  # it owns partitions now
        assert set(committed(kafka_broker.bootstrap, kafka_topic, group).values()) == {None}
        redis_server.start()
        first_thread.join(180)
        second_thread.join(180)
    finally:
        stop_all((first, first_thread), (second, second_thread))
    assert first_outcome == second_outcome == [True]
    a, b = first.stats(), second.stats()
    assert a["applied"] + b["applied"] == len(records)
    assert a["consumed"] > len(records) // 3  # its first batch, dropped at the revoke
    assert _spend(store) == _expected(records)
    on_broker = read_all(kafka_broker.bootstrap, kafka_topic)
    assert committed(kafka_broker.bootstrap, kafka_topic, group) == ends(on_broker)


# -- the command line, as a separate process -------------------------------------------------


@pytest.fixture
def budgets_file(tmp_path: Path) -> Path:
    path = tmp_path / "budgets.json"
    path.write_text(json.dumps({"budgets": [{"service": "*", "limit": 10_000_000.0}]}))
    return path


@pytest.fixture
def enforce_argv(
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    redis_server: RedisServer,
    group: str,
    budgets_file: Path,
) -> list[str]:
    """``python -m otelcost.cli enforce`` on the fixtures, joining the group fast."""
    options = ("--redis-url", redis_server.url, "--budgets", str(budgets_file))
    return consumer_argv("enforce", kafka_broker.bootstrap, kafka_topic, group, *options)


def _total(store: RedisBudgetStore) -> int:
    return sum(_spend(store).values())


@pytest.fixture
def consumer(
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    store: RedisBudgetStore,
    group: str,
    enforce_argv: list[str],
) -> Consumer:
    """The enforcer for the scenarios shared with rollup (tests/_consumer_scenarios.py)."""

    def assert_stored(records: Sequence[CostRecord]) -> None:
        assert _spend(store) == _expected(records)

    return Consumer(
        command="enforce",
        done="applied",
        broker=kafka_broker,
        topic=kafka_topic,
        group=group,
        argv=enforce_argv,
        records=_records,
        make=lambda **options: _enforcer(kafka_broker, store, kafka_topic, group, **options),
        assert_stored=assert_stored,
        offsets=lambda name: committed(kafka_broker.bootstrap, kafka_topic, name),
        progress=lambda: _total(store),
        progress_of=lambda records: sum(_expected(records).values()),
        one_message=lambda: _one_service(5),
        mixed_messages=300 + 7 + 1 + 7,  # thirds of 900: schema 1, 7 services twice, the bad
    )


class TestSharedWithRollup(ConsumerScenarios):
    """The scenarios enforce shares with rollup, on the ``consumer`` fixture above."""


@pytest.mark.slow
def test_cli_rejects_bad_configuration(tmp_path: Path) -> None:
    bad = tmp_path / "budgets.json"
    bad.write_text('{"budgets": [{"service": "x", "limit": -1}]}')
    base = [sys.executable, "-m", "otelcost.cli", "enforce", "--bootstrap-servers", "b:9092"]
    for extra, expected in (
        (["--redis-url", "redis://127.0.0.1:9", "--budgets", str(bad)], b"limit"),
        (["--redis-url", "redis://127.0.0.1:9", "-X", "novalue"], b"-X expects KEY=VALUE"),
        (["--redis-url", "ftp://x"], b"unsupported Redis URL"),
    ):
        result = subprocess.run([*base, *extra], capture_output=True, timeout=60, check=False)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr
    help_text = subprocess.run(
        [*base[:4], "--help"], capture_output=True, timeout=60, check=True
    ).stdout
    assert b"--idle-timeout" in help_text and b"--max-records" in help_text


def test_cli_against_an_unreachable_broker_exits_3_within_the_connect_timeout(
    redis_server: RedisServer, budgets_file: Path
) -> None:
    """One line naming the address, exit status 3, within the timeout (plus start-up)."""
    argv = [sys.executable, "-m", "otelcost.cli", "enforce", "--redis-url", redis_server.url]
    argv += ["--budgets", str(budgets_file), "--bootstrap-servers", "127.0.0.1:1"]
    began = time.monotonic()
    result = subprocess.run(
        [*argv, "--connect-timeout", "3", "--idle-timeout", "60"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - began < 3 + 15  # the interpreter and imports start first
    assert result.stderr.decode().strip().splitlines() == [
        "otelcost enforce: no Kafka broker answered at 127.0.0.1:1 within 3 s (--connect-timeout)"
    ]
    # The case: only --idle-timeout, shorter than the default connect timeout.
    began = time.monotonic()
    result = subprocess.run(
        [*argv, "--idle-timeout", "2"], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - began < 2 + 15
    assert result.stderr.decode().strip().splitlines() == [
        "otelcost enforce: no Kafka broker answered at 127.0.0.1:1 within 2 s (--idle-timeout)"
    ]


@pytest.mark.slow
def test_idle_timeout_counts_whatever_the_cause(
    kafka_broker: KafkaBroker, kafka_topic: str, store: RedisBudgetStore, group: str
) -> None:
    """No data and a group join that never ends (default session timing on Tansu takes
    ~23 s to join): idle time counts from the start, so run returns after it."""
    enforcer = Enforcer(kafka_broker.bootstrap, store, topic=kafka_topic, group=group)
    began = time.monotonic()
    assert enforcer.run(idle_timeout=4)
    assert time.monotonic() - began < 4 + 10
    assert enforcer.stats()["consumed"] == 0
