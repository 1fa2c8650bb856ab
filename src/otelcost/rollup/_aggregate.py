"""Per-minute rollup rows: cost records summed by (minute, service, operation, currency,
service version, environment).

A record falls in the UTC minute of its ``timestamp`` (the span's end). Sums are exact
Python integers (nano-units, span counts), so nothing overflows before PostgreSQL's
``numeric`` columns take them. An overflow aggregate (``aggregate=True``) counts its
``span_count`` spans and already carries their summed duration; a record with ``error``
set (not priced) adds its spans to ``unpriced_spans``. Each row also sums the inputs of
cost (spans, ms and usage units) apart for entry and nested records (``CostRecord.entry``),
priced records or not, so that history can be re-priced by the rule live pricing follows.
A record without a service version or environment is keyed by "" there (not known).

Text keys are made storable: PostgreSQL ``text`` cannot hold NUL (replaced by U+FFFD),
and the primary-key index entry must stay below PostgreSQL's ~2.7 KB limit, so an
operation longer than ``MAX_OPERATION_BYTES`` or a currency longer than
``MAX_CURRENCY_BYTES`` (UTF-8) is cut and ends with "…". Such records keep their money
and are counted as ``sanitized``. (Services are at most 256 characters: ``decode``.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from otelcost.record import CostRecord

__all__ = [
    "MAX_CURRENCY_BYTES",
    "MAX_OPERATION_BYTES",
    "MINUTE_MS",
    "Inputs",
    "MinuteRollup",
    "Totals",
    "bucket_start",
]

MINUTE_MS = 60_000
MAX_OPERATION_BYTES = 1024
MAX_CURRENCY_BYTES = 64
_ELLIPSIS = "…"

# (bucket start ms, service, operation, currency, service version, environment)
Key = tuple[int, str, str, str, str, str]


def bucket_start(timestamp_ms: int) -> int:
    """The start (UTC epoch ms) of the minute holding ``timestamp_ms``."""
    return timestamp_ms - timestamp_ms % MINUTE_MS


@dataclass(slots=True)
class Inputs:
    """The inputs of cost of the entry (or the nested) spans of one row."""

    spans: int = 0
    duration_ms: float = 0.0
    units: dict[str, float] = field(default_factory=dict)

    def add(self, spans: int, duration_ms: float, usage: Mapping[str, float]) -> None:
        self.spans += spans
        self.duration_ms += duration_ms
        units = self.units
        for attr, amount in usage.items():
            units[attr] = units.get(attr, 0.0) + amount


@dataclass(slots=True)
class Totals:
    """The sums of one rollup row."""

    cost_nanos: int = 0
    spans: int = 0
    records: int = 0
    unpriced_spans: int = 0
    duration_ms: float = 0.0
    entry: Inputs = field(default_factory=Inputs)
    nested: Inputs = field(default_factory=Inputs)


class MinuteRollup:
    """Rows being summed for one write; ``rows()`` yields them in key order.

    Writing rows in one global order keeps two consumers that touch the same rows (after
    a rebalance) from deadlocking on each other's row locks.
    """

    def __init__(self) -> None:
        self._rows: dict[Key, Totals] = {}
        self.records = 0
        self.sanitized = 0

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, record: CostRecord) -> None:
        """Add one record to its row."""
        operation = _storable(record.operation, MAX_OPERATION_BYTES)
        currency = _storable(record.currency, MAX_CURRENCY_BYTES)
        service = _storable(record.service, None)
        if (
            operation is not record.operation
            or currency is not record.currency
            or service is not record.service
        ):
            self.sanitized += 1
        key = (
            bucket_start(record.timestamp),
            service,
            operation,
            currency,
            _storable(record.service_version or "", None),
            _storable(record.environment or "", None),
        )
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = Totals()
        row.cost_nanos += record.cost_nanos
        row.spans += record.span_count
        row.records += 1
        if record.error is not None:
            row.unpriced_spans += record.span_count
        row.duration_ms += record.duration_ms
        inputs = row.entry if record.entry else row.nested
        inputs.add(record.span_count, record.duration_ms, record.usage)
        self.records += 1

    def rows(self) -> Iterator[tuple[Key, Totals]]:
        """(key, totals) in key order."""
        for key in sorted(self._rows):
            yield key, self._rows[key]


def _storable(text: str, max_bytes: int | None) -> str:
    """``text`` itself when PostgreSQL can store and index it, else a cleaned copy."""
    clean = text.replace("\x00", "\ufffd") if "\x00" in text else text
    if max_bytes is not None and len(clean) * 4 > max_bytes:  # cheap test first
        encoded = clean.encode("utf-8")
        if len(encoded) > max_bytes:
            keep = max_bytes - len(_ELLIPSIS.encode("utf-8"))
            clean = encoded[:keep].decode("utf-8", "ignore") + _ELLIPSIS
    return clean
