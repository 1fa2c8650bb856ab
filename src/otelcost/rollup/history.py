"""Reading cost history back from the rollup tables (``otelcost report --dsn``).

``read_history(dsn, since_ms=...)`` sums ``cost_minute`` from the minute holding
``since_ms`` to now, by service (with a per-UTC-day series for charts), by operation, or
by UTC day. Money stays exact (``cost_nanos``); ``to_dict`` adds currency amounts.
Different currencies are never added together: every row carries its currency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from otelcost.money import from_nanos
from otelcost.rollup._db import as_datetime, connect, read_window
from otelcost.rollup._schema import MINUTE_TABLE, check_schema

__all__ = ["DAY_MS", "By", "CostRow", "History", "read_history"]

DAY_MS = 86_400_000
By = Literal["service", "operation", "day"]


@dataclass(frozen=True)
class CostRow:
    """Sums over the window for one service, (service, operation) or day, in one currency.

    ``daily`` (by service only) has the cost in nanos of each day of ``History.days``.
    """

    currency: str
    cost_nanos: int
    spans: int
    records: int
    unpriced_spans: int
    duration_ms: float
    service: str | None = None
    operation: str | None = None
    day: int | None = None
    daily: tuple[int, ...] = ()

    @property
    def unpriced_share(self) -> float:
        """Unpriced spans / spans (0 with no spans)."""
        return self.unpriced_spans / self.spans if self.spans else 0.0

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for name in ("service", "operation", "day"):
            if getattr(self, name) is not None:
                doc[name] = getattr(self, name)
        doc.update(
            currency=self.currency,
            cost=from_nanos(self.cost_nanos),
            cost_nanos=self.cost_nanos,
            spans=self.spans,
            records=self.records,
            unpriced_spans=self.unpriced_spans,
            unpriced_share=self.unpriced_share,
            duration_ms=self.duration_ms,
        )
        if self.daily:
            doc["daily_cost"] = [from_nanos(n) for n in self.daily]
        return doc


@dataclass(frozen=True)
class History:
    """The window ``[since, until)`` (UTC epoch ms, minute-aligned start), its UTC days
    (start of each, oldest first), and the rows, most expensive first (by day: in date
    order)."""

    by: By
    since: int
    until: int
    days: tuple[int, ...]
    rows: tuple[CostRow, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The ``otelcost report --dsn --json`` document."""
        return {
            "by": self.by,
            "since": self.since,
            "until": self.until,
            "days": list(self.days),
            "rows": [row.to_dict() for row in self.rows],
        }


def read_history(
    dsn: str,
    *,
    since_ms: int,
    until_ms: int | None = None,
    by: By = "service",
    service: str | None = None,
    limit: int | None = None,
    timeout: float = 10.0,
) -> History:
    """Cost from the minute holding ``since_ms`` until ``until_ms`` (default: now), summed
    ``by`` service, operation or day, optionally for one ``service``; ``limit`` keeps the
    most expensive rows (not applied by day). Raises ``SchemaError`` without a schema and
    psycopg errors when the database cannot be read."""
    if by not in ("service", "operation", "day"):
        raise ValueError(f"by must be service, operation or day, got {by!r}")
    since, until = read_window(since_ms, until_ms)
    days = tuple(range(since - since % DAY_MS, until, DAY_MS))
    window: list[Any] = [as_datetime(since), as_datetime(until)]
    where = "bucket >= %s AND bucket < %s"
    if service is not None:
        where += " AND service = %s"
        window.append(service)
    sums = "sum(cost_nanos), sum(spans), sum(records), sum(unpriced_spans), sum(duration_ms)"
    day = "(extract(epoch FROM date_trunc('day', bucket, 'UTC')) * 1000)::bigint"
    columns, order = {
        "service": (f"service, currency, {day}", "GROUP BY 1, 2, 3"),
        "operation": ("service, operation, currency", "GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3"),
        "day": (f"{day}, currency", "GROUP BY 1, 2 ORDER BY 1, 2"),
    }[by]
    with connect(dsn, timeout=timeout) as conn:
        check_schema(conn)
        result = conn.execute(
            f"SELECT {columns}, {sums} FROM {MINUTE_TABLE} WHERE {where} {order}", window
        ).fetchall()
    if by == "service":
        rows = _by_service(result, days)
    elif by == "operation":
        rows = [_row(values, service=s, operation=o, currency=c) for s, o, c, *values in result]
    else:
        rows = [_row(values, day=int(d), currency=c) for d, c, *values in result]
    if limit is not None and by != "day":
        rows = rows[:limit]
    return History(by, since, until, days, tuple(rows))


def _by_service(result: Sequence[Any], days: tuple[int, ...]) -> list[CostRow]:
    index = {start: i for i, start in enumerate(days)}
    totals: dict[tuple[str, str], list[Any]] = {}
    daily: dict[tuple[str, str], list[int]] = {}
    for service, currency, day, cost, spans, records, unpriced, duration in result:
        key = (service, currency)
        if key not in totals:
            totals[key] = [0, 0, 0, 0, 0.0]
            daily[key] = [0] * len(days)
        sums = totals[key]
        for i, value in enumerate((cost, spans, records, unpriced)):
            sums[i] += int(value)
        sums[4] += float(duration)
        daily[key][index[int(day)]] += int(cost)
    rows = [
        _row(sums, service=service, currency=currency, daily=tuple(daily[(service, currency)]))
        for (service, currency), sums in totals.items()
    ]
    rows.sort(key=lambda r: (-r.cost_nanos, r.service or "", r.currency))
    return rows


def _row(values: Sequence[Any], **keys: Any) -> CostRow:
    cost, spans, records, unpriced, duration = values
    return CostRow(
        cost_nanos=int(cost),
        spans=int(spans),
        records=int(records),
        unpriced_spans=int(unpriced),
        duration_ms=float(duration),
        **keys,
    )
