"""ConsoleCostExporter: records as JSON lines or one compact human line each."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Mapping, Sequence
from typing import Literal, TextIO

from otelcost.exporters.base import CostExporter, CostExportResult
from otelcost.record import CostRecord

__all__ = ["ConsoleCostExporter"]


class ConsoleCostExporter(CostExporter):
    """Writes each batch to ``out`` (default stdout) and flushes it.

    ``format="json"``: one schema-v1 CostRecord JSON document per line (the Kafka value).
    ``format="human"``: ``2026-11-27T08:00:00.123Z checkout GET /users/{id} 0.000001230 USD
    12.34 ms``, with ``ERROR <reason>`` in place of the amount for an unpriced span.
    A write error (closed file, broken pipe) makes the batch FAILURE and is counted; ``out``
    is never closed by this exporter.
    """

    def __init__(
        self, out: TextIO | None = None, format: Literal["json", "human"] = "json"
    ) -> None:
        if format not in ("json", "human"):
            raise ValueError(f"format must be 'json' or 'human', got {format!r}")
        self._out = out
        self._human = format == "human"
        self._written = 0
        self._failed = 0
        self._shutdown = False

    def export(self, records: Sequence[CostRecord]) -> CostExportResult:
        if self._shutdown:
            self._failed += len(records)
            return CostExportResult.FAILURE
        line = _human if self._human else _json
        text = "".join(line(record) for record in records)
        # Resolved at write time, so pytest's capsys and redirect_stdout see the output.
        out = self._out if self._out is not None else sys.stdout
        try:
            out.write(text)
            out.flush()
        except (OSError, ValueError):
            self._failed += len(records)
            return CostExportResult.FAILURE
        self._written += len(records)
        return CostExportResult.SUCCESS

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        self._shutdown = True

    def stats(self) -> Mapping[str, int]:
        """``written`` and ``failed`` records."""
        return {"written": self._written, "failed": self._failed}


def _json(record: CostRecord) -> str:
    return record.to_json().decode() + "\n"


def _human(record: CostRecord) -> str:
    when = datetime.datetime.fromtimestamp(record.timestamp / 1e3, tz=datetime.timezone.utc)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{record.timestamp % 1000:03d}Z"
    if record.error is None:
        cost = f"{record.cost_amount:.9f} {record.currency}"
    else:
        cost = f"ERROR {record.error.split(':', 1)[0]}"
    spans = f" ({record.span_count} spans)" if record.aggregate else ""
    return (
        f"{stamp} {record.service} {record.operation} {cost} {record.duration_ms:.2f} ms{spans}\n"
    )
