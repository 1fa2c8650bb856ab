"""CostRecords as OTLP/JSON ``TracesData``, the payload the Collector's kafka receiver reads
with ``encoding: otlp_json``.

A CostRecord holds no span, so the document cannot be the original span. It carries one
*cost span* per record, under one ResourceSpans whose resource has ``service.name``:

- the resource: ``service.name``, and ``service.version`` / ``deployment.environment.name``
  when the record knows its deploy;
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

Typed as the Collector's pdata JSON unmarshaler reads them: ids as hex (16 and 8 bytes),
every 64-bit integer (times, ``intValue``) as a decimal string; a whole-number usage (token
counts) as ``intValue`` when it fits in int64 and as ``doubleValue`` otherwise (an
``intValue`` beyond int64 makes the Collector reject the whole message). Messages are split
by bytes: each span is encoded once and a message takes spans while it stays below the
size limit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from otelcost import _json
from otelcost._version import __version__
from otelcost.record import CostRecord

__all__ = ["encode_otlp_messages"]

_NANOS_PER_MS = 1_000_000
_INT64_MIN = -(2**63)
_INT64_END = 2**63
_SCOPE = {"name": "otelcost", "version": __version__}
_SOURCE = {"key": "cost.source", "value": {"stringValue": "otelcost"}}
_END = b"]}]}]}"
_SEPARATOR = b","


def encode_otlp_messages(
    records: Sequence[CostRecord], max_bytes: int
) -> Iterator[tuple[str, bytes, list[CostRecord]]]:
    """(service, OTLP/JSON ``TracesData`` value, records in it) per message, each value at
    most ``max_bytes``; a span that cannot be encoded or does not fit alone is yielded with
    an empty value (the caller counts it as invalid)."""
    by_resource: dict[tuple[str, str | None, str | None], list[CostRecord]] = {}
    for record in records:
        key = (record.service, record.service_version, record.environment)
        by_resource.setdefault(key, []).append(record)
    for (service, version, environment), group in by_resource.items():
        prefix = _prefix(service, version, environment)
        room = max_bytes - len(prefix) - len(_END)
        spans: list[bytes] = []
        members: list[CostRecord] = []
        size = 0
        for record in group:
            try:
                span = _json.dumps(_span(record))
            except (TypeError, ValueError):
                yield service, b"", [record]
                continue
            if len(span) > room:
                yield service, b"", [record]
                continue
            if spans and size + len(_SEPARATOR) + len(span) > room:
                yield service, prefix + _SEPARATOR.join(spans) + _END, members
                spans, members, size = [], [], 0
            size += len(span) + (len(_SEPARATOR) if spans else 0)
            spans.append(span)
            members.append(record)
        if spans:
            yield service, prefix + _SEPARATOR.join(spans) + _END, members


def _prefix(service: str, version: str | None, environment: str | None) -> bytes:
    """Everything of a one-resource ``TracesData`` document before its first span."""
    resource = [_attr("service.name", service)]
    if version is not None:
        resource.append(_attr("service.version", version))
    if environment is not None:
        resource.append(_attr("deployment.environment.name", environment))
    head = _json.dumps({"resourceSpans": [{"resource": {"attributes": resource}}]})
    scope = _json.dumps(_SCOPE)
    return head[:-3] + b',"scopeSpans":[{"scope":' + scope + b',"spans":['


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
    # bool before int: bool is an int subclass.
    if isinstance(value, bool):
        typed: dict[str, Any] = {"boolValue": value}
    elif isinstance(value, int | float) and _whole_int64(value):
        typed = {"intValue": str(int(value))}  # OTLP/JSON writes int64 as a string
    elif isinstance(value, int | float):
        typed = {"doubleValue": float(value)}
    else:
        typed = {"stringValue": value}
    return {"key": key, "value": typed}


def _whole_int64(value: float) -> bool:
    """An integer, or a float holding one (usage is kept as floats), within int64."""
    if isinstance(value, float) and not value.is_integer():
        return False
    return _INT64_MIN <= value < _INT64_END
