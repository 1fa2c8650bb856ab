"""The rollup schema in PostgreSQL: idempotent migrations and retention.

Everything lives in the schema ``otelcost``:

- ``cost_minute``: one row per (bucket, service, operation, currency). ``bucket`` is a
  ``timestamptz``, the start of the UTC minute of the spans' end; ``cost_nanos``,
  ``spans`` and ``unpriced_spans`` are ``numeric`` (exact integers that cannot overflow,
  unlike a bigint sum), ``records`` a bigint, ``duration_ms`` a double (summed span time).
  Since migration 3 it also keeps the inputs of cost, split by entry and nested spans as
  live pricing charges them, so history can be re-priced: ``entry_spans``/``nested_spans``
  (numeric), ``entry_ms``/``nested_ms`` (double) and ``entry_units``/``nested_units``
  (jsonb ``{attribute: summed units}``). They are NULL in rows begun before migration 3,
  and stay NULL (adding to NULL), so such a row is never re-priced from partial sums.
  Since migration 4 rows are also keyed by ``service_version`` and ``environment`` (the
  deploy that ran the spans; ``''`` when the records did not say, and in older rows);
- ``kafka_offsets``: per (consumer_group, topic, partition) the next offset to read,
  written in the same transaction as the rows it accounts for;
- ``cost_daily``: the same sums per UTC day. On plain PostgreSQL a view (always current,
  computed on read); with TimescaleDB a continuous aggregate (see ``_timescale``);
- ``schema_version``: the migrations applied.

``init_db`` applies what is missing under an advisory lock, each migration in its own
transaction, so running it twice, or from two processes at once, is harmless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from otelcost.errors import SchemaError
from otelcost.rollup import _timescale
from otelcost.rollup._db import DatabaseError, connect, psycopg

__all__ = [
    "ADD_UNITS",
    "DAILY_VIEW",
    "DEFAULT_RETENTION_DAYS",
    "MINUTE_TABLE",
    "OFFSETS_TABLE",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SchemaError",
    "SchemaInfo",
    "apply_retention",
    "check_schema",
    "init_db",
]

_logger = logging.getLogger(__name__)

SCHEMA = "otelcost"
MINUTE_TABLE = f"{SCHEMA}.cost_minute"
DAILY_VIEW = f"{SCHEMA}.cost_daily"
OFFSETS_TABLE = f"{SCHEMA}.kafka_offsets"
VERSION_TABLE = f"{SCHEMA}.schema_version"
#: SQL function adding two jsonb usage maps key by key (the upsert of the unit sums).
ADD_UNITS = f"{SCHEMA}.add_units"
#: The schema version this code reads and writes.
SCHEMA_VERSION = 4
DEFAULT_RETENTION_DAYS = 90

_LOCK_KEY = 0x6F74_656C_636F  # "otelco": serializes concurrent init_db runs
_DELETE_CHUNK = 50_000

_TABLES = f"""
CREATE TABLE IF NOT EXISTS {MINUTE_TABLE} (
    bucket timestamptz NOT NULL,
    service text NOT NULL,
    operation text NOT NULL,
    currency text NOT NULL,
    cost_nanos numeric NOT NULL CHECK (cost_nanos >= 0),
    spans numeric NOT NULL CHECK (spans >= 0),
    records bigint NOT NULL CHECK (records >= 0),
    unpriced_spans numeric NOT NULL CHECK (unpriced_spans >= 0),
    duration_ms double precision NOT NULL,
    PRIMARY KEY (bucket, service, operation, currency)
);
CREATE INDEX IF NOT EXISTS cost_minute_service_bucket ON {MINUTE_TABLE} (service, bucket);
CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (
    consumer_group text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL CHECK (partition >= 0),
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
COMMENT ON TABLE {MINUTE_TABLE} IS
    'otelcost: cost per UTC minute (bucket = minute start), service, operation, currency';
COMMENT ON COLUMN {MINUTE_TABLE}.cost_nanos IS 'exact cost in nano-units of currency';
COMMENT ON TABLE {OFFSETS_TABLE} IS
    'otelcost rollup: next Kafka offset per group/topic/partition, committed with the rows';
"""

# The daily view's columns after ``day`` (the plain view and TimescaleDB's alike).
_DAILY_COLUMNS = """service, operation, currency,
       sum(cost_nanos) AS cost_nanos,
       sum(spans) AS spans,
       sum(records)::bigint AS records,
       sum(unpriced_spans) AS unpriced_spans,
       sum(duration_ms) AS duration_ms"""

_DAILY_VIEW = f"""
CREATE OR REPLACE VIEW {DAILY_VIEW} AS
SELECT date_trunc('day', bucket, 'UTC') AS day,
       {_DAILY_COLUMNS}
FROM {MINUTE_TABLE}
GROUP BY 1, 2, 3, 4;
COMMENT ON VIEW {DAILY_VIEW} IS 'otelcost: cost per UTC day, from cost_minute';
"""


# Nullable without a default: adding them rewrites nothing, and the rows already there keep
# NULL ("inputs not kept") instead of sums that would cover only part of their spans.
_COST_INPUTS = f"""
ALTER TABLE {MINUTE_TABLE}
    ADD COLUMN IF NOT EXISTS entry_spans numeric,
    ADD COLUMN IF NOT EXISTS entry_ms double precision,
    ADD COLUMN IF NOT EXISTS entry_units jsonb,
    ADD COLUMN IF NOT EXISTS nested_spans numeric,
    ADD COLUMN IF NOT EXISTS nested_ms double precision,
    ADD COLUMN IF NOT EXISTS nested_units jsonb;
COMMENT ON COLUMN {MINUTE_TABLE}.entry_spans IS
    'otelcost: inputs of cost of entry spans (also entry_ms, entry_units); NULL: not kept';
COMMENT ON COLUMN {MINUTE_TABLE}.nested_spans IS
    'otelcost: inputs of cost of nested spans (also nested_ms, nested_units); NULL: not kept';
CREATE OR REPLACE FUNCTION {ADD_UNITS}(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN a = '{{}}' THEN b WHEN b = '{{}}' THEN a ELSE (
        SELECT jsonb_object_agg(key, total) FROM (
            SELECT key, sum(value::numeric) AS total
            FROM (SELECT * FROM jsonb_each(a) UNION ALL SELECT * FROM jsonb_each(b)) AS maps
            GROUP BY key) AS sums) END
$$;
COMMENT ON FUNCTION {ADD_UNITS}(jsonb, jsonb) IS
    'otelcost: {{attribute: units}} maps added key by key (NULL if either is NULL)';
"""


# The key grows by the deploy. The defaults cost no rewrite (PostgreSQL 11+); the primary
# key's index is rebuilt once, under the migration's lock.
_DEPLOY = f"""
ALTER TABLE {MINUTE_TABLE}
    ADD COLUMN IF NOT EXISTS service_version text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS environment text NOT NULL DEFAULT '';
ALTER TABLE {MINUTE_TABLE} DROP CONSTRAINT IF EXISTS cost_minute_pkey;
ALTER TABLE {MINUTE_TABLE} ADD CONSTRAINT cost_minute_pkey
    PRIMARY KEY (bucket, service, operation, currency, service_version, environment);
COMMENT ON COLUMN {MINUTE_TABLE}.service_version IS
    'otelcost: service.version or VCS revision of the spans; empty: not known';
COMMENT ON COLUMN {MINUTE_TABLE}.environment IS
    'otelcost: deployment.environment.name of the spans; empty: not known';
"""


@dataclass(frozen=True)
class SchemaInfo:
    """What ``init_db`` found and did: the version now, whether TimescaleDB is used, and
    the descriptions of the migrations it applied (empty when it was up to date)."""

    version: int
    timescale: bool
    applied: tuple[str, ...]


def init_db(dsn: str, *, timescale: bool | None = None, timeout: float = 10.0) -> SchemaInfo:
    """Create or upgrade the rollup schema in ``dsn``'s database (idempotent).

    ``timescale=None`` uses TimescaleDB when ``pg_available_extensions`` lists it (and
    creates the extension); False never does; True requires it. The choice is made when
    migration 2 runs and recorded in ``schema_version``; later runs keep it.
    """
    with connect(dsn, timeout=timeout) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
                    version integer PRIMARY KEY,
                    description text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            applied = _applied(conn)
            if max(applied, default=0) > SCHEMA_VERSION:
                raise SchemaError(
                    f"the database has rollup schema version {max(applied)}, newer than "
                    f"this otelcost ({SCHEMA_VERSION}): upgrade otelcost"
                )
            done: list[str] = []
            if 1 not in applied:
                conn.execute(_TABLES)
                done.append(_record(conn, 1, "cost_minute and kafka_offsets tables"))
            if 2 not in applied:
                use = _want_timescale(conn, timescale)
                if use:
                    _timescale.create(conn, MINUTE_TABLE, DAILY_VIEW, _DAILY_COLUMNS)
                    done.append(_record(conn, 2, _timescale.DESCRIPTION))
                else:
                    conn.execute(_DAILY_VIEW)
                    done.append(_record(conn, 2, "cost_daily view (plain PostgreSQL)"))
            if 3 not in applied:
                conn.execute(_COST_INPUTS)
                done.append(_record(conn, 3, "inputs of cost kept for re-pricing"))
            if 4 not in applied:
                conn.execute(_DEPLOY)
                done.append(_record(conn, 4, "rows keyed by service version and environment"))
        info = SchemaInfo(SCHEMA_VERSION, _uses_timescale(conn), tuple(done))
    for description in done:
        _logger.info("applied migration: %s", description)
    return info


def check_schema(conn: psycopg.Connection[Any]) -> bool:
    """Raise SchemaError unless the schema is at ``SCHEMA_VERSION``; True if TimescaleDB."""
    try:
        applied = _applied(conn)
    except psycopg.errors.UndefinedTable:
        raise SchemaError(
            f"no otelcost rollup schema in this database: run 'otelcost rollup --init-db "
            f"--dsn ...' first (schema {SCHEMA!r})"
        ) from None
    if max(applied, default=0) != SCHEMA_VERSION:
        raise SchemaError(
            f"rollup schema version {max(applied, default=0)} in the database, this otelcost "
            f"needs {SCHEMA_VERSION}: run 'otelcost rollup --init-db'"
        )
    return _uses_timescale(conn)


def apply_retention(dsn: str, *, days: int = DEFAULT_RETENTION_DAYS, timeout: float = 10.0) -> int:
    """Delete the minute rows of UTC days that ended more than ``days`` days ago.

    Keeps today and the ``days`` whole days before it, so the oldest day kept is never
    partial. Deletes in chunks (one short transaction each) and returns the rows deleted;
    with TimescaleDB drops whole chunks instead and returns -1 (count unknown).
    """
    if days < 1:
        raise ValueError(f"retention must be at least 1 day, got {days}")
    with connect(dsn, timeout=timeout) as conn:
        timescale = check_schema(conn)
        row = conn.execute(
            "SELECT date_trunc('day', now(), 'UTC') - make_interval(days => %s)", (days,)
        ).fetchone()
        assert row is not None
        cutoff = row[0]
        if timescale:
            _timescale.drop_before(conn, MINUTE_TABLE, cutoff)
            _logger.info("dropped chunks of %s before %s", MINUTE_TABLE, cutoff)
            return -1
        deleted = 0
        while True:
            with conn.transaction():
                cursor = conn.execute(
                    f"""DELETE FROM {MINUTE_TABLE} WHERE ctid = ANY(ARRAY(
                        SELECT ctid FROM {MINUTE_TABLE} WHERE bucket < %s LIMIT %s))""",
                    (cutoff, _DELETE_CHUNK),
                )
                count = cursor.rowcount
            deleted += count
            if count < _DELETE_CHUNK:
                break
    _logger.info("retention: deleted %d rows of %s before %s", deleted, MINUTE_TABLE, cutoff)
    return deleted


def _applied(conn: psycopg.Connection[Any]) -> set[int]:
    return {row[0] for row in conn.execute(f"SELECT version FROM {VERSION_TABLE}")}


def _record(conn: psycopg.Connection[Any], version: int, description: str) -> str:
    conn.execute(
        f"INSERT INTO {VERSION_TABLE} (version, description) VALUES (%s, %s)",
        (version, description),
    )
    return f"{version}: {description}"


def _want_timescale(conn: psycopg.Connection[Any], wanted: bool | None) -> bool:
    """Whether to use TimescaleDB, creating the extension when it is used."""
    if wanted is False:
        return False
    available = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if available is None:
        if wanted:
            raise SchemaError("TimescaleDB was asked for, but the server does not have it")
        return False
    try:
        with conn.transaction():  # a savepoint: a failure leaves the migration usable
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except DatabaseError as exc:
        if wanted:
            raise SchemaError(f"cannot create the timescaledb extension: {exc}") from exc
        # e.g. installed but not in shared_preload_libraries, or no privilege
        _logger.warning("TimescaleDB is available but unusable (%s): plain PostgreSQL", exc)
        return False
    return True


def _uses_timescale(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(f"SELECT description FROM {VERSION_TABLE} WHERE version = 2").fetchone()
    return row is not None and row[0] == _timescale.DESCRIPTION
