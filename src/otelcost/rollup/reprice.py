"""Re-pricing cost history under another pricing table (``otelcost report --reprice``).

The rollup keeps, per minute, service, operation and currency, the inputs of cost apart
for entry and nested spans: spans, summed milliseconds and summed usage units. Cost is
linear in them, so :meth:`PriceMatch.charge_sums` prices the sums exactly as live pricing
(:meth:`PriceMatch.charge`) would have priced the spans, one by one, under the new table.
What is not exact, and why:

- a dated entry is applied per minute, at the start of the minute (a ``from`` on a whole
  minute, as contracts start, is exact; one inside a minute applies from the next minute);
- live pricing rounded each span to the nano-unit, re-pricing rounds each (minute, service,
  operation) group once: an identical table may differ by up to half a nano-unit per span;
- only the usage live pricing recorded can be re-priced: ``CostRecord.usage`` holds the
  attributes the live table priced (every ``gen_ai.usage.*`` one for an unpriced span);
- nested spans no key targeted and that carried no usage were not billable and left no
  record, so a new table that targets them has nothing to price there;
- a key with a catalog or usage tiers prices each call by that call's own model or size,
  which sums of many calls cannot tell: its spans are left out and counted, like rows
  rolled up before the inputs were kept (schema version 3).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from otelcost.errors import PricingError, PricingNotFoundError
from otelcost.money import from_nanos
from otelcost.pricing.table import ALWAYS, PricingTable
from otelcost.rollup._db import as_datetime, connect, read_window
from otelcost.rollup._schema import MINUTE_TABLE, check_schema

__all__ = ["DEFAULT_CURRENCY", "RepricedRow", "Repricing", "reprice_history"]

#: The currency of a table that declares none (the flat form), as ``pricing check`` shows.
DEFAULT_CURRENCY = "USD"

RepriceBy = Literal["service", "operation"]


@dataclass(frozen=True)
class RepricedRow:
    """One service (or service and operation) in the table's currency.

    ``recorded_nanos`` is the recorded cost of the ``spans`` whose inputs were kept and
    ``repriced_nanos`` their cost under the new table. ``unpriced_spans``: entry spans the
    new table has no price for (re-priced at 0; live they would be ``pricing_not_found``).
    ``skipped_spans`` and ``skipped_nanos``: spans, and their recorded cost, left out of both
    amounts: rolled up before the inputs of cost were kept, or matched by a key of the new
    table that prices each call apart (a catalog, usage tiers), which sums cannot be.
    """

    service: str
    operation: str | None
    currency: str
    recorded_nanos: int
    repriced_nanos: int
    spans: int
    unpriced_spans: int
    skipped_spans: int
    skipped_nanos: int

    @property
    def difference_nanos(self) -> int:
        """Re-priced minus recorded."""
        return self.repriced_nanos - self.recorded_nanos

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"service": self.service}
        if self.operation is not None:
            doc["operation"] = self.operation
        doc.update(
            currency=self.currency,
            recorded=from_nanos(self.recorded_nanos),
            repriced=from_nanos(self.repriced_nanos),
            difference=from_nanos(self.difference_nanos),
            recorded_nanos=self.recorded_nanos,
            repriced_nanos=self.repriced_nanos,
            difference_nanos=self.difference_nanos,
            spans=self.spans,
            unpriced_spans=self.unpriced_spans,
            skipped_spans=self.skipped_spans,
            skipped_nanos=self.skipped_nanos,
        )
        return doc


@dataclass(frozen=True)
class Repricing:
    """History of ``[since, until)`` (UTC epoch ms) re-priced under the table of
    ``version`` in ``currency``; rows with the largest recorded cost first, and ``total``
    of every row (service ``*``), also of rows a limit left out."""

    by: RepriceBy
    since: int
    until: int
    version: str | None
    currency: str
    dated: bool  # the table has dated entries (applied per minute)
    per_call_keys: tuple[str, ...]  # keys with a catalog or usage tiers, whose spans are skipped
    total: RepricedRow
    rows: tuple[RepricedRow, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The ``otelcost report --dsn --reprice --json`` document."""
        return {
            "by": self.by,
            "since": self.since,
            "until": self.until,
            "version": self.version,
            "currency": self.currency,
            "dated": self.dated,
            "per_call_keys": list(self.per_call_keys),
            "rows": [row.to_dict() for row in self.rows],
            "total": self.total.to_dict(),
        }


