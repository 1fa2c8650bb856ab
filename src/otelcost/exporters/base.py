"""The cost exporter interface, mirroring the OpenTelemetry SpanExporter contract."""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping, Sequence

from otelcost.record import CostRecord

__all__ = ["CostExportResult", "CostExporter"]


class CostExportResult(enum.Enum):
    """Outcome of one ``CostExporter.export`` call."""

    SUCCESS = 0
    FAILURE = 1


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
