"""Reading a FOCUS cost export (the FinOps Foundation's open billing format) into exact sums.

A FOCUS export has one row per charge. ``read_focus`` keeps, per otelcost service and UTC
day, the sum of one cost column (``BilledCost`` by default, or ``EffectiveCost``), exactly:
amounts are read as decimals, summed exactly, and each (service, day) sum is rounded once
to integer nano-units (half to even). What it decides, row by row:

- the service: the value of one key of the ``Tags`` JSON object (``tag``, default
  ``service``), looked up in ``mapping`` when one is given (a value the mapping lacks stays
  as it is); without that tag, ``mapping`` is tried on the ``ResourceId``. A row with
  neither is spend with no service tag, kept by provider ``ServiceName``;
- the day: the UTC day in which ``ChargePeriodStart`` falls (a monthly fee counts on the
  first day of its month); the bill covers the whole UTC days of its billing periods
  (``BillingPeriodStart``/``End``, else of its charge periods);
- credits (``ChargeCategory`` ``Credit``) are kept apart, per service: they lower the
  invoice but say nothing about what the workload consumed, so they are left out of the
  billed cost compared with attributed cost. A credit must not be positive. A negative
  amount elsewhere is accepted only on an ``Adjustment`` or a correction
  (``ChargeClass`` ``Correction``), which corrects an earlier charge and counts with it;
- one currency: every row must have the same ``BillingCurrency``.

Anything else wrong (a missing column, an unreadable amount or date, a ``Tags`` value that
is not a JSON object, a period that ends before it starts, a second currency) raises
``FocusError`` naming the file, the row (1 is the header, so the first charge is row 2) and
the column. CSV is read with the standard library; Parquet needs ``pyarrow`` (the
``parquet`` extra).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from otelcost.errors import FocusError
from otelcost.money import NANOS_PER_UNIT

__all__ = [
    "COST_COLUMNS",
    "DAY_MS",
    "REQUIRED_COLUMNS",
    "Bill",
    "FocusError",
    "read_focus",
    "read_mapping",
]

DAY_MS = 86_400_000
CostColumn = Literal["BilledCost", "EffectiveCost"]
COST_COLUMNS: tuple[CostColumn, ...] = ("BilledCost", "EffectiveCost")
#: Columns every export must have (besides the cost column chosen).
REQUIRED_COLUMNS = (
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "BillingCurrency",
    "ServiceName",
    "Tags",
)
_OPTIONAL_COLUMNS = ("ChargeClass", "ResourceId", "BillingPeriodStart", "BillingPeriodEnd")
_NEGATIVE_OK = frozenset({"Adjustment"})
_CREDIT = "Credit"
_CORRECTION = "Correction"
_NANOS = Decimal(NANOS_PER_UNIT)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# ISO 8601 as the clouds write it: "2026-05-01T00:00:00Z", with fractions of a second
# (Azure), an offset, or BigQuery's "2026-05-01 00:00:00 UTC".
_INSTANT = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?P<fraction>\.\d+)?"
    r"\s*(?P<zone>Z|UTC|[+-]\d{2}:?\d{2})"
)
_MAX_CELL = 80  # how much of a bad value an error message quotes


@dataclass(frozen=True)
class Bill:
    """What a FOCUS export billed, in ``currency``, by service and UTC day.

    ``billed`` maps service → {day start (UTC epoch ms) → nano-units}; ``untagged`` the
    same by provider ``ServiceName`` for rows with no service; ``credits`` service (``""``
    for untagged rows) → nano-units (negative). ``since``/``until`` are the whole UTC days of
    the billing periods (``BillingPeriodStart``/``End``; without them, of the charge
    periods), within the window asked for (``until`` exclusive); ``rows`` counts the
    charges read; ``tag`` is the key of ``Tags`` that named the services.
    """

    source: str
    currency: str
    cost_column: CostColumn
    since: int
    until: int
    rows: int
    tag: str = "service"
    billed: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    untagged: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    credits: Mapping[str, int] = field(default_factory=dict)

    @property
    def days(self) -> tuple[int, ...]:
        """The start of each UTC day of the bill, oldest first."""
        return tuple(range(self.since, self.until, DAY_MS))

    def billed_nanos(self, service: str) -> int:
        """The billed cost of ``service`` over the whole bill (0 when it is not billed)."""
        return sum(self.billed.get(service, {}).values())

    @property
    def total_nanos(self) -> int:
        """Everything billed except credits: tagged and untagged."""
        tagged = sum(sum(days.values()) for days in self.billed.values())
        return tagged + sum(sum(days.values()) for days in self.untagged.values())


def read_mapping(path: str | Path) -> dict[str, str]:
    """A mapping file: a JSON object ``{tag value or ResourceId: otelcost service}``."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FocusError(f"{path}: cannot read the mapping file: {exc}") from None
    if not isinstance(doc, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in doc.items()
    ):
        raise FocusError(
            f"{path}: a mapping file is a JSON object of non-empty strings, "
            '{"tag value or ResourceId": "service"}'
        )
    return doc


