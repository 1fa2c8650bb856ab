"""Cost per request per deploy (``otelcost report --dsn ... --by version``).

``read_versions`` sums the rollups of a window by service, deployment environment, service
version and currency, and orders each (service, environment, currency) series by when a
version was first seen. A request is an entry span (rows rolled up before the inputs of
cost were kept count all their spans). Each version's cost per request is compared with
the previous version's: a change beyond ``threshold`` (a fraction, 0.1 = 10%) is flagged,
which is what a deploy that made requests more expensive looks like.

Money stays exact: cost per request is a ``Fraction`` of nano-units.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from otelcost.money import from_nanos
from otelcost.rollup._db import as_datetime, connect, read_window
from otelcost.rollup._schema import MINUTE_TABLE, check_schema

__all__ = ["DEFAULT_THRESHOLD", "VersionHistory", "VersionRow", "read_versions"]

DEFAULT_THRESHOLD = 0.1

_QUERY = f"""
SELECT service, environment, service_version, currency, sum(cost_nanos),
       sum(coalesce(entry_spans, spans)), sum(spans),
       (extract(epoch FROM min(bucket)) * 1000)::bigint,
       (extract(epoch FROM max(bucket)) * 1000)::bigint
FROM {MINUTE_TABLE}
WHERE bucket >= %s AND bucket < %s {{service}}
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 4, 8, 3
"""


@dataclass(frozen=True)
class VersionRow:
    """One version of one service in one environment and currency over the window.

    ``version``/``environment`` are ``""`` where the records did not say. ``first_seen``
    and ``last_seen`` are the minutes (UTC epoch ms) of its first and last rollup row.
    ``change`` is the relative change of cost per request against ``previous`` (the
    version seen before it in the same series), None for the first.
    """

    service: str
    environment: str
    version: str
    currency: str
    cost_nanos: int
    requests: int
    spans: int
    first_seen: int
    last_seen: int
    previous: str | None = None
    change: float | None = None
    flagged: bool = False

    @property
    def cost_per_request(self) -> Fraction | None:
        """Nano-units per request, exact; None without requests."""
        return Fraction(self.cost_nanos, self.requests) if self.requests else None

    def to_dict(self) -> dict[str, Any]:
        per_request = self.cost_per_request
        return {
            "service": self.service,
            "environment": self.environment or None,
            "version": self.version or None,
            "currency": self.currency,
            "cost": from_nanos(self.cost_nanos),
            "cost_nanos": self.cost_nanos,
            "requests": self.requests,
            "spans": self.spans,
            "cost_per_request": None if per_request is None else float(per_request) / 1e9,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "previous": self.previous,
            "change": self.change,
            "flagged": self.flagged,
        }


@dataclass(frozen=True)
class VersionHistory:
    """The window ``[since, until)`` (UTC epoch ms), the threshold, and the rows by series
    (service, environment, currency), each series' versions in the order first seen."""

    since: int
    until: int
    threshold: float
    rows: tuple[VersionRow, ...] = field(default=())

    @property
    def flagged(self) -> tuple[VersionRow, ...]:
        return tuple(row for row in self.rows if row.flagged)

    def to_dict(self) -> dict[str, Any]:
        """The ``otelcost report --dsn --by version --json`` document."""
        return {
            "by": "version",
            "since": self.since,
            "until": self.until,
            "threshold": self.threshold,
            "rows": [row.to_dict() for row in self.rows],
        }


def read_versions(
    dsn: str,
    *,
    since_ms: int,
    until_ms: int | None = None,
    service: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    timeout: float = 10.0,
) -> VersionHistory:
    """Cost per request per version from the minute holding ``since_ms`` until
    ``until_ms`` (default: now), optionally of one ``service``. Raises ``SchemaError``
    without an up-to-date schema and psycopg errors when the database cannot be read."""
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    since, until = read_window(since_ms, until_ms)
    params: list[Any] = [as_datetime(since), as_datetime(until)]
    where = ""
    if service is not None:
        where = "AND service = %s"
        params.append(service)
    with connect(dsn, timeout=timeout) as conn:
        check_schema(conn)
        result = conn.execute(_QUERY.format(service=where), params).fetchall()
    rows: list[VersionRow] = []
    for name, environment, version, currency, cost, requests, spans, first, last in result:
        row = VersionRow(
            name, environment, version, currency, int(cost), int(requests), int(spans),
            int(first), int(last),
        )  # fmt: skip
        before = rows[-1] if rows else None
        if before is not None and (before.service, before.environment, before.currency) == (
            name,
            environment,
            currency,
        ):
            row = _against(row, before, threshold)
        rows.append(row)
    return VersionHistory(since, until, threshold, tuple(rows))


def _against(row: VersionRow, before: VersionRow, threshold: float) -> VersionRow:
    now, then = row.cost_per_request, before.cost_per_request
    if now is None or then is None or then == 0:
        return replace(row, previous=before.version)
    change = float(now / then - 1)
    return replace(row, previous=before.version, change=change, flagged=abs(change) > threshold)
