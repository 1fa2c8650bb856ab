"""CostRecord: the priced summary of one span (or an aggregate of many), schema v1.

A record holds plain values only, never a reference to the span it came from, so it is
cheap to queue and safe to keep after the span is gone. ``to_json`` and ``from_json`` are
the wire format of the Kafka stream; ``from_json`` is strict because every consumer
(``otelcost enforce``, the rollup job) trusts what it returns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from otelcost import _json
from otelcost.errors import InvalidRecordError
from otelcost.money import NANOS_BOUND, NANOS_PER_UNIT, to_nanos

__all__ = ["MAX_RECORD_BYTES", "SCHEMA_VERSION", "CostRecord"]

SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 64 * 1024
_MIN_TS_MS = 10**12  # exclusive bounds: anything outside is seconds, microseconds or garbage
_MAX_TS_MS = 10**13
_MAX_TEXT = 4096
# Above 2**53 nano-units a float amount no longer holds every integer (and from 2**51 its
# round trip can be off by one: money.py), and the stores' int64 counters are not far
# beyond: such a record is garbage, not a big bill.
_MAX_COST = NANOS_BOUND / NANOS_PER_UNIT
_INT64_END = 2**63
_UINT64_END = 2**64  # JSON integers from here on decode as doubles (orjson, and _json's stdlib)

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_EMPTY_USAGE: Mapping[str, float] = MappingProxyType({})

_REQUIRED = (
    "schema",
    "trace_id",
    "span_id",
    "service",
    "operation",
    "cost_amount",
    "currency",
    "duration_ms",
    "timestamp",
    "region",
    "pricing_version",
    "usage",
    "error",
)
_OPTIONAL = ("aggregate", "span_count", "entry", "service_version", "environment")
_KNOWN = frozenset(_REQUIRED + _OPTIONAL)


@dataclass(frozen=True, slots=True)
class CostRecord:
    """The cost of one span, or with ``aggregate=True`` of ``span_count`` spans of one service.

    ``cost_amount`` is in currency units; ``cost_nanos`` is the exact integer the stores add.
    ``timestamp`` is the span's end as UTC epoch milliseconds. A record with ``error`` set
    was not priced: its ``cost_amount`` is 0 and ``usage`` keeps the inputs for re-pricing.
    ``entry`` is False for a nested span (docs/pricing.md: it pays ``per_ms`` and a bare-``*``
    ``per_request`` only as an entry span), so history can be re-priced by the same rules.
    ``service_version`` and ``environment`` name the deploy that ran the span (resource
    ``service.version`` or the VCS revision, ``deployment.environment.name``); None when
    the resource does not say. Both are optional in JSON, written only when set.
    """

    trace_id: str
    span_id: str
    service: str
    operation: str
    cost_amount: float
    currency: str
    duration_ms: float
    timestamp: int
    region: str | None = None
    pricing_version: str | None = None
    usage: Mapping[str, float] = field(default_factory=lambda: _EMPTY_USAGE)
    error: str | None = None
    aggregate: bool = False
    span_count: int = 1
    entry: bool = True
    service_version: str | None = None
    environment: str | None = None

    @property
    def cost_nanos(self) -> int:
        """The cost as integer nano-units of the currency."""
        return to_nanos(self.cost_amount)

    @classmethod
    def trusted(  # noqa: PLR0917 - positional: it runs once per span
        cls,
        trace_id: str,
        span_id: str,
        service: str,
        operation: str,
        cost_amount: float,
        currency: str,
        duration_ms: float,
        timestamp: int,
        region: str | None,
        pricing_version: str | None,
        usage: Mapping[str, float],
        error: str | None,
        entry: bool,
        service_version: str | None = None,
        environment: str | None = None,
    ) -> CostRecord:
        """A per-span record from values the processor produced (no aggregate fields).

        About a seventh of the cost of the constructor, which goes through
        ``object.__setattr__`` per field (the frozen dataclass's ``__setattr__`` refuses):
        ``trusted_record`` builds it as a ``_Trusted``, whose slot stores the interpreter
        specialises, then makes it a CostRecord. Data from outside goes through
        ``from_json``/``from_dict``, which validate every field.
        """
        if cls is not CostRecord:  # a subclass may have slots of its own: one by one
            # By name, through the subclass: on Python 3.10 a slots dataclass subclass
            # declares every inherited field again, and its slots hide CostRecord's.
            record = _new(cls)
            for name, value in zip(
                _FIELD_NAMES,
                (
                    trace_id,
                    span_id,
                    service,
                    operation,
                    cost_amount,
                    currency,
                    duration_ms,
                    timestamp,
                    region,
                    pricing_version,
                    usage,
                    error,
                    False,
                    1,
                    entry,
                    service_version,
                    environment,
                ),
                strict=True,
            ):
                object.__setattr__(record, name, value)
            return record
        return trusted_record(
            trace_id,
            span_id,
            service,
            operation,
            cost_amount,
            currency,
            duration_ms,
            timestamp,
            region,
            pricing_version,
            usage,
            error,
            entry,
            service_version,
            environment,
        )

    def to_dict(self) -> dict[str, Any]:
        """The schema-v1 document as a dict (optional fields only when they differ from default)."""
        doc: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "service": self.service,
            "operation": self.operation,
            "cost_amount": self.cost_amount,
            "currency": self.currency,
            "duration_ms": self.duration_ms,
            "timestamp": self.timestamp,
            "region": self.region,
            "pricing_version": self.pricing_version,
            "usage": dict(self.usage),
            "error": self.error,
        }
        if self.aggregate:
            doc["aggregate"] = True
            doc["span_count"] = self.span_count
        if not self.entry:
            doc["entry"] = False
        if self.service_version is not None:
            doc["service_version"] = self.service_version
        if self.environment is not None:
            doc["environment"] = self.environment
        return doc

    def to_json(self) -> bytes:
        """Encode as compact UTF-8 JSON (schema v1)."""
        return _json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | bytearray | memoryview | str) -> CostRecord:
        """Decode and validate a schema-v1 document.

        Raises InvalidRecordError naming the offending field for anything that is not a
        valid v1 record: malformed JSON, missing or unknown fields, wrong types (strings for
        numbers, floats for the integer timestamp), NaN or infinities, negative amounts,
        a cost above 2**53 nano-units, a cost with ``error`` set, ``span_count`` other than
        1 on a non-aggregate, timestamps outside (1e12, 1e13) ms, bad hex ids (32 and 16
        lowercase hex digits), or more than 64 KiB of UTF-8.
        """
        if isinstance(data, str):
            raw: bytes | str = data
            size = len(data.encode("utf-8", "surrogatepass"))
        else:
            raw = bytes(data)
            size = len(raw)
        if size > MAX_RECORD_BYTES:
            raise InvalidRecordError("<record>", f"{size} bytes exceeds {MAX_RECORD_BYTES}")
        try:
            doc = _json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRecordError("<record>", f"not valid JSON: {exc}") from None
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: Any) -> CostRecord:
        """Validate a decoded schema-v1 document; see ``from_json``."""
        if not isinstance(doc, dict):
            raise InvalidRecordError("<record>", f"expected an object, got {type(doc).__name__}")
        # The version first: a record of another schema is reported as such, not as v1 garbage.
        if "schema" not in doc:
            raise InvalidRecordError("schema", "missing")
        schema = doc["schema"]
        if type(schema) is not int or schema != SCHEMA_VERSION:
            raise InvalidRecordError("schema", f"expected {SCHEMA_VERSION}, got {schema!r}")
        for name in _REQUIRED:
            if name not in doc:
                raise InvalidRecordError(name, "missing")
        unknown = doc.keys() - _KNOWN
        if unknown:
            raise InvalidRecordError(sorted(unknown)[0], "unknown field in schema v1")
        aggregate = doc.get("aggregate", False)
        if type(aggregate) is not bool:
            raise InvalidRecordError("aggregate", "must be a boolean")
        span_count = doc.get("span_count", 1)
        if type(span_count) is not int or not 1 <= span_count < _INT64_END:
            raise InvalidRecordError("span_count", "must be an integer in [1, 2**63)")
        if span_count != 1 and not aggregate:
            # to_json writes span_count only for aggregates; anything else would not round-trip.
            raise InvalidRecordError("span_count", "must be 1 unless aggregate is true")
        entry = doc.get("entry", True)
        if type(entry) is not bool:
            raise InvalidRecordError("entry", "must be a boolean")
        error = _optional_text(doc, "error")
        cost = _number(doc, "cost_amount")
        if cost > _MAX_COST:
            raise InvalidRecordError("cost_amount", f"{cost!r} exceeds {_MAX_COST} (2**53 nanos)")
        if error is not None and cost != 0:
            raise InvalidRecordError("cost_amount", "must be 0 when error is set")
        timestamp = doc["timestamp"]
        if type(timestamp) is not int:
            raise InvalidRecordError(
                "timestamp", f"must be integer epoch milliseconds, got {type(timestamp).__name__}"
            )
        if not _MIN_TS_MS < timestamp < _MAX_TS_MS:
            raise InvalidRecordError(
                "timestamp",
                f"{timestamp} is not epoch milliseconds (seconds or microseconds?); "
                "valid iff 1e12 < t < 1e13",
            )
        return cls(
            trace_id=_hex(doc, "trace_id", _TRACE_ID),
            span_id=_hex(doc, "span_id", _SPAN_ID),
            service=_text(doc, "service"),
            operation=_text(doc, "operation"),
            cost_amount=cost,
            currency=_text(doc, "currency"),
            duration_ms=_number(doc, "duration_ms"),
            timestamp=timestamp,
            region=_optional_text(doc, "region"),
            pricing_version=_optional_text(doc, "pricing_version"),
            usage=_usage(doc),
            error=error,
            aggregate=aggregate,
            span_count=span_count,
            entry=entry,
            service_version=_optional_text(doc, "service_version"),
            environment=_optional_text(doc, "environment"),
        )


_new = object.__new__
# The slot descriptors of every field, in declaration order (what ``trusted`` sets on a
# subclass).
_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(CostRecord))


class _Trusted(CostRecord):
    """A CostRecord under construction in ``trusted_record``, never seen outside.

    With object's own ``__setattr__`` and ``__delattr__`` (both: they share one type slot)
    stores to its fields are plain slot stores, which the interpreter specialises; it has
    no slot of its own, so the object can then become a CostRecord (frozen from then on).
    """

    __slots__ = ()
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__


def trusted_record(  # noqa: PLR0917 - positional: it runs once per span
    trace_id: str,
    span_id: str,
    service: str,
    operation: str,
    cost_amount: float,
    currency: str,
    duration_ms: float,
    timestamp: int,
    region: str | None,
    pricing_version: str | None,
    usage: Mapping[str, float],
    error: str | None,
    entry: bool,
    service_version: str | None = None,
    environment: str | None = None,
) -> CostRecord:
    """``CostRecord.trusted`` without the classmethod's frame: the processor's record path.

    About 0.2 µs for the 17 fields, against 1.5 µs through the slot descriptors (and
    more through the frozen dataclass's ``__init__``).
    """
    record: Any = _new(_Trusted)  # Any: mypy would refuse stores to the frozen fields
    record.trace_id = trace_id
    record.span_id = span_id
    record.service = service
    record.operation = operation
    record.cost_amount = cost_amount
    record.currency = currency
    record.duration_ms = duration_ms
    record.timestamp = timestamp
    record.region = region
    record.pricing_version = pricing_version
    record.usage = usage
    record.error = error
    record.aggregate = False
    record.span_count = 1
    record.entry = entry
    record.service_version = service_version
    record.environment = environment
    record.__class__ = CostRecord
    return record  # type: ignore[no-any-return]


def _number(doc: dict[str, Any], name: str) -> float:
    value = doc[name]
    if type(value) not in (int, float):
        raise InvalidRecordError(name, f"must be a number, got {type(value).__name__}")
    number = _as_float(value)
    if number is None or not math.isfinite(number):
        raise InvalidRecordError(name, f"must be finite, got {value!r:.40}")
    if number < 0:
        raise InvalidRecordError(name, f"must be >= 0, got {value!r}")
    return number


def _as_float(value: float) -> float | None:
    """``float(value)``, or None for an int too large for a double (math.isfinite would raise)."""
    try:
        return float(value)
    except OverflowError:
        return None


def _text(doc: dict[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str) or not value:
        raise InvalidRecordError(name, "must be a non-empty string")
    if len(value) > _MAX_TEXT:
        raise InvalidRecordError(name, f"longer than {_MAX_TEXT} characters")
    return value


def _optional_text(doc: dict[str, Any], name: str) -> str | None:
    return None if doc.get(name) is None else _text(doc, name)


def _hex(doc: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = doc[name]
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise InvalidRecordError(name, f"must be lowercase hex of {pattern.pattern[-3:-1]} digits")
    return value


def _usage(doc: dict[str, Any]) -> Mapping[str, float]:
    usage = doc["usage"]
    if not isinstance(usage, dict):
        raise InvalidRecordError("usage", "must be an object of attribute -> number")
    if not usage:
        return _EMPTY_USAGE
    clean: dict[str, float] = {}
    for key, value in usage.items():
        if not isinstance(key, str):
            raise InvalidRecordError("usage", f"keys must be strings, got {key!r:.40}")
        number = _as_float(value) if type(value) in (int, float) else None
        if number is None or not math.isfinite(number) or number < 0:
            raise InvalidRecordError(f"usage.{key}", "must be a finite number >= 0")
        # An int past 64 bits becomes the double it would be after a JSON round trip.
        clean[key] = value if type(value) is float or value < _UINT64_END else number
    return MappingProxyType(clean)