def reprice_history(
    dsn: str,
    table: PricingTable,
    *,
    since_ms: int,
    until_ms: int | None = None,
    by: RepriceBy = "service",
    service: str | None = None,
    limit: int | None = None,
    timeout: float = 10.0,
) -> Repricing:
    """The history from the minute holding ``since_ms`` until ``until_ms`` (default: now)
    in ``table``'s currency, by service or operation, recorded and re-priced under
    ``table``; ``limit`` keeps the rows of largest recorded cost. Raises ``SchemaError``
    without an up-to-date schema and psycopg errors when the database cannot be read."""
    if by not in ("service", "operation"):
        raise ValueError(f"by must be service or operation, got {by!r}")
    since, until = read_window(since_ms, until_ms)
    currency = table.currency or DEFAULT_CURRENCY
    # Minutes between two consecutive starts of any dated entry share every price, so
    # each group of minutes is priced once, at the start of its first minute.
    starts = sorted(
        {
            start
            for match in table
            if match.schedule is not None
            for start in match.schedule.starts
            if start != ALWAYS and since < start < until
        }
    )
    # Only the usage the table prices matters: one sum per attribute and kind of span, in
    # the same scan (reading every jsonb key of every row would be several times slower).
    attrs = sorted(
        {
            attr
            for match in table
            for price in (match.schedule.prices if match.schedule else (match.price,))
            for attr in price.per_unit
        }
    )
    units = ", ".join(
        f"sum(({column} ->> %s::text)::numeric)"
        for column in ("entry_units", "nested_units")
        for _ in attrs
    )
    params: list[Any] = [[as_datetime(start) for start in starts], *attrs, *attrs]
    params += [as_datetime(since), as_datetime(until), currency]
    where = "bucket >= %s AND bucket < %s AND currency = %s"
    if service is not None:
        where += " AND service = %s"
        params.append(service)
    with connect(dsn, timeout=timeout) as conn:
        check_schema(conn)
        sums = conn.execute(
            f"""SELECT service, operation, currency, width_bucket(bucket, %s::timestamptz[]),
                   {units + "," if units else ""}
                   (extract(epoch FROM min(bucket)) * 1000)::bigint,
                   coalesce(sum(cost_nanos) FILTER (WHERE entry_spans IS NOT NULL), 0),
                   coalesce(sum(entry_spans), 0), coalesce(sum(entry_ms), 0),
                   coalesce(sum(nested_spans), 0), coalesce(sum(nested_ms), 0),
                   coalesce(sum(spans) FILTER (WHERE entry_spans IS NULL), 0),
                   coalesce(sum(cost_nanos) FILTER (WHERE entry_spans IS NULL), 0)
                FROM {MINUTE_TABLE} WHERE {where} GROUP BY 1, 2, 3, 4""",
            params,
        ).fetchall()
    rows, per_call = _reprice(table, by, attrs, sums)
    total = [0] * 6
    for row in rows:
        for i, value in enumerate(_amounts(row)):
            total[i] += value
    return Repricing(
        by,
        since,
        until,
        table.version,
        currency,
        dated=bool(starts),
        per_call_keys=per_call,
        total=RepricedRow("*", None, currency, *total),
        rows=rows[:limit] if limit is not None else rows,
    )


def _reprice(
    table: PricingTable,
    by: RepriceBy,
    attrs: Sequence[str],
    sums: Sequence[Any],
) -> tuple[tuple[RepricedRow, ...], tuple[str, ...]]:
    """The rows, and the keys that price per call (left out: sums cannot be priced so).

    Each of ``sums`` is a group: service, operation, currency, price period, the entry
    then the nested units of each of ``attrs`` (NULL: none), then the sums of the inputs.
    """
    totals: dict[tuple[str, str | None, str], list[int]] = {}
    per_call: set[str] = set()
    width = len(attrs)
    for service, operation, currency, _period, *values in sums:
        entry_units = _units(attrs, values[:width])
        nested_units = _units(attrs, values[width : 2 * width])
        first_ms, recorded, *inputs = values[2 * width :]
        entry_spans, entry_ms, nested_spans, nested_ms, skipped_spans, skipped_nanos = inputs
        key = (service, operation if by == "operation" else None, currency)
        row = totals.setdefault(key, [0] * 6)
        spans, repriced, unpriced = entry_spans + nested_spans, 0, 0
        match = charged = table.match(service, operation)
        try:
            if match is None:
                raise PricingNotFoundError(f"no price for {service!r} {operation!r}")
            # Nested spans are priced by the key that names them, as live pricing does.
            nested = table.match(service, operation, nested=True) or match
            for charged, entry, count, ms, usage in (
                (match, True, entry_spans, entry_ms, entry_units),
                (nested, False, nested_spans, nested_ms, nested_units),
            ):
                repriced += charged.charge_sums(
                    entry=entry,
                    spans=int(count),
                    duration_ms=float(ms),
                    usage=usage,
                    end_ms=int(first_ms),
                )
        except PricingNotFoundError:
            repriced, unpriced = 0, entry_spans
        except PricingError:  # a catalog or usage tiers: priced per call, not from sums
            per_call.add(charged.key if charged is not None else f"{service}:{operation}")
            skipped_spans += spans
            skipped_nanos += recorded
            recorded = spans = repriced = 0
        for i, value in enumerate(
            (recorded, repriced, spans, unpriced, skipped_spans, skipped_nanos)
        ):
            row[i] += int(value)
    rows = [
        RepricedRow(service, operation, currency, *amounts)
        for (service, operation, currency), amounts in totals.items()
    ]
    rows.sort(key=lambda r: (-r.recorded_nanos, -r.repriced_nanos, r.service, r.operation or ""))
    return tuple(rows), tuple(sorted(per_call))


def _units(attrs: Sequence[str], sums: Sequence[Decimal | None]) -> dict[str, Decimal]:
    return {attr: total for attr, total in zip(attrs, sums, strict=True) if total}


def _amounts(row: RepricedRow) -> Iterator[int]:
    yield from (
        row.recorded_nanos,
        row.repriced_nanos,
        row.spans,
        row.unpriced_spans,
        row.skipped_spans,
        row.skipped_nanos,
    )
