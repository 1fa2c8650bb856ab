"""InMemoryCostExporter: the embedded default, for tests, the demo and in-process dashboards."""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanContext

from otelcost import environment
from otelcost._fork import in_forked_child
from otelcost.costing.coster import span_ids
from otelcost.exporters.base import CostExporter, CostExportResult
from otelcost.money import from_nanos
from otelcost.record import CostRecord, trusted_record

if TYPE_CHECKING:
    from otelcost.costing.coster import CostFields

try:  # InMemoryCostExporter's rows in C, where the extension is built
    from otelcost.costing import _speedups
except ImportError:
    _speedups = None  # type: ignore[assignment]

__all__ = ["DEFAULT_MAX_RECORDS", "CostTotals", "InMemoryCostExporter"]

_NO_USAGE: Mapping[str, float] = MappingProxyType({})

DEFAULT_MAX_RECORDS = 10_000
"""Records kept by default (about 4 MB); the oldest are evicted first and counted."""

# Values in a row of ``_export_costs`` (``_record_of`` reads them); a chunk of CostRecords
# has one per record.
_ROW_WIDTH = 15


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
    Records exported after ``shutdown`` are refused (FAILURE) and counted. Fed by a
    ``CostSpanProcessor``, it keeps each span's values and builds the records when
    ``records`` is first read, not per span on the processor's export worker.
    ``environ``: where ``OTELCOST_PURE_PYTHON`` is read, once, here (default
    ``os.environ``): set, the rows are made in Python rather than in C.
    """

    def __init__(
        self,
        max_records: int | None = DEFAULT_MAX_RECORDS,
        *,
        environ: environment.Environ | None = None,
    ) -> None:
        if max_records is not None and max_records < 0:
            raise ValueError(f"max_records must be >= 0 or None, got {max_records}")
        # CostRecords, and rows of the processor's costs until ``records`` reads them, in
        # chunks (one per export call) of ``_kept`` records in all: (width, values), a row
        # being ``width`` consecutive values. A full collection walks a container's every
        # item, tracked or not: 10,000 rows in one deque are 10,000 cold object headers
        # read per full collection, a pause of the whole application. A chunk of rows is
        # one flat tuple of plain values, untracked (at once in C, at its first collection
        # in Python): the deque holds a few hundred chunks, no collection walks the values,
        # and a batch of spans allocates one container, not one per span (each counts
        # towards the next young collection, tracked or not).
        self._chunks: collections.deque[tuple[int, tuple[Any, ...]]] = collections.deque()
        self._kept = 0
        self._unbuilt = False
        self._max_records = max_records
        self._totals: dict[tuple[str, str], list[int]] = {}
        self._exported = 0
        self._evicted = 0
        self._refused = 0
        self._shutdown = False
        self._lock = threading.Lock()
        # OTELCOST_PURE_PYTHON: no compiled code, where it is built (the same rows).
        pure = environment.flag(environment.PURE_PYTHON, environ)
        self._rows = _python_rows if _speedups is None or pure else _compiled_rows
        # The lock may have been held by the parent's worker.
        in_forked_child(self, _new_lock)

    @property
    def records(self) -> list[CostRecord]:
        """The records kept, oldest first (a copy)."""
        with self._lock:
            if not self._unbuilt:
                return [record for _, chunk in self._chunks for record in chunk]
            # Built once, here, rather than per span on the export worker.
            records = [
                chunk[i] if width == 1 else _record_of(chunk[i : i + width])
                for width, chunk in self._chunks
                for i in range(0, len(chunk), width)
            ]
            self._chunks = collections.deque([(1, tuple(records))] if records else ())
            self._unbuilt = False
            return records

    def totals(self) -> dict[tuple[str, str], CostTotals]:
        """Totals per (service, operation) of everything exported since the last clear()."""
        with self._lock:
            return {key: CostTotals(*counts) for key, counts in self._totals.items()}

    def clear(self) -> None:
        """Forget the records and totals (counters in ``stats()`` are kept)."""
        with self._lock:
            self._chunks.clear()
            self._kept = 0
            self._totals.clear()

    def export(self, records: Sequence[CostRecord]) -> CostExportResult:
        with self._lock:
            if not self._keep(tuple(records), 1):
                return CostExportResult.FAILURE
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
        return CostExportResult.SUCCESS

    def _export_costs(self, costs: Sequence[CostFields]) -> CostExportResult:
        """``export`` of the costs' CostRecords, from the processor's per-span tuples (each
        with a span context). A private opt-in of CostSpanProcessor's export worker.

        Each cost is kept as a row of its records' plain values (ints, floats, strings;
        the usage only when there is one), the batch's rows one after another in one
        tuple, and made a CostRecord when ``records`` is read: the export worker builds
        no object per span, and a tuple of plain values is left alone by the garbage
        collector (the compiled ``memory_rows`` makes it untracked; Python's collector
        untracks it at its first collection), where 10,000 records or cost tuples would
        be walked by every full collection (pauses of the whole application) and would
        bring every young collection 10,000 allocations nearer. Totals add each span's
        integer.
        """
        with self._lock:
            if self._shutdown:
                self._refused += len(costs)
                return CostExportResult.FAILURE
            self._keep(self._rows(costs, self._totals), _ROW_WIDTH)
            self._unbuilt = True
        return CostExportResult.SUCCESS

    def _keep(self, chunk: tuple[Any, ...], width: int) -> bool:
        """Keep the records of ``chunk``, ``width`` values each (under the lock), evicting
        the oldest; False after shutdown."""
        count = len(chunk) // width
        if self._shutdown:
            self._refused += count
            return False
        self._exported += count
        if chunk:
            self._chunks.append((width, chunk))
            self._kept += count
        limit = self._max_records
        if limit is not None and self._kept > limit:
            over = self._kept - limit
            self._evicted += over
            self._kept = limit
            chunks = self._chunks
            while chunks and over * chunks[0][0] >= len(chunks[0][1]):
                width, oldest = chunks.popleft()
                over -= len(oldest) // width
            if over:
                width, oldest = chunks[0]
                chunks[0] = (width, oldest[over * width :])
        return True

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        with self._lock:
            self._shutdown = True

    def stats(self) -> Mapping[str, int]:
        """``exported`` records, ``evicted`` from ``records``, ``refused`` after shutdown."""
        with self._lock:
            return {"exported": self._exported, "evicted": self._evicted, "refused": self._refused}


def _python_rows(
    costs: Sequence[CostFields], totals: dict[tuple[str, str], list[int]]
) -> tuple[Any, ...]:
    """The rows ``_export_costs`` keeps for ``costs``, one after another in one tuple
    (``_ROW_WIDTH`` values each), each cost added to ``totals`` (``_speedups.memory_rows``
    does the same in C)."""
    rows: list[Any] = []
    for named, binding, nanos, duration_ms, end_ms, usage, error, entry, _, ctx in costs:
        snap = binding.snapshot
        service, operation = named.service, named.operation
        trace_id, span_id = span_ids(ctx)
        rows.extend(
            (
                trace_id,
                span_id,
                service,
                operation,
                nanos,
                snap.currency,
                duration_ms,
                end_ms,
                snap.region,
                snap.version,
                usage or None,
                error,
                entry,
                *named.deploy,
            )
        )
        key = (service, operation)
        counts = totals.get(key)
        if counts is None:
            counts = totals[key] = [0, 0, 0]
        counts[0] += 1
        if error is not None:
            counts[1] += 1
        counts[2] += nanos
    return tuple(rows)


def _compiled_rows(
    costs: Sequence[CostFields], totals: dict[tuple[str, str], list[int]]
) -> tuple[Any, ...]:
    """``_python_rows`` in C (``_speedups.memory_rows``)."""
    return _speedups.memory_rows(costs, totals, SpanContext)


def _record_of(row: tuple[Any, ...]) -> CostRecord:
    """The CostRecord of a row ``_export_costs`` kept: ``cost_record`` of its cost tuple."""
    trace_id, span_id, service, operation, nanos, *rest = row
    currency, duration_ms, end_ms, region, version, usage, error, entry, *deploy = rest
    return trusted_record(
        "%032x" % trace_id,  # noqa: UP031 - as cost_record spells them
        "%016x" % span_id,  # noqa: UP031
        service,
        operation,
        nanos / 1_000_000_000,
        currency,
        duration_ms,
        end_ms,
        region,
        version,
        _NO_USAGE if usage is None else usage,
        error,
        entry,
        *deploy,
    )


def _new_lock(exporter: InMemoryCostExporter) -> None:
    exporter._lock = threading.Lock()
