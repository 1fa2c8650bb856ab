"""A FOCUS bill next to the cost otelcost attributed, per service and UTC day.

``compare(bill, dsn)`` reads the rollups of the bill's days from PostgreSQL (what
``otelcost rollup`` kept) in the bill's currency, and sets each service's billed cost next
to its attributed cost. Everything is in exact nano-units:

- ``difference`` = billed - attributed; ``factor`` = billed ÷ attributed (what the
  service's prices would have to be multiplied by to match the bill);
- ``coverage`` = the share of the bill (credits left out, untagged spend in) whose service
  otelcost attributes cost to: the rest is spend with no service tag or services that
  are billed but never priced;
- services attributed but absent from the bill are listed too (``not billed``): a wrong
  tag, a mapping that misses them, or a bill of another account.

Rollups in other currencies are never added: they are reported apart, by currency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from otelcost.bill.focus import Bill
from otelcost.money import from_nanos

__all__ = [
    "Comparison",
    "ServiceComparison",
    "Status",
    "attributed_by_day",
    "build_comparison",
    "compare",
]

Status = Literal["billed and attributed", "billed, not attributed", "attributed, not billed"]


@dataclass(frozen=True)
class ServiceComparison:
    """One service over the bill's days: ``daily_*`` follow ``Comparison.days``."""

    service: str
    daily_billed: tuple[int, ...]
    daily_attributed: tuple[int, ...]
    credits_nanos: int = 0

    @property
    def billed_nanos(self) -> int:
        return sum(self.daily_billed)

    @property
    def attributed_nanos(self) -> int:
        return sum(self.daily_attributed)

    @property
    def difference_nanos(self) -> int:
        """Billed - attributed."""
        return self.billed_nanos - self.attributed_nanos

    @property
    def factor(self) -> Fraction | None:
        """Billed ÷ attributed, exact; None without attributed cost."""
        if self.attributed_nanos == 0:
            return None
        return Fraction(self.billed_nanos, self.attributed_nanos)

    @property
    def status(self) -> Status:
        if self.attributed_nanos == 0:
            return "billed, not attributed"
        if self.billed_nanos == 0:
            return "attributed, not billed"
        return "billed and attributed"

    def to_dict(self) -> dict[str, Any]:
        factor = self.factor
        return {
            "service": self.service,
            "status": self.status,
            "billed": from_nanos(self.billed_nanos),
            "billed_nanos": self.billed_nanos,
            "attributed": from_nanos(self.attributed_nanos),
            "attributed_nanos": self.attributed_nanos,
            "difference_nanos": self.difference_nanos,
            "factor": None if factor is None else float(factor),
            "credits_nanos": self.credits_nanos,
            "daily_billed_nanos": list(self.daily_billed),
            "daily_attributed_nanos": list(self.daily_attributed),
        }


@dataclass(frozen=True)
class Comparison:
    """The bill against the rollups over ``days`` (UTC day starts, epoch ms): services by
    billed cost, then attributed cost; ``untagged`` by provider service, largest first."""

    bill: Bill
    days: tuple[int, ...]
    services: tuple[ServiceComparison, ...]
    untagged: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    other_currencies: Mapping[str, int] = field(default_factory=dict)

    @property
    def currency(self) -> str:
        return self.bill.currency

    @property
    def billed_nanos(self) -> int:
        """Everything billed (credits left out), tagged or not."""
        return self.bill.total_nanos

    @property
    def attributed_nanos(self) -> int:
        return sum(s.attributed_nanos for s in self.services)

    @property
    def untagged_nanos(self) -> int:
        return sum(sum(daily) for daily in self.untagged.values())

    @property
    def covered_nanos(self) -> int:
        """The billed cost of the services otelcost attributes cost to."""
        return sum(s.billed_nanos for s in self.services if s.attributed_nanos)

    @property
    def coverage(self) -> Fraction:
        """``covered_nanos`` ÷ ``billed_nanos`` (0 for an empty bill)."""
        total = self.billed_nanos
        return Fraction(self.covered_nanos, total) if total > 0 else Fraction(0)

    def service(self, name: str) -> ServiceComparison:
        """The row of service ``name`` (KeyError when neither billed nor attributed)."""
        for row in self.services:
            if row.service == name:
                return row
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The ``otelcost bill compare --json`` document."""
        credits = sum(self.bill.credits.values())
        return {
            "source": self.bill.source,
            "currency": self.currency,
            "cost_column": self.bill.cost_column,
            "since": self.bill.since,
            "until": self.bill.until,
            "days": list(self.days),
            "charges": self.bill.rows,
            "billed": from_nanos(self.billed_nanos),
            "billed_nanos": self.billed_nanos,
            "attributed": from_nanos(self.attributed_nanos),
            "attributed_nanos": self.attributed_nanos,
            "covered_nanos": self.covered_nanos,
            "coverage": float(self.coverage),
            "untagged_nanos": self.untagged_nanos,
            "credits_nanos": credits,
            "services": [row.to_dict() for row in self.services],
            "untagged": [
                {"provider_service": name, "billed_nanos": sum(daily), "daily_nanos": list(daily)}
                for name, daily in self.untagged.items()
            ],
            "other_currencies": dict(self.other_currencies),
        }


def attributed_by_day(
    dsn: str, since_ms: int, until_ms: int, *, timeout: float = 10.0
) -> tuple[tuple[int, ...], dict[tuple[str, str], tuple[int, ...]]]:
    """(days, {(service, currency): cost nanos per day}) from the rollups of the window."""
    from otelcost.rollup import read_history

    history = read_history(dsn, since_ms=since_ms, until_ms=until_ms, by="service", timeout=timeout)
    return history.days, {(row.service or "", row.currency): row.daily for row in history.rows}


def compare(bill: Bill, dsn: str, *, timeout: float = 10.0) -> Comparison:
    """Compare ``bill`` with the rollups in ``dsn``'s database over the bill's days.

    Raises ``otelcost.rollup.SchemaError`` without a rollup schema, and psycopg errors
    when the database cannot be read.
    """
    days, attributed = attributed_by_day(dsn, bill.since, bill.until, timeout=timeout)
    return build_comparison(bill, days, attributed)


def build_comparison(
    bill: Bill, days: tuple[int, ...], attributed: Mapping[tuple[str, str], tuple[int, ...]]
) -> Comparison:
    """The comparison from attributed daily sums already read (see ``attributed_by_day``)."""
    index = {day: i for i, day in enumerate(days)}

    def series(by_day: Mapping[int, int]) -> tuple[int, ...]:
        values = [0] * len(days)
        for day, nanos in by_day.items():
            values[index[day]] += nanos
        return tuple(values)

    mine = {s: d for (s, c), d in attributed.items() if c == bill.currency}
    others: dict[str, int] = {}
    for (_, currency), daily in attributed.items():
        if currency != bill.currency:
            others[currency] = others.get(currency, 0) + sum(daily)
    empty = (0,) * len(days)
    services = [
        ServiceComparison(
            service=name,
            daily_billed=series(bill.billed.get(name, {})),
            daily_attributed=mine.get(name, empty),
            credits_nanos=bill.credits.get(name, 0),
        )
        for name in sorted(set(bill.billed) | set(mine))
    ]
    services.sort(key=lambda s: (-s.billed_nanos, -s.attributed_nanos, s.service))
    return Comparison(
        bill=bill,
        days=days,
        services=tuple(services),
        untagged={
            name: series(by_day)
            for name, by_day in sorted(
                bill.untagged.items(), key=lambda item: (-sum(item[1].values()), item[0])
            )
        },
        other_currencies=dict(sorted(others.items())),
    )
