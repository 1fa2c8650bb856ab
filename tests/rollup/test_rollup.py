"""otelcost rollup / Rollup against the real broker and the machine's PostgreSQL."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

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
from _postgres import TcpProxy, TestDatabase, drop_rollup_schema, reset_rollup_schema
from _records import T0, cost_record
from _servers import KafkaBroker
from _wait import wait_for
from otelcost.money import from_nanos
from otelcost.record import CostRecord
from otelcost.rollup import Rollup

_SERVICES = ("payment-svc", "llm-gateway", "search", "checkout", "ünïcode")
_OPERATIONS = ("POST /api/v2/orders", "GET /users/*", "chat.completions")

Key = tuple[int, str, str, str]


def _records(count: int, *, start: int = 0, seed: int = 7) -> list[CostRecord]:
    """Records over ~40 minutes: some unpriced, some overflow aggregates, two currencies."""
    rng = random.Random(seed + start)
    records = []
    for i in range(start, start + count):
        unpriced = i % 17 == 0
        aggregate = i % 23 == 0 and not unpriced
        records.append(
            cost_record(
                i + 1,
                service=_SERVICES[i % len(_SERVICES)],
                operation="OTHER" if aggregate else _OPERATIONS[i % len(_OPERATIONS)],
                cost_amount=0.0 if unpriced else from_nanos(rng.randrange(1, 50_000_000)),
                currency="EUR" if i % 11 == 0 else "USD",
                duration_ms=round(rng.uniform(0.1, 900.0), 3),
                timestamp=T0 + rng.randrange(0, 40 * 60_000),
                error="PricingNotFoundError" if unpriced else None,
                aggregate=aggregate,
                span_count=rng.randrange(2, 500) if aggregate else 1,
            )
        )
    return records


def _expected(records: Sequence[CostRecord]) -> dict[Key, tuple[int, int, int, int]]:
    """(minute, service, operation, currency) -> (cost nanos, spans, records, unpriced)."""
    sums: dict[Key, tuple[int, int, int, int]] = {}
    for r in records:
        key = (r.timestamp // 60_000 * 60_000, r.service, r.operation, r.currency)
        cost, spans, count, unpriced = sums.get(key, (0, 0, 0, 0))
        sums[key] = (
            cost + r.cost_nanos,
            spans + r.span_count,
            count + 1,
            unpriced + (r.span_count if r.error else 0),
        )
    return sums


def _stored(dsn: str) -> dict[Key, tuple[int, int, int, int]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT (extract(epoch FROM bucket) * 1000)::bigint, service, operation, currency,"
            " cost_nanos, spans, records, unpriced_spans FROM otelcost.cost_minute"
        ).fetchall()
    return {
        (int(b), s, o, c): (int(n), int(sp), int(r), int(u)) for b, s, o, c, n, sp, r, u in rows
    }


def _total_records(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT coalesce(sum(records), 0) FROM otelcost.cost_minute").fetchone()
    assert row is not None
    return int(row[0])


def _db_offsets(dsn: str, group: str) -> dict[int, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT partition, next_offset FROM otelcost.kafka_offsets WHERE consumer_group = %s",
            (group,),
        ).fetchall()
    return {int(p): int(o) for p, o in rows}


@pytest.fixture
def dsn(postgres_dsn: str) -> str:
    """The test database with a fresh rollup schema."""
    reset_rollup_schema(postgres_dsn)
    return postgres_dsn


def _rollup(broker: KafkaBroker, dsn: str, topic: str, group: str, **kwargs: Any) -> Rollup:
    return Rollup(
        broker.bootstrap, dsn, topic=topic, group=group, kafka_config=FAST_GROUP, **kwargs
    )


# Retries soon after a database error, and gives up on a connection attempt soon.
_RETRY_FAST: dict[str, Any] = {"backoff": 0.2, "max_backoff": 1.0, "db_timeout": 2.0}


def _assert_rolled_up_once(
    broker: KafkaBroker, topic: str, dsn: str, group: str, records: Sequence[CostRecord]
) -> None:
    """Every record summed once into the minute rows; the stored offsets at the topic's end."""
    assert _stored(dsn) == _expected(records)
    assert _db_offsets(dsn, group) == ends(read_all(broker.bootstrap, topic))


