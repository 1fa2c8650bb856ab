"""CostRecords as OTLP/JSON ``TracesData``, the payload the Collector's kafka receiver reads
with ``encoding: otlp_json``.

A CostRecord holds no span, so the document cannot be the original span. It carries one
*cost span* per record, under one ResourceSpans whose resource has ``service.name``:

- ``traceId``/``spanId``: the record's ids (the original span's), hex as OTLP/JSON requires.
  Sending these spans to the tracing backend that also stores the originals creates
  duplicate span ids: route them to a cost pipeline instead.
- ``name``: the operation; ``endTimeUnixNano``: the span's end (millisecond precision);
  ``startTimeUnixNano``: end minus ``cost.duration_ms`` (equal to the end for aggregates,
  whose duration is a sum). Kind, status, parent, events and links are not known: omitted.
- attributes: ``cost.amount`` (omitted when ``cost.error`` is set, never a silent 0),
  ``cost.currency``, ``cost.duration_ms``, ``cost.source``, ``cost.pricing_region``,
  ``cost.pricing_version`` and ``cost.error`` when known, each usage input under its own
  attribute name, and ``cost.aggregate``/``cost.span_count`` on overflow aggregates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from otelcost import __version__, _json
from otelcost.record import CostRecord

__all__ = ["encode_traces"]

_NANOS_PER_MS = 1_000_000
_SCOPE = {"name": "otelcost", "version": __version__}
_SOURCE = {"key": "cost.source", "value": {"stringValue": "otelcost"}}


def encode_traces(service: str, records: Sequence[CostRecord]) -> bytes:
    """One OTLP/JSON ``TracesData`` document holding the cost spans of one service."""
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr("service.name", service)]},
                "scopeSpans": [{"scope": _SCOPE, "spans": [_span(r) for r in records]}],
            }
        ]
    }
    return _json.dumps(doc)


def _span(record: CostRecord) -> dict[str, Any]:
    end = record.timestamp * _NANOS_PER_MS
    start = end if record.aggregate else max(0, end - round(record.duration_ms * _NANOS_PER_MS))
    # Typed literals rather than _attr(): this runs once per record.
    attributes: list[dict[str, Any]] = [
        {"key": "cost.currency", "value": {"stringValue": record.currency}},
        {"key": "cost.duration_ms", "value": {"doubleValue": record.duration_ms}},
        _SOURCE,
    ]
    if record.error is None:
        attributes.append({"key": "cost.amount", "value": {"doubleValue": record.cost_amount}})
    else:
        attributes.append({"key": "cost.error", "value": {"stringValue": record.error}})
    if record.region is not None:
        attributes.append({"key": "cost.pricing_region", "value": {"stringValue": record.region}})
    if record.pricing_version is not None:
        attributes.append(
            {"key": "cost.pricing_version", "value": {"stringValue": record.pricing_version}}
        )
    if record.usage:
        attributes.extend(_attr(name, amount) for name, amount in record.usage.items())
    if record.aggregate:
        attributes.append(_attr("cost.aggregate", True))
        attributes.append(_attr("cost.span_count", record.span_count))
    return {
        "traceId": record.trace_id,
        "spanId": record.span_id,
        "name": record.operation,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "attributes": attributes,
    }


def _attr(key: str, value: str | float | bool) -> dict[str, Any]:
    # bool before int: bool is an int subclass. OTLP/JSON writes int64 as a string.
    if isinstance(value, bool):
        typed: dict[str, Any] = {"boolValue": value}
    elif isinstance(value, int):
        typed = {"intValue": str(value)}
    elif isinstance(value, float):
        typed = {"doubleValue": value}
    else:
        typed = {"stringValue": value}
    return {"key": key, "value": typed}
