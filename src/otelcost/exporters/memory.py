"""InMemoryCostExporter: the embedded default, for tests, the demo and in-process dashboards."""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from otelcost._fork import in_forked_child
from otelcost.exporters.base import CostExporter, CostExportResult
from otelcost.money import from_nanos
from otelcost.record import CostRecord

__all__ = ["DEFAULT_MAX_RECORDS", "CostTotals", "InMemoryCostExporter"]

DEFAULT_MAX_RECORDS = 10_000
"""Records kept by default (about 4 MB); the oldest are evicted first and counted."""


@dataclass(frozen=True, slots=True)
class CostTotals:
    """Running totals of one (service, operation); amounts exact in nano-units."""

    spans: int
    unpriced: int
    nanos: int

    @property
    def amount(self) -> float:
        """The total in currency units."""
        return from_nanos(self.nanos)


class InMemoryCostExporter(CostExporter):
    """Keeps the latest records and exact running totals per (service, operation).

    ``max_records`` bounds ``records`` (oldest evicted first, counted in
    ``stats()["evicted"]``); ``None`` keeps every record, for tests and short runs only.
    ``totals()`` never evicts: it has one entry per (service, operation), which the
    processor's cardinality guard bounds. An aggregate record counts ``span_count`` spans.
    Records exported after ``shutdown`` are refused (FAILURE) and counted.
    """

    def __init__(self, max_records: int | None = DEFAULT_MAX_RECORDS) -> None:
        if max_records is not None and max_records < 0:
            raise ValueError(f"max_records must be >= 0 or None, got {max_records}")
        self._records: collections.deque[CostRecord] = collections.deque(maxlen=max_records)
        self._max_records = max_records
        self._totals: dict[tuple[str, str], list[int]] = {}
        self._exported = 0
        self._evicted = 0
        self._refused = 0
        self._shutdown = False
        self._lock = threading.Lock()
        # The lock may have been held by the parent's worker.
        in_forked_child(self, _new_lock)

    @property
    def records(self) -> list[CostRecord]:
        """The records kept, oldest first (a copy)."""
        with self._lock:
            return list(self._records)

    def totals(self) -> dict[tuple[str, str], CostTotals]:
        """Totals per (service, operation) of everything exported since the last clear()."""
        with self._lock:
            return {key: CostTotals(*counts) for key, counts in self._totals.items()}

    def clear(self) -> None:
        """Forget the records and totals (counters in ``stats()`` are kept)."""
        with self._lock:
            self._records.clear()
            self._totals.clear()

    def export(self, records: Sequence[CostRecord]) -> CostExportResult:
        with self._lock:
            if self._shutdown:
                self._refused += len(records)
                return CostExportResult.FAILURE
            if self._max_records is not None:
                self._evicted += max(len(self._records) + len(records) - self._max_records, 0)
            self._records.extend(records)
            totals = self._totals
            for record in records:
                key = (record.service, record.operation)
                counts = totals.get(key)
                if counts is None:
                    counts = totals[key] = [0, 0, 0]
                counts[0] += record.span_count
                if record.error is not None:
                    counts[1] += record.span_count
                counts[2] += record.cost_nanos
            self._exported += len(records)
        return CostExportResult.SUCCESS

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        with self._lock:
            self._shutdown = True

    def stats(self) -> Mapping[str, int]:
        """``exported`` records, ``evicted`` from ``records``, ``refused`` after shutdown."""
        with self._lock:
            return {"exported": self._exported, "evicted": self._evicted, "refused": self._refused}


def _new_lock(exporter: InMemoryCostExporter) -> None:
    exporter._lock = threading.Lock()