@pytest.mark.slow
def test_postgres_offsets_win_over_kafka_offsets(
    kafka_broker: KafkaBroker, kafka_topic: str, dsn: str, group: str
) -> None:
    """Kafka's committed offsets are only for lag tools: a consumer resumes where
    PostgreSQL says, even when Kafka says otherwise (here: nothing committed at all)."""
    records = _records(1200)
    produce(kafka_broker.bootstrap, kafka_topic, records)
    first = _rollup(kafka_broker, dsn, kafka_topic, group, batch_size=100)
    assert first.run(max_records=500, idle_timeout=30)
    stored = _db_offsets(dsn, group)
    assert sum(stored.values()) == 500

    # A group with no Kafka offsets but the same PostgreSQL rows: copy them over.
    other = f"{group}-moved"
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO otelcost.kafka_offsets (consumer_group, topic, partition, next_offset)"
            " SELECT %s, topic, partition, next_offset FROM otelcost.kafka_offsets"
            " WHERE consumer_group = %s",
            (other, group),
        )
    assert set(committed(kafka_broker.bootstrap, kafka_topic, other).values()) == {None}
    second = _rollup(kafka_broker, dsn, kafka_topic, other)
    assert second.run(idle_timeout=15)
    assert (second.stats()["consumed"], second.stats()["duplicates"]) == (700, 0)
    assert _stored(dsn) == _expected(records)


@dataclass
class _Proxied:
    proxy: TcpProxy
    dsn: str  # the test database through the proxy


@pytest.fixture
def proxied(dsn: str, postgres_db: TestDatabase) -> Iterator[_Proxied]:
    """A cuttable TCP path to the test database (started), and the DSN that takes it."""
    tcp = TcpProxy(postgres_db.host, postgres_db.port)
    tcp.start()
    yield _Proxied(tcp, postgres_db.dsn_via("127.0.0.1", tcp.port))
    tcp.stop()


@pytest.mark.slow
def test_database_down_at_assignment_pauses_commits_nothing_then_catches_up(
    kafka_broker: KafkaBroker, kafka_topic: str, dsn: str, group: str, proxied: _Proxied
) -> None:
    records = _records(600)
    produce(kafka_broker.bootstrap, kafka_topic, records)
    proxied.proxy.stop()  # the rollup's database is unreachable (a closed port) from the start
    rollup = _rollup(kafka_broker, proxied.dsn, kafka_topic, group, **_RETRY_FAST)
    thread, outcome = run_in_thread(rollup, max_records=600)
    try:
        wait_for(lambda: rollup.stats()["unpositioned"] == 3, 60)
        wait_for(lambda: rollup.stats()["db_errors"] >= 3, 30)  # retried, not given up
        assert rollup.stats()["consumed"] == 0
        assert _db_offsets(dsn, group) == {}
        assert set(committed(kafka_broker.bootstrap, kafka_topic, group).values()) == {None}
        proxied.proxy.start()
        thread.join(60)
    finally:
        stop_all((rollup, thread))
    assert outcome == [True]
    stats = rollup.stats()
    assert (stats["consumed"], stats["written"], stats["unpositioned"]) == (600, 600, 0)
    _assert_rolled_up_once(kafka_broker, kafka_topic, dsn, group, records)


