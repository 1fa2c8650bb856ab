"""Schema-2 messages straight from the processor's per-span cost tuples (``CostFields``).

The export worker used to build a CostRecord per span only for the Kafka exporter to read
it back field by field into a row. ``encode_cost_messages`` makes the same rows from the
tuples the ending hook queued, a chunk at a time in C loops (``zip``, ``map``) rather
than per span in Python, and hands them to ``schema2.encode_groups``: the bytes are those
``encode_messages`` writes for the tuples' CostRecords (tests/stream/test_schema2_costs.py),
except that ``cost_nanos`` is the span's own integer, which the sums and the budget
stores add too (a CostRecord's float amount rounds it back to the same integer only below
2**51 nano-units).

Only otelcost's own exporters read the tuples (``_export_costs``, a private opt-in): the
public ``CostExporter.export`` still receives CostRecords.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanContext

from otelcost.stream.schema2 import GroupKey, encode_groups

if TYPE_CHECKING:
    from otelcost.costing.coster import CostFields, Named, PricingSnapshot
    from otelcost.record import CostRecord

__all__ = ["cost_records", "encode_cost_messages", "row_of"]

_NAMED = itemgetter(0)
_SNAPSHOT = attrgetter("snapshot")  # of a Binding
_BINDING = itemgetter(1)
_CONTEXT = itemgetter(9)
_OPERATION = attrgetter("operation")
_IDS = itemgetter(0)
_SPAN_IDS = itemgetter(1)
_TRACE_HEX = "%032x".__mod__  # what format_trace_id returns, without its Python frame
_SPAN_HEX = "%016x".__mod__
_TRACE_ID = attrgetter("trace_id")
_SPAN_ID = attrgetter("span_id")
# Contexts whose first two items are the ids: the SDK's, and the compiled planner's
# (trace_id, span_id).
_ID_TUPLES = {SpanContext, tuple}
# Up to this many costs, their rows are made in one call; more, and the rows of each group
# are made chunk by chunk as they are encoded (while still in the CPU's caches): measured
# faster from about a thousand costs on.
_ROWS_AT_ONCE = 512


def encode_cost_messages(
    costs: Sequence[CostFields], max_bytes: int
) -> Iterator[tuple[str, bytes, list[CostFields]]]:
    """``encode_messages`` of the costs' CostRecords, without building them: (service,
    value, the costs in it) per message. Every cost must have a span context."""
    groups = _groups(costs)
    if len(costs) > _ROWS_AT_ONCE:  # rows group by group, each chunk encoded at once
        return encode_groups(
            (
                (key, list(costs) if indexes is None else [costs[i] for i in indexes], None)
                for key, indexes in groups
            ),
            max_bytes,
            _rows,
            row_of,
        )
    # A small batch (the export worker's slices are sized to ~1 ms): the rows of all its
    # costs in one call, then split by group, so the fixed cost of making rows is paid
    # once, not once per service.
    rows = _rows(costs)
    split = [
        (key, list(costs), rows)
        if indexes is None
        else (key, [costs[i] for i in indexes], [rows[i] for i in indexes])
        for key, indexes in groups
    ]
    return encode_groups(split, max_bytes, _rows, row_of)


def _key(named: Named, snap: PricingSnapshot) -> GroupKey:
    service_version, environment = named.deploy
    return (named.service, snap.currency, snap.region, snap.version, service_version, environment)


def _groups(costs: Sequence[CostFields]) -> list[tuple[GroupKey, list[int] | None]]:
    """The indexes of the costs by GroupKey, in the order of each key's first cost (that
    of ``encode_messages``). The key is found once per distinct Named (and snapshot: both
    hash by identity), and each index appended to its group's list; None when all the
    costs make one group."""
    nameds = list(map(_NAMED, costs))
    snaps = list(map(_SNAPSHOT, map(_BINDING, costs)))
    groups: dict[GroupKey, list[int] | None] = {}
    keys: list[Any]
    if snaps.count(snaps[0]) == len(snaps):  # one pricing table: the usual case
        keys, snap = nameds, snaps[0]
        members_of = {
            named: groups.setdefault(_key(named, snap), []) for named in dict.fromkeys(nameds)
        }
    else:
        keys = list(zip(nameds, snaps, strict=True))
        members_of = {pair: groups.setdefault(_key(*pair), []) for pair in dict.fromkeys(keys)}
    if len(groups) == 1:
        return [(next(iter(groups)), None)]
    for i, members in enumerate(map(members_of.__getitem__, keys)):
        members.append(i)  # type: ignore[union-attr]  # a list: groups of several
    return list(groups.items())


def _hex(ids: Sequence[int], size: int, spelled: Callable[[int], str]) -> list[str]:
    """``spelled`` of each id (``%032x``/``%016x``), through bytes.hex, which is faster;
    ``spelled`` itself for an id out of range (negative, or too large: never from the
    SDK, but the bytes must be the same)."""
    try:
        # byteorder: positional on Python 3.10; mypy reads repeat("big") as of str.
        to_bytes = map(int.to_bytes, ids, repeat(size), repeat("big"))  # type: ignore[arg-type]
        return list(map(bytes.hex, to_bytes))
    except OverflowError:
        return list(map(spelled, ids))


def _rows(costs: Sequence[CostFields]) -> list[tuple[Any, ...]]:
    """``row_of`` each cost, in C loops over columns (``zip(*costs)`` transposes)."""
    nameds, _, nanos, durations, ends, usages, errors, entries, _, contexts = zip(
        *costs, strict=True
    )
    if set(map(type, contexts)) <= _ID_TUPLES:
        traces, spans = map(_IDS, contexts), map(_SPAN_IDS, contexts)
    else:
        traces, spans = map(_TRACE_ID, contexts), map(_SPAN_ID, contexts)
    rows = list(
        zip(
            _hex(list(traces), 16, _TRACE_HEX),
            _hex(list(spans), 8, _SPAN_HEX),
            map(_OPERATION, nameds),
            nanos,
            durations,
            ends,
            strict=True,
        )
    )
    if any(usages) or errors.count(None) != len(errors) or not all(entries):
        for i, (usage, error, entry) in enumerate(zip(usages, errors, entries, strict=True)):
            if usage or error is not None or not entry:
                rows[i] += (_extra(usage, error, entry),)
    return rows


def row_of(cost: CostFields) -> tuple[Any, ...]:
    """The schema-2 row of one cost: ``record_row`` of its CostRecord."""
    from otelcost.costing.coster import span_ids  # loaded: the costs come from there

    named, _, nanos, duration_ms, end_ms, usage, error, entry, _, context = cost
    trace_id, span_id = span_ids(context)
    row: tuple[Any, ...] = (
        _TRACE_HEX(trace_id),
        _SPAN_HEX(span_id),
        named.operation,
        nanos,
        duration_ms,
        end_ms,
    )
    if usage or error is not None or not entry:
        row += (_extra(usage, error, entry),)
    return row


def _extra(usage: Mapping[str, float], error: str | None, entry: bool) -> dict[str, Any]:
    """``schema2._extra`` of the cost's record (never an aggregate), in the same key order."""
    extra: dict[str, Any] = {}
    if usage:
        extra["usage"] = dict(usage)
    if error is not None:
        extra["error"] = error
    if not entry:
        extra["entry"] = False
    return extra


def cost_records(costs: Sequence[CostFields]) -> list[CostRecord]:
    """The CostRecords of costs (with span contexts), for the rare paths that keep or fold
    records: a full local queue, a message that cannot be sent."""
    from otelcost.costing.coster import cost_record, span_ids  # loaded: the costs come from there

    return [
        cost_record(cost, *span_ids(context)) for cost in costs if (context := cost[9]) is not None
    ]
