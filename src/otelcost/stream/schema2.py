"""Cost stream schema 2: many CostRecords of one service in one Kafka message.

One message (key = the service, header ``otelcost-schema: 2``) is one JSON object: an
envelope with what its records share, and the records as compact arrays, one per line
(docs/kafka.md has a worked example)::

    {"schema":2,"service":"checkout","currency":"USD","region":null,"pricing_version":"v1","records":[
    ["4bf92f3577b34da6a3ce929d0e0e4736","00f067aa0ba902b7","GET /cart",12300,12.34,1764236400123],
    ["5bf92f3577b34da6a3ce929d0e0e4736","01f067aa0ba902b7","GET /",0,1.5,1764236400125,{"usage":{}}]
    ]}

A record is ``[trace_id, span_id, operation, cost_nanos, duration_ms, timestamp]``, with an
optional seventh element holding what is not at its default: ``usage``, ``error``,
``aggregate``/``span_count`` (overflow aggregates) and ``entry: false`` (nested spans).
``cost_nanos`` is the cost as an integer number of nano-units of the currency (exact, unlike
v1's float ``cost_amount``); every other field means what it means in schema 1 and is
validated by the same rules. The JSON Schema ships as ``otelcost/data/cost-records.v2.schema.json``
(``json_schema()``).

The one-record-per-line layout is a convenience, not a requirement for readers (any JSON
layout with the same content is valid): it lets the encoder split by bytes exactly and
lets a consumer dead-letter one bad record with its original bytes.
"""

from __future__ import annotations

import math
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import chain
from operator import attrgetter, itemgetter, methodcaller
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from otelcost import _json
from otelcost.errors import InvalidRecordError
from otelcost.money import NANOS_BOUND, NANOS_PER_UNIT, from_nanos
from otelcost.record import MAX_RECORD_BYTES, CostRecord

__all__ = [
    "SCHEMA_VERSION_2",
    "BadRecord",
    "Envelope",
    "Row",
    "decode_message",
    "decode_rows",
    "encode_groups",
    "encode_messages",
    "envelope_of",
    "json_schema",
    "record_row",
]

SCHEMA_VERSION_2 = 2
_MAX_TEXT = 4096
_MIN_TS_MS = 10**12
_MAX_TS_MS = 10**13
_INT64_END = 2**63
_UINT64_END = 2**64
_HEX = "0123456789abcdef"
_HEX_BYTES = _HEX.encode()
_LIST, _STR, _INT, _NUMBER = {list}, {str}, {int}, {int, float}
_ROW_LENGTHS = {6, 7}
_DICT, _BOOL = {dict}, {bool}
_COMMON_EXTRAS = {"entry", "usage"}
_FIELDS = tuple(itemgetter(i) for i in range(6))
_ENTRY = methodcaller("get", "entry", True)
_USAGE = methodcaller("get", "usage")
_TRACE_LEN, _SPAN_LEN = {32}, {16}
_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})
_EMPTY_USAGE: Mapping[str, float] = MappingProxyType({})
_ENVELOPE = ("schema", "service", "currency", "region", "pricing_version", "records")
_DEPLOY = ("service_version", "environment")  # optional, written only when known
_ENVELOPE_KEYS = frozenset(_ENVELOPE + _DEPLOY)
_EXTRA_KEYS = frozenset(("usage", "error", "aggregate", "span_count", "entry"))
_END = b"\n]}"
_SEPARATOR = b",\n"
_SCHEMA_FILE = "cost-records.v2.schema.json"

#: A record as it stands in a message: [trace_id, span_id, operation, cost_nanos,
#: duration_ms, timestamp] and, when some field is not at its default, the extras object.
Row = Sequence[Any]

M = TypeVar("M")  # what a message's rows were made of: CostRecords, or the processor's tuples