@pytest.mark.slow
def test_database_outage_mid_stream_pauses_and_loses_nothing(
    kafka_broker: KafkaBroker, kafka_topic: str, dsn: str, group: str, proxied: _Proxied
) -> None:
    records = _records(1000)
    produce(kafka_broker.bootstrap, kafka_topic, records[:400])
    rollup = _rollup(kafka_broker, proxied.dsn, kafka_topic, group, **_RETRY_FAST)
    thread, outcome = run_in_thread(rollup, max_records=1000)
    try:
        wait_for(lambda: rollup.stats()["written"] == 400, 60)
        proxied.proxy.stop()  # cuts the open connection too
        before = _db_offsets(dsn, group)
        produce(kafka_broker.bootstrap, kafka_topic, records[400:])
        wait_for(lambda: rollup.stats()["paused"] == 1, 60)
        wait_for(lambda: rollup.stats()["db_errors"] >= 3, 30)
        assert rollup.stats()["written"] == 400
        assert _db_offsets(dsn, group) == before  # nothing committed meanwhile
        assert _total_records(dsn) == 400
        proxied.proxy.start()
        thread.join(60)
    finally:
        stop_all((rollup, thread))
    assert outcome == [True]
    stats = rollup.stats()
    assert (stats["written"], stats["paused"]) == (1000, 0)
    _assert_rolled_up_once(kafka_broker, kafka_topic, dsn, group, records)


# -- the command line, as a separate process -------------------------------------------------


@pytest.fixture
def rollup_argv(kafka_broker: KafkaBroker, kafka_topic: str, dsn: str, group: str) -> list[str]:
    """``python -m otelcost.cli rollup`` on the fixtures, joining the group fast."""
    return consumer_argv("rollup", kafka_broker.bootstrap, kafka_topic, group, "--dsn", dsn)


@pytest.fixture
def consumer(
    kafka_broker: KafkaBroker, kafka_topic: str, dsn: str, group: str, rollup_argv: list[str]
) -> Consumer:
    """The rollup for the scenarios shared with enforce (tests/_consumer_scenarios.py)."""

    def assert_stored(records: Sequence[CostRecord]) -> None:
        stored = _stored(dsn)
        assert stored == _expected(records)
        assert sum(v[0] for v in stored.values()) == sum(r.cost_nanos for r in records)

    def one_message() -> list[CostRecord]:
        records = _records(60, start=9000)
        return [r for r in records if (r.service, r.currency) == ("search", "USD")]

    return Consumer(
        command="rollup",
        done="written",
        broker=kafka_broker,
        topic=kafka_topic,
        group=group,
        argv=rollup_argv,
        records=_records,
        make=lambda **options: _rollup(kafka_broker, dsn, kafka_topic, group, **options),
        assert_stored=assert_stored,
        offsets=lambda name: _db_offsets(dsn, name),
        progress=lambda: _total_records(dsn),
        progress_of=len,
        one_message=one_message,
        stored_records=lambda: _total_records(dsn),
    )


class TestSharedWithEnforce(ConsumerScenarios):
    """The scenarios rollup shares with enforce, on the ``consumer`` fixture above."""


@pytest.mark.slow
def test_cli_without_schema_exits_2_and_commits_nothing(
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    postgres_dsn: str,
    rollup_argv: list[str],
    group: str,
) -> None:
    produce(kafka_broker.bootstrap, kafka_topic, _records(10))
    drop_rollup_schema(postgres_dsn)
    result = subprocess.run(
        [*rollup_argv, "--idle-timeout", "5"], capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 2, result.stderr.decode()[-2000:]
    assert b"otelcost rollup --init-db" in result.stderr
    assert set(committed(kafka_broker.bootstrap, kafka_topic, group).values()) == {None}


def test_cli_argument_errors(postgres_dsn: str) -> None:
    base = [sys.executable, "-m", "otelcost.cli", "rollup"]
    nothing = subprocess.run(
        [*base, "--dsn", postgres_dsn], capture_output=True, timeout=60, check=False
    )
    assert nothing.returncode == 2
    assert b"--bootstrap-servers" in nothing.stderr
    cooperative = subprocess.run(
        [
            *base,
            "--dsn",
            postgres_dsn,
            "--bootstrap-servers",
            "127.0.0.1:9",
            "-Xpartition.assignment.strategy=cooperative-sticky",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert cooperative.returncode == 2
    assert b"cooperative" in cooperative.stderr
    unreachable = subprocess.run(
        [*base, "--dsn", "postgresql://u:s3cret@127.0.0.1:9/db", "--init-db"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert unreachable.returncode == 1
    assert unreachable.stderr.count(b"\n") == 1
    assert b"s3cret" not in unreachable.stderr
    assert b"Traceback" not in unreachable.stderr
