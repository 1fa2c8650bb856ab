"""Schema migrations, retention and the transactional write, on the machine's PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Sequence

import psycopg
import pytest

from _postgres import drop_rollup_schema
from _records import cost_record
from otelcost.errors import DeadLetterError, StoreUnavailableError
from otelcost.money import from_nanos
from otelcost.rollup import SchemaError, apply_retention, init_db, read_history
from otelcost.rollup._batch import RollupBatch
from otelcost.rollup._store import RollupStore
from otelcost.stream._consume import DeadLetter

_DAY_MS = 86_400_000


def _value(i: int, timestamp: int, nanos: int = 1_000) -> bytes:
    return cost_record(i + 1, cost_amount=from_nanos(nanos), timestamp=timestamp).to_json()


def _batch(offsets: Sequence[int], timestamp: int, partition: int = 0) -> RollupBatch:
    batch = RollupBatch("topic")
    for offset in offsets:
        batch.add(partition, offset, b"svc", _value(offset, timestamp), None)
    return batch


def _rows(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT bucket, cost_nanos, records FROM otelcost.cost_minute ORDER BY bucket"
        ).fetchall()


@pytest.fixture
def fresh(postgres_dsn: str) -> str:
    drop_rollup_schema(postgres_dsn)
    return postgres_dsn


def test_init_db_twice_is_harmless_and_keeps_data(fresh: str) -> None:
    first = init_db(fresh)
    assert (first.version, first.timescale, len(first.applied)) == (4, False, 4)
    store = RollupStore(fresh, "g", "topic")
    store.write(_batch(range(5), int(time.time() * 1000)), lambda letters: None)
    before = _rows(fresh)
    second = init_db(fresh)
    assert second.applied == ()
    assert _rows(fresh) == before
    with psycopg.connect(fresh) as conn:
        versions = conn.execute("SELECT version FROM otelcost.schema_version").fetchall()
        daily = conn.execute("SELECT sum(cost_nanos) FROM otelcost.cost_daily").fetchone()
    assert versions == [(1,), (2,), (3,), (4,)]
    assert daily == (5_000,)
    store.close()


def test_a_database_without_schema_is_a_clear_error(fresh: str) -> None:
    store = RollupStore(fresh, "g", "topic")
    with pytest.raises(SchemaError, match="--init-db"):
        store.offsets([0])
    with pytest.raises(SchemaError, match="--init-db"):
        read_history(fresh, since_ms=int(time.time() * 1000) - _DAY_MS)


def test_a_newer_schema_is_refused(fresh: str) -> None:
    init_db(fresh)
    with psycopg.connect(fresh) as conn:
        conn.execute("INSERT INTO otelcost.schema_version VALUES (99, 'from the future')")
    with pytest.raises(SchemaError, match="upgrade otelcost"):
        init_db(fresh)


def test_retention_deletes_only_buckets_of_days_past_the_window(fresh: str) -> None:
    init_db(fresh)
    now = int(time.time() * 1000)
    today = now - now % _DAY_MS
    store = RollupStore(fresh, "g", "topic")
    ages = {
        "today": now,
        "89 days": today - 89 * _DAY_MS + 1,
        "90 days, first minute": today - 90 * _DAY_MS,  # the oldest whole day kept
        "90 days and a minute": today - 90 * _DAY_MS - 60_000,
        "200 days": today - 200 * _DAY_MS,
    }
    for partition, timestamp in enumerate(ages.values()):
        store.write(_batch([0, 1], timestamp, partition=partition), lambda letters: None)
    assert len(_rows(fresh)) == 5
    assert apply_retention(fresh) == 2
    with psycopg.connect(fresh) as conn:
        kept = conn.execute(
            "SELECT (extract(epoch FROM bucket) * 1000)::bigint FROM otelcost.cost_minute"
        ).fetchall()
    expected = {ages[k] - ages[k] % 60_000 for k in ("today", "89 days", "90 days, first minute")}
    assert {row[0] for row in kept} == expected
    assert apply_retention(fresh) == 0
    assert apply_retention(fresh, days=1) == 2  # 89 days and the day 90 days ago
    store.close()


def test_a_replayed_batch_is_skipped_in_the_transaction(fresh: str) -> None:
    init_db(fresh)
    timestamp = int(time.time() * 1000)
    store = RollupStore(fresh, "g", "topic")
    first = store.write(_batch(range(10), timestamp), lambda letters: None)
    assert (first.records, first.duplicates) == (10, 0)
    overlapping = store.write(_batch(range(5, 15), timestamp), lambda letters: None)
    assert (overlapping.records, overlapping.duplicates) == (5, 5)
    assert _rows(fresh)[0][1:] == (15_000, 15)
    assert store.offsets([0, 1]) == {0: 15}
    other_group = RollupStore(fresh, "other", "topic")
    assert other_group.write(_batch(range(3), timestamp), lambda letters: None).records == 3
    store.close()
    other_group.close()


def test_a_failing_dead_letter_queue_rolls_everything_back(fresh: str) -> None:
    init_db(fresh)
    batch = _batch(range(3), int(time.time() * 1000))
    batch.add(0, 3, b"svc", b"not json", None)
    store = RollupStore(fresh, "g", "topic")

    def refuse(letters: Sequence[DeadLetter]) -> None:
        assert [letter.offset for letter in letters] == [3]
        raise DeadLetterError("dead-letter queue: down")

    with pytest.raises(DeadLetterError):
        store.write(batch, refuse)
    assert _rows(fresh) == []
    assert store.offsets([0]) == {}
    sent: list[DeadLetter] = []
    done = store.write(batch, sent.extend)
    assert (done.records, done.dead_letters, len(sent)) == (3, 1, 1)
    assert store.write(batch, sent.extend).duplicates == 4  # nothing dead-lettered twice
    assert len(sent) == 1
    store.close()


def test_an_unreachable_database_is_store_unavailable() -> None:
    store = RollupStore("postgresql://u:s3cret@127.0.0.1:9/db", "g", "topic", timeout=1)
    with pytest.raises(StoreUnavailableError) as caught:
        store.offsets([0])
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in repr(store)
