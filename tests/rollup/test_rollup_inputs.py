"""The inputs of cost kept per minute (schema 3) and the migration of older rollup tables."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from _postgres import drop_rollup_schema
from _records import cost_record
from otelcost.money import from_nanos
from otelcost.rollup import init_db
from otelcost.rollup._batch import RollupBatch
from otelcost.rollup._schema import _DAILY_VIEW, _TABLES
from otelcost.rollup._store import RollupStore

_MINUTE = 60_000
_NOW = int(time.time() * 1000)
_BUCKET = _NOW - _NOW % _MINUTE - 10 * _MINUTE


def record(i: int, ts: int = _BUCKET + 5, **kw: Any) -> bytes:
    fields: dict[str, Any] = {
        "cost_amount": from_nanos(1_000),
        "duration_ms": 10.0,
        "timestamp": ts,
    }
    return cost_record(i + 1, **{**fields, **kw}).to_json()


def write(dsn: str, values: list[bytes], first_offset: int = 0) -> None:
    batch = RollupBatch("topic")
    for offset, value in enumerate(values, start=first_offset):
        batch.add(0, offset, None, value, None)
    store = RollupStore(dsn, "g", "topic")
    try:
        store.write(batch, lambda letters: None)
    finally:
        store.close()


_INPUTS = (
    "SELECT bucket, spans, cost_nanos, entry_spans, entry_ms, entry_units, nested_spans, "
    "nested_ms, nested_units FROM otelcost.cost_minute ORDER BY bucket"
)


def rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(_INPUTS).fetchall()


@pytest.fixture
def fresh(postgres_dsn: str) -> str:
    drop_rollup_schema(postgres_dsn)
    return postgres_dsn


def test_inputs_are_summed_apart_for_entry_and_nested_spans(fresh: str) -> None:
    init_db(fresh)
    tokens = "gen_ai.usage.input_tokens"
    write(
        fresh,
        [
            record(0, usage={tokens: 100.0}),
            record(1, duration_ms=2.5, cost_amount=0.0, error="pricing_not_found: x"),
            record(2, entry=False, duration_ms=1.0, usage={tokens: 7.0, "bytes": 3.0}),
            record(3, aggregate=True, span_count=5, duration_ms=50.0, usage={tokens: 10.0}),
        ],
    )
    # A second batch into the same row adds to its sums, key by key.
    write(fresh, [record(4, entry=False, duration_ms=4.0, usage={tokens: 1.0})], first_offset=4)
    ((_, spans, cost, e_spans, e_ms, e_units, n_spans, n_ms, n_units),) = rows(fresh)
    assert (spans, cost) == (9, 4_000)  # the record with an error has cost 0
    assert (e_spans, e_ms, e_units) == (7, 62.5, {tokens: 110})
    assert (n_spans, n_ms, n_units) == (2, 5.0, {tokens: 8, "bytes": 3})


def _old_schema(dsn: str) -> None:
    """The rollup schema as otelcost wrote it before re-pricing (version 2, no inputs)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE SCHEMA otelcost")
        conn.execute(
            "CREATE TABLE otelcost.schema_version (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(_TABLES)
        conn.execute(_DAILY_VIEW)
        conn.execute(
            "INSERT INTO otelcost.schema_version (version, description) VALUES "
            "(1, 'cost_minute and kafka_offsets tables'), "
            "(2, 'cost_daily view (plain PostgreSQL)')"
        )
        for minutes_ago, spans in ((10, 3), (20, 4)):
            conn.execute(
                "INSERT INTO otelcost.cost_minute VALUES "
                "(to_timestamp(%s / 1000.0), 'svc', 'op', 'USD', %s, %s, %s, 0, %s)",
                (_NOW - _NOW % _MINUTE - minutes_ago * _MINUTE, spans * 1_000, spans, spans, 30.0),
            )


def test_migrating_a_populated_older_schema_keeps_its_rows_and_marks_them(fresh: str) -> None:
    _old_schema(fresh)
    with pytest.raises(Exception, match="--init-db"):
        write(fresh, [record(0)])  # version 2: the consumer asks for the migration
    info = init_db(fresh)
    assert info.applied == (
        "3: inputs of cost kept for re-pricing",
        "4: rows keyed by service version and environment",
    )
    assert init_db(fresh).applied == ()  # idempotent
    before = rows(fresh)
    assert [(r[1], r[2]) for r in before] == [(4, 4_000), (3, 3_000)]
    assert all(r[3:] == (None,) * 6 for r in before)  # inputs not kept
    # New records: into a pre-migration row (its inputs stay unknown) and a new row.
    write(fresh, [record(0), record(1, ts=_NOW - _NOW % _MINUTE - 5 * _MINUTE)])
    after = rows(fresh)
    assert [(r[1], r[3]) for r in after] == [(4, None), (4, None), (1, 1)]
    assert after[2][3:] == (1, 10.0, {}, 0, 0.0, {})
    with psycopg.connect(fresh) as conn:
        daily = conn.execute("SELECT sum(cost_nanos) FROM otelcost.cost_daily").fetchone()
        deploys = conn.execute(
            "SELECT DISTINCT service_version, environment FROM otelcost.cost_minute"
        ).fetchall()
    assert daily == (Decimal(9_000),)
    assert deploys == [("", "")]  # older rows: deploy not known
    # A deploy's records get rows of their own, beside the older row of the same minute.
    write(fresh, [record(2, service_version="v2", environment="prod")], first_offset=2)
    assert [(r[1], r[3]) for r in rows(fresh)] == [(4, None), (4, None), (1, 1), (1, 1)]