def read_focus(
    path: str | Path,
    *,
    tag: str = "service",
    mapping: Mapping[str, str] | None = None,
    cost_column: CostColumn = "BilledCost",
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> Bill:
    """Read and validate the FOCUS export at ``path`` (``.csv``, ``.csv.gz`` or ``.parquet``).

    ``since_ms``/``until_ms`` keep only charges starting in that window (UTC epoch ms).
    Raises FocusError (see the module docs) for anything that cannot be used.
    """
    if cost_column not in COST_COLUMNS:
        raise FocusError(f"cost column must be one of {', '.join(COST_COLUMNS)}: {cost_column!r}")
    name = str(path)
    reader = _Reader(
        name,
        tag=tag,
        mapping=mapping or {},
        cost_column=cost_column,
        since_ms=since_ms,
        until_ms=until_ms,
    )
    for number, row in _rows(Path(path), (cost_column, *REQUIRED_COLUMNS)):
        reader.add(number, row)
    return reader.bill()


class _Reader:
    """Sums one export's rows as they come (exact decimals until ``bill``)."""

    def __init__(
        self,
        source: str,
        *,
        tag: str,
        mapping: Mapping[str, str],
        cost_column: CostColumn,
        since_ms: int | None,
        until_ms: int | None,
    ) -> None:
        self.source = source
        self.tag = tag
        self.mapping = mapping
        self.cost_column: CostColumn = cost_column
        self.since_ms = since_ms
        self.until_ms = until_ms
        self.currency: tuple[str, int] | None = None  # (code, row that set it)
        self.rows = 0
        self.first_day: int | None = None
        self.last_day: int | None = None
        self.billed: dict[str, dict[int, Decimal]] = {}
        self.untagged: dict[str, dict[int, Decimal]] = {}
        self.credits: dict[str, Decimal] = {}
        # Exports repeat the same dates and tag sets on many rows: each distinct text is
        # parsed once (bounded, so a file of unique values costs only the parsing).
        self.instants: dict[str, int] = {}
        self.services: dict[tuple[str, str], str | None] = {}

    def error(self, number: int, column: str, message: str) -> FocusError:
        return FocusError(
            f"{self.source}: row {number}, column {column}: {message}", row=number, column=column
        )

    def add(self, number: int, row: Mapping[str, Any]) -> None:
        start = self.instant(number, row, "ChargePeriodStart")
        end = self.instant(number, row, "ChargePeriodEnd")
        if end < start:
            raise self.error(number, "ChargePeriodEnd", "ends before ChargePeriodStart")
        if (self.since_ms is not None and start < self.since_ms) or (
            self.until_ms is not None and start >= self.until_ms
        ):
            return
        self.check_currency(number, row)
        amount = self.amount(number, row)
        category = _text(row.get("ChargeCategory"))
        service = self.service(number, row)
        if category == _CREDIT:
            if amount > 0:
                raise self.error(
                    number, self.cost_column, f"a Credit must not be positive: {amount}"
                )
            key = service or ""
            self.credits[key] = self.credits.get(key, Decimal(0)) + amount
        else:
            if (
                amount < 0
                and category not in _NEGATIVE_OK
                and (_text(row.get("ChargeClass")) != _CORRECTION)
            ):
                raise self.error(
                    number,
                    self.cost_column,
                    f"negative amount {amount} on a {category or 'blank'} charge: only Credit "
                    "and Adjustment charges and corrections (ChargeClass Correction) may be "
                    "negative",
                )
            day = start - start % DAY_MS
            if service is None:
                sums = self.untagged.setdefault(_text(row.get("ServiceName")) or "(none)", {})
            else:
                sums = self.billed.setdefault(service, {})
            sums[day] = sums.get(day, Decimal(0)) + amount
        first, last = start, end - 1 if end > start else start
        if row.get("BillingPeriodStart") and row.get("BillingPeriodEnd"):
            first = min(first, self.instant(number, row, "BillingPeriodStart"))
            last = max(last, self.instant(number, row, "BillingPeriodEnd") - 1)
        if self.since_ms is not None:
            first = max(first, self.since_ms)
        if self.until_ms is not None:
            last = min(last, self.until_ms - 1)
        first -= first % DAY_MS
        last -= last % DAY_MS
        self.first_day = first if self.first_day is None else min(self.first_day, first)
        self.last_day = last if self.last_day is None else max(self.last_day, last)
        self.rows += 1

    def instant(self, number: int, row: Mapping[str, Any], column: str) -> int:
        value = row.get(column)
        if isinstance(value, datetime):  # Parquet timestamps
            moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
            return (moment - _EPOCH) // timedelta(milliseconds=1)
        text = _text(value)
        known = self.instants.get(text)
        if known is not None:
            return known
        form = _INSTANT.fullmatch(text)
        if form is None:
            raise self.error(
                number,
                column,
                f"not an ISO 8601 date and time such as 2026-05-01T00:00:00Z: {_quote(text)}",
            )
        zone = form["zone"]
        # "+0200" as "+02:00": Python 3.10's fromisoformat reads only the latter
        zone = "+00:00" if zone in ("Z", "UTC") else f"{zone[:3]}:{zone[-2:]}"
        seconds = form["time"] if form["time"].count(":") == 2 else form["time"] + ":00"
        try:
            moment = datetime.fromisoformat(f"{form['date']}T{seconds}{zone}")
        except ValueError as exc:
            raise self.error(number, column, f"{exc}: {_quote(text)}") from None
        millis = (moment - _EPOCH) // timedelta(milliseconds=1)
        fraction = form["fraction"]
        millis += int((fraction[1:] + "000")[:3]) if fraction else 0
        _remember(self.instants, text, millis)
        return millis

    def check_currency(self, number: int, row: Mapping[str, Any]) -> None:
        code = _text(row.get("BillingCurrency"))
        if not re.fullmatch(r"[A-Z]{3}", code):
            raise self.error(
                number, "BillingCurrency", f"not an ISO 4217 code such as USD: {_quote(code)}"
            )
        if self.currency is None:
            self.currency = (code, number)
        elif code != self.currency[0]:
            first, at = self.currency
            raise self.error(
                number,
                "BillingCurrency",
                f"{code} after {first} (row {at}): currencies are never mixed; export one "
                "billing currency per file",
            )

    def amount(self, number: int, row: Mapping[str, Any]) -> Decimal:
        value = row.get(self.cost_column)
        if isinstance(value, Decimal):
            amount = value
        else:
            text = _text(value) if not isinstance(value, float) else repr(value)
            try:
                amount = Decimal(text)
            except InvalidOperation:
                raise self.error(
                    number, self.cost_column, f"not a decimal amount: {_quote(text)}"
                ) from None
        if not amount.is_finite():
            raise self.error(number, self.cost_column, f"not a finite amount: {amount}")
        return amount

    def service(self, number: int, row: Mapping[str, Any]) -> str | None:
        raw = row.get("Tags")
        if isinstance(raw, str):
            key = (raw, _text(row.get("ResourceId")))
            if key in self.services:
                return self.services[key]
            found = self.parse_service(number, row)
            _remember(self.services, key, found)
            return found
        return self.parse_service(number, row)

    def parse_service(self, number: int, row: Mapping[str, Any]) -> str | None:
        raw = row.get("Tags")
        tags: object = raw
        if isinstance(raw, str):
            text = raw.strip()
            try:
                tags = json.loads(text) if text else {}
            except ValueError as exc:
                raise self.error(number, "Tags", f"not a JSON object: {exc}") from None
        elif raw is None:
            tags = {}
        elif isinstance(raw, list):  # a Parquet map column: (key, value) pairs
            tags = dict(raw)
        if not isinstance(tags, dict):
            raise self.error(number, "Tags", f"not a JSON object: {_quote(str(raw))}")
        value = tags.get(self.tag)
        if value is not None and str(value).strip():
            text = str(value).strip()
            return self.mapping.get(text, text)
        resource = _text(row.get("ResourceId"))
        return self.mapping.get(resource) if resource else None

    def bill(self) -> Bill:
        if self.currency is None or self.first_day is None or self.last_day is None:
            raise FocusError(f"{self.source}: no charges (in the window asked for)")
        return Bill(
            source=self.source,
            currency=self.currency[0],
            cost_column=self.cost_column,
            since=self.first_day,
            until=self.last_day + DAY_MS,
            rows=self.rows,
            tag=self.tag,
            billed=_rounded(self.billed),
            untagged=_rounded(self.untagged),
            credits={key: _to_nanos(amount) for key, amount in sorted(self.credits.items())},
        )


_MEMO_LIMIT = 65_536


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value


def _rounded(sums: Mapping[str, Mapping[int, Decimal]]) -> dict[str, dict[int, int]]:
    return {
        key: {day: _to_nanos(amount) for day, amount in sorted(days.items())}
        for key, days in sorted(sums.items())
    }


def _to_nanos(amount: Decimal) -> int:
    """Exact decimal to nano-units, rounded once (half to even)."""
    return int((amount * _NANOS).to_integral_value(rounding=ROUND_HALF_EVEN))


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _quote(text: str) -> str:
    return repr(text if len(text) <= _MAX_CELL else text[:_MAX_CELL] + "…")


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(row number, row) of a CSV or Parquet export, after checking its columns."""
    if path.suffix.lower() == ".parquet":
        yield from _parquet_rows(path, required)
        return
    opener: Any = open
    if path.suffix.lower() == ".gz":
        import gzip

        opener = gzip.open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            _check_columns(str(path), reader.fieldnames or (), required)
            for number, row in enumerate(reader, start=2):
                if None in row:  # more cells than the header has
                    raise FocusError(
                        f"{path}: row {number}: {len(row) - 1 + len(row[None])} cells, the "
                        f"header has {len(reader.fieldnames or ())}",
                        row=number,
                    )
                yield number, row
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FocusError(f"{path}: cannot read the CSV file: {exc}") from None


def _parquet_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise FocusError(
            f"{path}: reading Parquet needs pyarrow: pip install 'otelcost[parquet]'"
        ) from None
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise FocusError(f"{path}: cannot read the Parquet file: {exc}") from None
    names = parquet.schema_arrow.names
    _check_columns(str(path), names, required)
    wanted = [name for name in (*required, *_OPTIONAL_COLUMNS) if name in names]
    number = 2  # numbered as the same export in CSV would be
    for batch in parquet.iter_batches(columns=wanted):
        for row in batch.to_pylist():
            yield number, row
            number += 1


def _check_columns(source: str, names: Iterable[str], required: tuple[str, ...]) -> None:
    missing = [name for name in required if name not in set(names)]
    if missing:
        raise FocusError(
            f"{source}: row 1 (header): missing FOCUS column(s) {', '.join(missing)}",
            row=1,
            column=missing[0],
        )
