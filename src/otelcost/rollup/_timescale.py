"""The TimescaleDB variant of the rollup schema (migration 2 when the extension exists).

UNTESTED here: the development and CI machines run plain PostgreSQL 15 without
TimescaleDB, so this path is kept to a few documented statements (TimescaleDB >= 2.11,
which allows upserts into compressed chunks):

- ``cost_minute`` becomes a hypertable with 1-day chunks on ``bucket``;
- ``cost_daily`` is a continuous aggregate (``time_bucket('1 day', bucket)``, UTC) with
  real-time aggregation on, refreshed hourly over the last 3 days (late records are
  folded in by the refresh; older late records by a manual ``refresh_continuous_aggregate``);
- chunks older than 7 days are compressed, segmented by service;
- retention drops whole chunks (``drop_chunks``) instead of deleting rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = ["DESCRIPTION", "create", "drop_before"]

#: How ``schema_version`` records migration 2 on TimescaleDB.
DESCRIPTION = "hypertable, cost_daily continuous aggregate, compression policy (TimescaleDB)"


def create(conn: Any, minute_table: str, daily_view: str, daily_columns: str) -> None:
    """Turn ``minute_table`` into a hypertable and create ``daily_view`` (``day`` then
    ``daily_columns``, per service, operation and currency) and the policies (the
    extension exists already), inside the caller's transaction: the continuous
    aggregate is created ``WITH NO DATA``, which TimescaleDB allows in a transaction
    (its policy fills it)."""
    conn.execute(
        "SELECT create_hypertable(%s, 'bucket', chunk_time_interval => INTERVAL '1 day', "
        "if_not_exists => TRUE, migrate_data => TRUE)",
        (minute_table,),
    )
    conn.execute(
        f"ALTER TABLE {minute_table} SET (timescaledb.compress, "
        "timescaledb.compress_segmentby = 'service', timescaledb.compress_orderby = 'bucket')"
    )
    conn.execute(
        "SELECT add_compression_policy(%s, INTERVAL '7 days', if_not_exists => TRUE)",
        (minute_table,),
    )
    conn.execute(
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {daily_view}
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT time_bucket(INTERVAL '1 day', bucket) AS day,
               {daily_columns}
        FROM {minute_table}
        GROUP BY 1, 2, 3, 4
        WITH NO DATA"""
    )
    conn.execute(
        "SELECT add_continuous_aggregate_policy(%s, start_offset => INTERVAL '3 days', "
        "end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour', "
        "if_not_exists => TRUE)",
        (daily_view,),
    )


def drop_before(conn: Any, minute_table: str, cutoff: datetime) -> None:
    """Drop the chunks of ``minute_table`` entirely before ``cutoff``."""
    conn.execute("SELECT drop_chunks(%s, older_than => %s)", (minute_table, cutoff))
