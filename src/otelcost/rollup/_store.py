"""Writing rollups and Kafka offsets to PostgreSQL in one transaction (exactly-once effect).

``write`` locks the consumer group's offset rows of the batch's partitions (``SELECT ...
FOR UPDATE``, creating missing rows first), skips every message below the stored offset
(already counted: a replay, or a batch another consumer committed meanwhile), hands the
new dead letters to the caller (who must get them acknowledged by the DLQ, or raise),
upserts the per-minute sums and moves the offsets forward, then commits. Either all of
it is committed or none of it, so however often a batch is retried or replayed, each
message is counted once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from otelcost import _json
from otelcost.errors import StoreUnavailableError
from otelcost.rollup._aggregate import MinuteRollup
from otelcost.rollup._batch import RollupBatch
from otelcost.rollup._db import DatabaseError, connect, psycopg, redact_dsn
from otelcost.rollup._schema import ADD_UNITS, MINUTE_TABLE, OFFSETS_TABLE, check_schema
from otelcost.stream._consume import DeadLetter

__all__ = ["RollupStore", "StoreUnavailableError", "Written"]


_UPSERT = f"""
INSERT INTO {MINUTE_TABLE} AS m
    (bucket, service, operation, currency, service_version, environment, cost_nanos, spans,
     records, unpriced_spans, duration_ms, entry_spans, entry_ms, entry_units, nested_spans,
     nested_ms, nested_units)
SELECT to_timestamp(v.b / 1000), v.s, v.o, v.c, v.sv, v.e, v.n, v.sp, v.r, v.u, v.d,
       v.es, v.em, v.eu::jsonb, v.ns, v.nm, v.nu::jsonb
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
            %s::numeric[], %s::numeric[], %s::bigint[], %s::numeric[], %s::float8[],
            %s::numeric[], %s::float8[], %s::text[], %s::numeric[], %s::float8[], %s::text[])
     AS v(b, s, o, c, sv, e, n, sp, r, u, d, es, em, eu, ns, nm, nu)
ON CONFLICT (bucket, service, operation, currency, service_version, environment) DO UPDATE SET
    cost_nanos = m.cost_nanos + EXCLUDED.cost_nanos,
    spans = m.spans + EXCLUDED.spans,
    records = m.records + EXCLUDED.records,
    unpriced_spans = m.unpriced_spans + EXCLUDED.unpriced_spans,
    duration_ms = m.duration_ms + EXCLUDED.duration_ms,
    entry_spans = m.entry_spans + EXCLUDED.entry_spans,
    entry_ms = m.entry_ms + EXCLUDED.entry_ms,
    entry_units = {ADD_UNITS}(m.entry_units, EXCLUDED.entry_units),
    nested_spans = m.nested_spans + EXCLUDED.nested_spans,
    nested_ms = m.nested_ms + EXCLUDED.nested_ms,
    nested_units = {ADD_UNITS}(m.nested_units, EXCLUDED.nested_units)
