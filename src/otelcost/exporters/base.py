"""The cost exporter interfaces, mirroring the OpenTelemetry SpanExporter contract.

Two kinds of exporter, chosen by what they need:

- ``CostExporter``: ``export(records)`` receives per-span CostRecords (Kafka, in-memory,
  console). The processor builds records only when at least one such exporter is there.
- ``CostSumExporter``: ``export_sums(sums)`` receives the deltas of a batch, per
  (service, operation, currency) and unpriced counts per (service, reason), never a
  per-span object (budgets, metrics). It is a CostExporter too: ``export(records)`` sums
  the records and calls ``export_sums``, so it also works wherever records are at hand.

All methods run on the processor's export worker, never on the application's threads.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from otelcost.record import CostRecord

__all__ = ["CostExportResult", "CostExporter", "CostSum", "CostSumExporter", "CostSums"]


class CostExportResult(enum.Enum):
    """Outcome of one ``export`` / ``export_sums`` call."""

    SUCCESS = 0
    FAILURE = 1


class CostSum(NamedTuple):
    """The priced spans of one (service, operation, currency) in a batch: their total cost
    in integer nano-units of the currency, and how many spans it covers."""

    nanos: int
    spans: int


@dataclass(frozen=True, slots=True)
class CostSums:
    """One batch's deltas: what sum-only exporters receive instead of records.

    ``costs``: ``(service, operation, currency) -> CostSum`` of the priced spans (free
    spans included, at 0 nanos). ``unpriced``: ``(service, reason) -> spans`` left
    unpriced, ``reason`` being the text of ``cost.error`` before ``:``. Spans that are not
    billable (docs/pricing.md) are in neither. Each span is in exactly one batch's sums.
    """

    costs: Mapping[tuple[str, str, str], CostSum] = field(default_factory=dict)
    unpriced: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.costs) or bool(self.unpriced)

    @classmethod
    def from_records(cls, records: Iterable[CostRecord]) -> CostSums:
        """The sums of ``records`` (an aggregate record counts ``span_count`` spans)."""
        costs: dict[tuple[str, str, str], list[int]] = {}
        unpriced: dict[tuple[str, str], int] = {}
        for record in records:
            if record.error is not None:
                key = (record.service, reason_of(record.error))
                unpriced[key] = unpriced.get(key, 0) + record.span_count
                continue
            total = costs.get((record.service, record.operation, record.currency))
            if total is None:
                total = costs[record.service, record.operation, record.currency] = [0, 0]
            total[0] += record.cost_nanos
            total[1] += record.span_count
        return cls({k: CostSum(*v) for k, v in costs.items()}, unpriced)


def reason_of(error: str) -> str:
    """The machine reason of an error text: what comes before the first ``:``."""
    return error.split(":", 1)[0].strip() or "unknown"


class CostExporter(abc.ABC):
    """Receives batches of CostRecords on the pipeline's worker thread, never on the app thread.

    Implementations must not raise from ``export``: they return FAILURE and count what they
    could not deliver. ``force_flush`` and ``shutdown`` return within their timeout.
    """

    @abc.abstractmethod
    def export(self, records: Sequence[CostRecord]) -> CostExportResult:
        """Deliver (or hand to a client library's own queue) one batch of records."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver everything buffered; True if it all went out within the timeout."""
        return True

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Flush within the timeout and release resources; later exports are dropped."""

    def stats(self) -> Mapping[str, int | float]:
        """Counters for operators (delivered, failed, dropped...). Never holds credentials."""
        return {}


class CostSumExporter(CostExporter):
    """An exporter that needs only sums: the processor calls ``export_sums`` once per batch
    and never builds records for it. Same contract as CostExporter otherwise."""

    @abc.abstractmethod
    def export_sums(self, sums: CostSums) -> CostExportResult:
        """Add one batch's deltas (never raises; FAILURE counts what was not taken)."""

    def export(self, records: Sequence[CostRecord]) -> CostExportResult:
        """Sum ``records`` and add them like a batch from the processor."""
        return self.export_sums(CostSums.from_records(records))
