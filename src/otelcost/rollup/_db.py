"""psycopg 3 plumbing: connecting with bounded timeouts, and DSNs safe to print.

psycopg is an optional dependency (the ``postgres`` extra): this is the only module of
``otelcost.rollup`` that imports it at import time, with an error that says what to install.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from otelcost.errors import MissingExtraError
from otelcost.rollup._aggregate import bucket_start

try:
    import psycopg
    from psycopg import conninfo
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError("PostgreSQL support", "psycopg 3", "postgres") from exc

__all__ = ["DatabaseError", "as_datetime", "connect", "psycopg", "read_window", "redact_dsn"]

#: Everything psycopg raises for a failed query or connection.
DatabaseError = psycopg.Error

# The server cancels any statement running longer than this (a hung lock or a huge
# table scan must not wedge the consumer); the consumer then retries the batch.
_STATEMENT_TIMEOUT_MS = 60_000


def connect(dsn: str, *, timeout: float = 5.0) -> psycopg.Connection[Any]:
    """An autocommit connection to ``dsn`` (URL or ``key=value`` conninfo; libpq's PG*
    variables and password file apply) that gives up after ``timeout`` seconds, in a UTC
    session with a statement timeout. Use ``with conn.transaction():`` for atomic work.

    TCP keepalives (unless the DSN sets its own) make a connection to a vanished server
    fail within about 30 s instead of hanging for the kernel's hours-long default.
    """
    given = conninfo.conninfo_to_dict(dsn)
    defaults: dict[str, Any] = {
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "application_name": "otelcost",
    }
    conn = psycopg.connect(
        dsn,
        autocommit=True,
        connect_timeout=max(1, round(timeout)),
        **{k: v for k, v in defaults.items() if k not in given},
    )
    try:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute(f"SET statement_timeout = {_STATEMENT_TIMEOUT_MS}")
    except BaseException:
        conn.close()
        raise
    return conn


def redact_dsn(dsn: str) -> str:
    """``dsn`` without its password, for messages and logs."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    params.pop("password", None)
    return conninfo.make_conninfo(**{k: str(v) for k, v in params.items()}) or "<libpq defaults>"


def read_window(since_ms: int, until_ms: int | None) -> tuple[int, int]:
    """The window ``[since, until)`` (UTC epoch ms) a history read covers: from the start of
    the minute holding ``since_ms`` until ``until_ms`` (default: now); ValueError when it
    is empty."""
    until = int(time.time() * 1000) if until_ms is None else until_ms
    since = bucket_start(since_ms)
    if since >= until:
        raise ValueError("since must be before until")
    return since, until


def as_datetime(epoch_ms: int) -> datetime:
    """``epoch_ms`` as a UTC datetime (a ``timestamptz`` parameter)."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