"""
_CLAIM = f"""
INSERT INTO {OFFSETS_TABLE} (consumer_group, topic, partition, next_offset)
SELECT %s, %s, p, 0 FROM unnest(%s::int[]) AS p ORDER BY p
ON CONFLICT DO NOTHING
"""
_LOCK = f"""
SELECT partition, next_offset FROM {OFFSETS_TABLE}
WHERE consumer_group = %s AND topic = %s AND partition = ANY(%s)
ORDER BY partition FOR UPDATE
"""
_ADVANCE = f"""
UPDATE {OFFSETS_TABLE} AS o SET next_offset = v.n, updated_at = now()
FROM unnest(%s::int[], %s::bigint[]) AS v(p, n)
WHERE o.consumer_group = %s AND o.topic = %s AND o.partition = v.p AND v.n > o.next_offset
"""
_READ = f"""
SELECT partition, next_offset FROM {OFFSETS_TABLE}
WHERE consumer_group = %s AND topic = %s AND partition = ANY(%s)
"""


@dataclass(frozen=True, slots=True)
class Written:
    """One committed batch: records rolled up, messages skipped as already counted, rows
    upserted, dead letters sent, and records whose text keys had to be cleaned."""

    records: int
    duplicates: int
    rows: int
    dead_letters: int
    sanitized: int


class RollupStore:
    """Rollups and offsets of consumer group ``group`` on ``topic`` in ``dsn``'s database.

    Holds one connection, opened on first use and again after any failure; the schema is
    checked on every (re)connect (``SchemaError`` when it is missing). Not thread-safe.
    """

    def __init__(self, dsn: str, group: str, topic: str, *, timeout: float = 5.0) -> None:
        self._dsn = dsn
        self._group = group
        self._topic = topic
        self._timeout = timeout
        self._conn: psycopg.Connection[Any] | None = None

    def __repr__(self) -> str:
        return f"RollupStore({redact_dsn(self._dsn)!r}, group={self._group!r})"

    def offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        """The stored next offset of each of ``partitions`` that has one."""
        wanted = sorted(partitions)
        with self._session() as conn:
            rows = conn.execute(_READ, (self._group, self._topic, wanted)).fetchall()
        return {int(partition): int(offset) for partition, offset in rows}

    def write(
        self, batch: RollupBatch, dead_letter: Callable[[Sequence[DeadLetter]], None]
    ) -> Written:
        """Commit ``batch`` (see the module docs); ``dead_letter`` gets the dead letters
        not committed before and raises if they are not all acknowledged."""
        partitions = sorted(batch.next_offsets)
        group, topic = self._group, self._topic
        with self._session() as conn, conn.transaction():
            conn.execute(_CLAIM, (group, topic, partitions))
            stored = dict(conn.execute(_LOCK, (group, topic, partitions)).fetchall())
            fresh = [d for d in batch.dead if d.offset >= stored[d.partition]]
            dead_letter(fresh)
            rollup = MinuteRollup()
            duplicates = len(batch.dead) - len(fresh)
            for partition, kept in batch.sums.items():
                floor = stored[partition]
                for offset, sums in kept:
                    if offset >= floor:
                        rollup.merge(sums)
                    else:
                        duplicates += sums.records
            if rollup.records:
                conn.execute(_UPSERT, _columns(rollup))
            conn.execute(
                _ADVANCE,
                (partitions, [batch.next_offsets[p] for p in partitions], group, topic),
            )
        return Written(rollup.records, duplicates, len(rollup), len(fresh), rollup.sanitized)

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    @contextlib.contextmanager
    def _session(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection for one operation; a database error closes it (the next
        operation reconnects) and becomes StoreUnavailableError."""
        try:
            conn = self._connection()
        except DatabaseError as exc:
            raise StoreUnavailableError(_describe(exc)) from exc
        try:
            yield conn
        except DatabaseError as exc:
            self.close()
            raise StoreUnavailableError(_describe(exc)) from exc

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = connect(self._dsn, timeout=self._timeout)
            try:
                check_schema(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn


def _describe(exc: BaseException) -> str:
    message = " ".join(str(exc).split()) or type(exc).__name__
    return f"PostgreSQL: {type(exc).__name__}: {message}"


def _columns(rollup: MinuteRollup) -> tuple[list[Any], ...]:
    """The upsert's parameters: one list per column, rows in key order."""
    columns: tuple[list[Any], ...] = tuple([] for _ in range(17))
    for (bucket, service, operation, currency, version, environment), totals in rollup.rows():
        entry, nested = totals.entry, totals.nested
        for column, value in zip(
            columns,
            (
                bucket,
                service,
                operation,
                currency,
                version,
                environment,
                totals.cost_nanos,
                totals.spans,
                totals.records,
                totals.unpriced_spans,
                totals.duration_ms,
                entry.spans,
                entry.duration_ms,
                _json.dumps(entry.units).decode(),
                nested.spans,
                nested.duration_ms,
                _json.dumps(nested.units).decode(),
            ),
            strict=True,
        ):
            column.append(value)
    return columns
