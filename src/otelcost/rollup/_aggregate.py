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

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from otelcost.stream.schema2 import Envelope, Row

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
_NO_USAGE: Mapping[str, float] = MappingProxyType({})
_NESTED = {"entry": False}  # the extras of a nested span's record, when that is all

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

    def merge(self, other: Inputs) -> None:
        self.add(other.spans, other.duration_ms, other.units)


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

    def add(self, other: Totals) -> None:
        self.cost_nanos += other.cost_nanos
        self.spans += other.spans
        self.records += other.records
        self.unpriced_spans += other.unpriced_spans
        self.duration_ms += other.duration_ms
        self.entry.merge(other.entry)
        self.nested.merge(other.nested)


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

    def add_rows(self, envelope: Envelope, rows: Sequence[Row]) -> None:
        """Add the valid records of one message (``decode_rows``) to their rows.

        A span's priced record without usage (six elements, or a nested span's seventh
        ``{"entry": false}``) is summed per (minute, operation) first, so that it reaches
        its row once per message.
        """
        # (minute, operation, entry) -> [cost_nanos, records, duration_ms]
        plain: dict[tuple[int, str, bool], list[Any]] = {}
        others: list[Row] = []
        for row in rows:
            if len(row) == 6:
                entry = True
            elif row[6] == _NESTED:
                entry = False
            else:
                others.append(row)
                continue
            timestamp = row[5]
            key = (timestamp - timestamp % MINUTE_MS, row[2], entry)
            sums = plain.get(key)
            if sums is None:
                plain[key] = [row[3], 1, row[4]]
            else:
                sums[0] += row[3]
                sums[1] += 1
                sums[2] += row[4]
        shared = _Shared(envelope)
        for (bucket, operation, entry), (nanos, count, duration) in plain.items():
            totals = self._totals(shared, bucket, operation, count)
            totals.cost_nanos += nanos
            totals.spans += count
            totals.records += count
            totals.duration_ms += duration
            inputs = totals.entry if entry else totals.nested
            inputs.spans += count
            inputs.duration_ms += duration
        for row in others:
            extra = row[6]
            spans = extra.get("span_count", 1)
            totals = self._totals(shared, bucket_start(row[5]), row[2], 1)
            totals.cost_nanos += row[3]
            totals.spans += spans
            totals.records += 1
            if extra.get("error") is not None:
                totals.unpriced_spans += spans
            totals.duration_ms += row[4]
            inputs = totals.entry if extra.get("entry", True) else totals.nested
            inputs.add(spans, row[4], extra.get("usage") or _NO_USAGE)
        self.records += len(rows)

    def merge(self, other: MinuteRollup) -> None:
        """Add ``other``'s rows to these."""
        for key, theirs in other._rows.items():
            ours = self._rows.get(key)
            if ours is None:
                ours = self._rows[key] = Totals()
            ours.add(theirs)
        self.records += other.records
        self.sanitized += other.sanitized

    def rows(self) -> Iterator[tuple[Key, Totals]]:
        """(key, totals) in key order."""
        for key in sorted(self._rows):
            yield key, self._rows[key]

    def _totals(self, shared: _Shared, bucket: int, operation: str, records: int) -> Totals:
        """The row of ``operation`` in minute ``bucket`` (``records`` of the message's
        records go there: counted as sanitized when a key had to be cleaned)."""
        storable = _storable(operation, MAX_OPERATION_BYTES)
        if shared.sanitized or storable is not operation:
            self.sanitized += records
        key = (bucket, shared.service, storable, shared.currency, shared.version, shared.env)
        totals = self._rows.get(key)
        if totals is None:
            totals = self._rows[key] = Totals()
        return totals


class _Shared:
    """The storable keys of one message's envelope."""

    __slots__ = ("currency", "env", "sanitized", "service", "version")

    def __init__(self, envelope: Envelope) -> None:
        self.service = _storable(envelope.service, None)
        self.currency = _storable(envelope.currency, MAX_CURRENCY_BYTES)
        self.version = _storable(envelope.service_version or "", None)
        self.env = _storable(envelope.environment or "", None)
        self.sanitized = (
            self.service is not envelope.service or self.currency is not envelope.currency
        )


def _storable(text: str, max_bytes: int | None) -> str:
    """``text`` itself when PostgreSQL can store and index it, else a cleaned copy."""
    clean = text.replace("\x00", "\ufffd") if "\x00" in text else text
    if max_bytes is not None and len(clean) * 4 > max_bytes:  # cheap test first
        encoded = clean.encode("utf-8")
        if len(encoded) > max_bytes:
            keep = max_bytes - len(_ELLIPSIS.encode("utf-8"))
            clean = encoded[:keep].decode("utf-8", "ignore") + _ELLIPSIS
    return clean