# service, currency, region, pricing version, service version, environment
GroupKey = tuple[str, str, str | None, str | None, str | None, str | None]
# A record's GroupKey. (encode_messages spells it out: the interpreter's specialised
# attribute loads are faster than attrgetter, and it runs once per exported record.)
_group_key = attrgetter(
    "service", "currency", "region", "pricing_version", "service_version", "environment"
)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a schema-2 message value."""
    # pkgutil, not importlib.resources: that imports zipfile, tempfile, shutil, lzma and
    # bz2 into every application that exports to Kafka.
    text = pkgutil.get_data("otelcost", f"data/{_SCHEMA_FILE}")
    if text is None:
        raise FileNotFoundError(f"otelcost/data/{_SCHEMA_FILE} is not in the package")
    doc: dict[str, Any] = _json.loads(text)
    return doc


# -- encoding -------------------------------------------------------------------------------


def record_row(record: CostRecord) -> tuple[Any, ...]:
    """``record`` as a schema-2 row: the array its line holds."""
    row: tuple[Any, ...] = (
        record.trace_id,
        record.span_id,
        record.operation,
        round(record.cost_amount * NANOS_PER_UNIT),  # to_nanos, inlined: once per record
        record.duration_ms,
        record.timestamp,
    )
    if record.usage or record.error is not None or record.aggregate or not record.entry:
        row += (_extra(record),)
    return row


def envelope_of(record: CostRecord) -> Envelope:
    """What ``record`` would share with the other records of its message."""
    return Envelope(*_group_key(record))


def _extra(record: CostRecord) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if record.usage:
        extra["usage"] = dict(record.usage)
    if record.error is not None:
        extra["error"] = record.error
    if record.aggregate:
        extra["aggregate"] = True
        extra["span_count"] = record.span_count
    if not record.entry:
        extra["entry"] = False
    return extra


def envelope_prefix(key: GroupKey) -> bytes:
    """The first line of a message for ``key``: everything before the first record."""
    global _prefixes_by  # noqa: PLW0603 - one cache per encoder, swapped whole
    if _prefixes_by is not _json.dumps:  # another encoder (the tests switch to the stdlib)
        _prefixes.clear()
        _prefixes_by = _json.dumps
    prefix = _prefixes.get(key)
    if prefix is None:
        if len(_prefixes) >= _MAX_PREFIXES:
            _prefixes.clear()
        prefix = _prefixes[key] = _envelope_prefix(key)
    return prefix


# Envelope prefixes by GroupKey: a few per service, needed once per message. Bounded;
# a racing thread at worst computes one again.
_prefixes: dict[GroupKey, bytes] = {}
_prefixes_by: Callable[[Any], bytes] | None = None
_MAX_PREFIXES = 4096


def _envelope_prefix(key: GroupKey) -> bytes:
    service, currency, region, version, service_version, environment = key
    envelope: dict[str, Any] = {
        "schema": SCHEMA_VERSION_2,
        "service": service,
        "currency": currency,
        "region": region,
        "pricing_version": version,
    }
    if service_version is not None:
        envelope["service_version"] = service_version
    if environment is not None:
        envelope["environment"] = environment
    head = _json.dumps(envelope)
    return head[:-1] + b',"records":[\n'


def encode_messages(
    records: Sequence[CostRecord], max_bytes: int
) -> Iterator[tuple[str, bytes, list[CostRecord]]]:
    """(service, value, records in it) per message, each value at most ``max_bytes``.

    Records are grouped by service, currency, region and pricing version, in order. A
    record whose line alone does not fit, or that cannot be encoded, raises nothing here:
    it is yielded alone with an empty value so the caller can count it as invalid (a line
    is at most 64 KiB, as a schema-1 record is).
    """
    groups: dict[GroupKey, list[CostRecord]] = {}
    for record in records:
        # The GroupKey, spelled out: the interpreter's specialised attribute loads beat
        # attrgetter, once per exported record.
        key = (
            record.service,
            record.currency,
            record.region,
            record.pricing_version,
            record.service_version,
            record.environment,
        )
        members = groups.get(key)
        if members is None:
            members = groups[key] = []
        members.append(record)
    return encode_groups(
        ((key, members, None) for key, members in groups.items()),
        max_bytes,
        _record_rows,
        record_row,
    )


def encode_groups(
    groups: Iterable[tuple[GroupKey, list[M], list[tuple[Any, ...]] | None]],
    max_bytes: int,
    rows_of: Callable[[Sequence[M]], list[tuple[Any, ...]]],
    row_of: Callable[[M], tuple[Any, ...]],
) -> Iterator[tuple[str, bytes, list[M]]]:
    """``encode_messages`` for members already grouped, of any kind, with their rows when
    they are made already: else ``rows_of`` makes the rows of up to _CHUNK members at once
    (the fast path). ``row_of`` makes the row of one (line by line: large groups, bad
    members). Rows must be those ``record_row`` makes of the members' CostRecords, so that
    every kind of member gets the same bytes."""
    for key, members, rows in groups:
        prefix = envelope_prefix(key)
        room = max_bytes - len(prefix) - len(_END)
        if rows is None:
            lines = _lines_at_once(members, room, rows_of)
        else:
            lines = _lines_at_once(rows, room, _made)
        if lines is not None:  # they start with the newline that ends the prefix
            yield key[0], prefix[:-1] + lines + _END, members
        else:  # too large for one message, or a member that cannot be encoded
            yield from _group_of(members, row_of).messages(key[0], prefix, room)


def _made(rows: Sequence[tuple[Any, ...]]) -> Sequence[tuple[Any, ...]]:
    """``rows_of`` of rows made already: themselves."""
    return rows


def _record_rows(records: Sequence[CostRecord]) -> list[tuple[Any, ...]]:
    """``record_row`` of each record, the common case inlined."""
    return [
        (
            record.trace_id,
            record.span_id,
            record.operation,
            round(record.cost_amount * NANOS_PER_UNIT),  # to_nanos, inlined
            record.duration_ms,
            record.timestamp,
        )
        if not (record.usage or record.error is not None or record.aggregate or not record.entry)
        else record_row(record)
        for record in records
    ]


_ROW_START = b"["
_LINE_START = b"\n["
_ROW_BREAK = b"],["  # between two rows of a compact JSON array of rows
_LINE_BREAK = b"],\n["
# Every aligned window of this many bytes holding a newline means no line reaches twice it.
_WINDOW = MAX_RECORD_BYTES // 2
# Rows encoded per call: few enough that they never hold the garbage collector's first
# generation threshold (700 new container objects) while alive, so they are never
# collected, nor promoted towards full collections that walk the whole heap.
_CHUNK = 256


def _lines_at_once(
    members: Sequence[M],
    room: int,
    rows_of: Callable[[Sequence[M]], Sequence[tuple[Any, ...]]] = _record_rows,  # type: ignore[assignment]
) -> bytes | None:
    """The lines of ``members``, each after a newline (one record per line, a comma
    ending all but the last), from one encoder call per _CHUNK records, when they fit in
    ``room`` bytes plus that first newline and no line reaches MAX_RECORD_BYTES; else
    None (``_group_of`` then encodes line by line, splits, and sets bad records apart).

    The compact encoding of a list is its rows' encodings joined by ``,`` inside ``[]``,
    so the bytes are those of the line-by-line encoding. A row is an array, so each row
    starts with ``[``: when the body holds exactly one ``[`` per row (no ``[`` in a string,
    no nested array), they are where the lines start. Else each boundary between two rows
    reads ``],[`` and the pattern cannot overlap itself, so any other occurrence (inside a
    string, or between nested arrays) makes the count larger than one per boundary: when
    it is exactly that, the replacement is exact too.
    """
    pieces = []
    size = 0
    dumps = _json.dumps
    for start in range(0, len(members), _CHUNK):
        rows = rows_of(members[start : start + _CHUNK])
        try:
            body = dumps(rows)[1:-1]
        except (TypeError, ValueError):
            return None
        if body.count(_ROW_START) == len(rows):  # one C pass each (memchr): the usual case
            piece = body.replace(_ROW_START, _LINE_START)
        elif body.count(_ROW_BREAK) == len(rows) - 1:
            piece = b"\n" + body.replace(_ROW_BREAK, _LINE_BREAK)
        else:
            return None
        size += len(piece) + 1
        if size - 2 > room:
            return None
        pieces.append(piece)
    lines = b",".join(pieces)
    # JSON escapes newlines in strings: every newline here starts a line. A line of
    # 2 * _WINDOW bytes or more would cover a whole aligned window.
    find = lines.find
    for start in range(0, len(lines) - _WINDOW + 1, _WINDOW):
        if find(b"\n", start, start + _WINDOW) < 0:
            return None
    return lines


def _group_of(
    records: Sequence[M],
    row_of: Callable[[M], tuple[Any, ...]] = record_row,  # type: ignore[assignment]
) -> _Group[M]:
    """The records' lines one by one (the slow path: large groups, bad records)."""
    group: _Group[M] = _Group()
    buffer, ends, members = group.buffer, group.ends, group.members
    for record in records:
        try:
            line = _json.dumps(row_of(record))
        except (TypeError, ValueError):
            line = b""
        if not line or len(line) > MAX_RECORD_BYTES:
            group.bad.append(record)
            continue
        buffer += line
        buffer += _SEPARATOR
        ends.append(len(buffer))
        members.append(record)
    return group


class _Group(Generic[M]):
    """The lines of one group, each followed by the separator, and where each ends."""

    __slots__ = ("bad", "buffer", "ends", "members")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.ends: list[int] = []
        self.members: list[M] = []
        self.bad: list[M] = []  # records that cannot be encoded

    def messages(
        self, service: str, prefix: bytes, room: int
    ) -> Iterator[tuple[str, bytes, list[M]]]:
        """Messages of at most ``room`` bytes of lines each; a line larger than ``room``
        alone, and each record that cannot be encoded, is yielded with an empty value."""
        for record in self.bad:
            yield service, b"", [record]
        buffer, ends, sep = self.buffer, self.ends, len(_SEPARATOR)
        first = start = 0  # index of the message's first line, and where it starts
        for i, end in enumerate(ends):
            if end - start - sep <= room:
                continue
            if i > first:  # lines first..i-1 fit: they make one message
                yield (
                    service,
                    prefix + buffer[start : ends[i - 1] - sep] + _END,
                    self.members[first:i],
                )
                start = ends[i - 1]
            first = i
            if end - start - sep > room:  # this line alone does not fit
                yield service, b"", [self.members[i]]
                first, start = i + 1, end
        if first < len(ends):
            yield service, prefix + buffer[start : ends[-1] - sep] + _END, self.members[first:]


# -- decoding -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the records of one message share."""

    service: str
    currency: str
    region: str | None
    pricing_version: str | None
    service_version: str | None
    environment: str | None


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record of a message that failed validation: its index, a schema-2 message holding
    only its original bytes (replayable once fixed), and why it was rejected."""

    index: int
    value: bytes
    error: str


def decode_rows(doc: Any, value: bytes) -> tuple[Envelope, list[Row], list[BadRecord]]:
    """Validate a parsed schema-2 message: its envelope, its good records as the rows they
    are in the message (a seventh element, when present, is the validated extras object)
    and its bad ones. InvalidRecordError when the envelope itself is invalid (the whole
    message is rejected then).

    Consumers that sum records (``otelcost enforce``, ``otelcost rollup``) read the rows
    as they are: no CostRecord is built.
    """
    envelope, rows = _envelope(doc)
    if _all_valid(rows):
        return envelope, rows, []
    good: list[Row] = []
    bad: list[BadRecord] = []
    for index, row in enumerate(rows):
        try:
            _check(row)
        except InvalidRecordError as exc:
            bad.append(_bad(doc, value, index, exc))
            continue
        good.append(row)
    return envelope, good, bad


def decode_message(doc: Any, value: bytes) -> tuple[Envelope, list[CostRecord], list[BadRecord]]:
    """``decode_rows`` with the good records as CostRecords."""
    envelope, rows, bad = decode_rows(doc, value)
    return envelope, [_build(row, envelope) for row in rows], bad


def _envelope(doc: Any) -> tuple[Envelope, list[Any]]:
    if not isinstance(doc, dict):
        raise InvalidRecordError("<record>", f"expected an object, got {type(doc).__name__}")
    unknown = doc.keys() - _ENVELOPE_KEYS
    if unknown:
        raise InvalidRecordError(sorted(unknown)[0], "unknown field in schema 2")
    for name in _ENVELOPE:
        if name not in doc:
            raise InvalidRecordError(name, "missing")
    envelope = Envelope(
        _text(doc["service"], "service"),
        _text(doc["currency"], "currency"),
        _optional_text(doc["region"], "region"),
        _optional_text(doc["pricing_version"], "pricing_version"),
        _optional_text(doc.get("service_version"), "service_version"),
        _optional_text(doc.get("environment"), "environment"),
    )
    rows = doc["records"]
    if not isinstance(rows, list) or not rows:
        raise InvalidRecordError("records", "must be a non-empty array")
    return envelope, rows


def _bad(doc: dict[str, Any], value: bytes, index: int, exc: InvalidRecordError) -> BadRecord:
    rows = doc["records"]
    lines = _lines(value, len(rows))
    return BadRecord(index, _alone(doc, lines, index), f"records[{index}].{exc}")


def _lines(value: bytes, count: int) -> list[bytes]:
    """The message's lines when it has the encoder's layout (one record per line), else []."""
    lines = value.split(b"\n")
    if len(lines) == count + 2 and lines[0].endswith(b"[") and lines[-1] == b"]}":
        return lines
    return []


def _alone(doc: dict[str, Any], lines: list[bytes], index: int) -> bytes:
    """A schema-2 message holding record ``index`` only: its original line when the layout
    allows, else its compact re-encoding."""
    if lines:
        line = lines[index + 1]
        return lines[0] + b"\n" + (line[:-1] if line.endswith(b",") else line) + _END
    return _json.dumps({**doc, "records": [doc["records"][index]]})


def _all_valid(rows: list[Any]) -> bool:
    """True when every row passes ``_check``, tested column by column in C loops (no
    Python code per record): a message from the exporter. False when any row may not:
    ``_check`` then finds which, and why.

    Each test is a sufficient condition for ``_check`` to pass, never a looser one.
    """
    lengths = set(map(len, rows)) if set(map(type, rows)) == _LIST else set()
    if not lengths or not lengths <= _ROW_LENGTHS:
        return False
    # Columns by itemgetter, not zip(*rows): zip makes an iterator per row, and so many
    # allocations wake the garbage collector, which then walks every parsed row.
    trace_ids, span_ids, operations, nanos, durations, timestamps = [
        list(map(field, rows)) for field in _FIELDS
    ]
    if set(map(type, trace_ids)) != _STR or set(map(len, trace_ids)) != _TRACE_LEN:
        return False
    if set(map(type, span_ids)) != _STR or set(map(len, span_ids)) != _SPAN_LEN:
        return False
    if not _is_hex("".join(trace_ids)) or not _is_hex("".join(span_ids)):
        return False
    if set(map(type, operations)) != _STR:
        return False
    sizes = set(map(len, operations))
    if min(sizes) < 1 or max(sizes) > _MAX_TEXT:
        return False
    if set(map(type, nanos)) != _INT or min(nanos) < 0 or max(nanos) >= NANOS_BOUND:
        return False
    if set(map(type, timestamps)) != _INT:
        return False
    if min(timestamps) <= _MIN_TS_MS or max(timestamps) >= _MAX_TS_MS:
        return False
    if not set(map(type, durations)) <= _NUMBER:
        return False
    # A NaN or an infinity makes the sum NaN or infinite; a finite sum means neither.
    total = sum(durations)
    if not math.isfinite(total) or min(durations) < 0:
        return False
    if max(durations) >= _UINT64_END:  # allowed for a float: _check decides
        return False
    if 7 in lengths:
        return _extras_valid([row for row in rows if len(row) == 7])
    return True


def _extras_valid(rows: list[Any]) -> bool:
    """``_all_valid`` for the extras of ``rows`` (all of seven elements): column by column
    when they hold only ``entry`` and ``usage`` (nested spans, token counts), else one by
    one."""
    extras = [row[6] for row in rows]
    if set(map(type, extras)) != _DICT:
        return False
    if not set().union(*extras) <= _COMMON_EXTRAS:
        try:
            for row in rows:
                _check_extra(row[6], row[3])
        except InvalidRecordError:
            return False
        return True
    if not set(map(type, map(_ENTRY, extras))) <= _BOOL:
        return False
    usages = [usage for usage in map(_USAGE, extras) if usage is not None]
    if not usages:
        return True
    if set(map(type, usages)) != _DICT:
        return False
    amounts = list(chain.from_iterable(map(dict.values, usages)))
    if not amounts:
        return True
    if not set(map(type, amounts)) <= _NUMBER:
        return False
    total = sum(amounts)  # finite: no NaN, no infinity (as for durations)
    return math.isfinite(total) and min(amounts) >= 0 and max(amounts) < _UINT64_END


def _is_hex(text: str) -> bool:
    """Lowercase hex digits only (or nothing)."""
    try:
        return not text.encode("ascii").translate(None, _HEX_BYTES)
    except UnicodeEncodeError:
        return False


def _check(row: Any) -> None:
    """Validate one record array; InvalidRecordError names the first field that is wrong."""
    if type(row) is not list or not 6 <= len(row) <= 7:
        raise InvalidRecordError("<record>", "must be an array of 6 or 7 elements")
    trace_id, span_id, operation, nanos, duration, timestamp = row[:6]
    # strip() with the digit set leaves nothing exactly when every character is one.
    if type(trace_id) is not str or len(trace_id) != 32 or trace_id.strip(_HEX):
        raise InvalidRecordError("trace_id", "must be lowercase hex of 32 digits")
    if type(span_id) is not str or len(span_id) != 16 or span_id.strip(_HEX):
        raise InvalidRecordError("span_id", "must be lowercase hex of 16 digits")
    if type(operation) is not str or not 0 < len(operation) <= _MAX_TEXT:
        raise InvalidRecordError("operation", f"must be a non-empty string of <= {_MAX_TEXT}")
    if type(nanos) is not int or not 0 <= nanos < NANOS_BOUND:
        raise InvalidRecordError("cost_nanos", "must be an integer in [0, 2**53)")
    if type(duration) is float:
        if not (duration >= 0 and duration != math.inf):  # also false for NaN
            raise InvalidRecordError("duration_ms", "must be a finite number >= 0")
    elif type(duration) is not int or not 0 <= duration < _UINT64_END:
        raise InvalidRecordError("duration_ms", "must be a finite number >= 0")
    if type(timestamp) is not int or not _MIN_TS_MS < timestamp < _MAX_TS_MS:
        raise InvalidRecordError("timestamp", "must be integer epoch milliseconds in (1e12, 1e13)")
    if len(row) == 7:
        _check_extra(row[6], nanos)


def _check_extra(extra: Any, nanos: int) -> None:
    """Validate a record's seventh element (its record's ``cost_nanos`` is ``nanos``)."""
    if type(extra) is not dict:
        raise InvalidRecordError("<extra>", "the 7th element must be an object")
    unknown = extra.keys() - _EXTRA_KEYS
    if unknown:
        raise InvalidRecordError(sorted(unknown)[0], "unknown field in schema 2")
    if _optional_text(extra.get("error"), "error") is not None and nanos != 0:
        raise InvalidRecordError("cost_nanos", "must be 0 when error is set")
    aggregate = extra.get("aggregate", False)
    if type(aggregate) is not bool:
        raise InvalidRecordError("aggregate", "must be a boolean")
    span_count = extra.get("span_count", 1)
    if type(span_count) is not int or not 1 <= span_count < _INT64_END:
        raise InvalidRecordError("span_count", "must be an integer in [1, 2**63)")
    if span_count != 1 and not aggregate:
        raise InvalidRecordError("span_count", "must be 1 unless aggregate is true")
    if type(extra.get("entry", True)) is not bool:
        raise InvalidRecordError("entry", "must be a boolean")
    _check_usage(extra.get("usage"))


def _build(row: Row, env: Envelope) -> CostRecord:
    """The CostRecord of a row ``_check`` accepted."""
    extra: Mapping[str, Any] = row[6] if len(row) == 7 else _NO_EXTRA
    usage = extra.get("usage")
    record = CostRecord.trusted(  # every field validated: trusted() sets the rest
        row[0],
        row[1],
        env.service,
        row[2],
        from_nanos(row[3]),
        env.currency,
        float(row[4]),
        row[5],
        env.region,
        env.pricing_version,
        MappingProxyType(usage) if usage else _EMPTY_USAGE,
        extra.get("error"),
        extra.get("entry", True),
        env.service_version,
        env.environment,
    )
    if extra.get("aggregate", False):  # an overflow aggregate: rare, built again whole
        return replace(record, aggregate=True, span_count=extra.get("span_count", 1))
    return record


def _text(value: Any, name: str) -> str:
    if type(value) is not str or not 0 < len(value) <= _MAX_TEXT:
        raise InvalidRecordError(name, f"must be a non-empty string of <= {_MAX_TEXT} characters")
    return value


def _optional_text(value: Any, name: str) -> str | None:
    return None if value is None else _text(value, name)


def _check_usage(usage: Any) -> None:
    if usage is None:
        return
    if type(usage) is not dict:
        raise InvalidRecordError("usage", "must be an object of attribute -> number")
    for key, value in usage.items():
        if type(value) is float:
            if not (value >= 0 and value != math.inf):
                raise InvalidRecordError(f"usage.{key}", "must be a finite number >= 0")
        elif type(value) is not int or not 0 <= value < _UINT64_END:
            raise InvalidRecordError(f"usage.{key}", "must be a finite number >= 0")
