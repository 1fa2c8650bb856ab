"""One consumed batch of the cost stream, as ``otelcost enforce`` processes it.

A batch sorts messages into valid records, summed per message and per (partition,
service) with the offsets they came from, and dead letters (the original bytes plus the
reason; for schema 2, one per invalid record, its neighbours kept). It knows
the offsets to commit once everything in it is applied and dead-lettered.

Applying a group uses the fence ``kafka:<topic>:<partition>`` with the group's highest
offset as ``seq`` and its lowest as ``first_seq``: a replay after a crash is recognised
as a duplicate, and a replay whose batch boundaries moved is re-aggregated from the
first offset the store has not seen (``FenceOverlapError.last_seq``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter

from otelcost.budget.fence import Fence, FenceOverlapError
from otelcost.budget.model import MAX_DELTA_NANOS
from otelcost.budget.status import BudgetStatus
from otelcost.budget.store import BudgetStore
from otelcost.stream._consume import ERROR_HEADER, SOURCE_HEADER, DeadLetter, decode
from otelcost.stream.consumer import ConsumedBatch, Message
from otelcost.stream.schema2 import Envelope, Row

__all__ = [
    "ERROR_HEADER",
    "SOURCE_HEADER",
    "Applied",
    "Batch",
    "DeadLetter",
    "Group",
    "apply_group",
    "decode",
]

_COST = itemgetter(3)  # a row's cost_nanos


@dataclass(slots=True)
class Group:
    """The messages of one service in one partition, in offset order: per message its
    offset, the sum of its valid records' nanos and how many they are."""

    offsets: list[int] = field(default_factory=list)
    nanos: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    applied: bool = False


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of applying one group: records counted and records skipped as replays."""

    records: int
    duplicates: int
    status: BudgetStatus


class Batch(ConsumedBatch):
    """Messages consumed together, until their spend is applied and offsets committed."""

    def __init__(self, topic: str) -> None:
        super().__init__(topic)
        self.groups: dict[tuple[int, str], Group] = {}

    def _keep(self, message: Message, envelope: Envelope, rows: list[Row]) -> None:
        nanos = sum(map(_COST, rows))
        if nanos >= MAX_DELTA_NANOS:
            # One message is applied with one fence: it must fit in one apply.
            reason = "<record>: the message's records exceed the budget store's 2**53 nanos"
            self.dead.append(message.dead_letter(message.value, reason))
            return
        partition, offset = message.partition, message.offset
        group = self.groups.get((partition, envelope.service))
        if group is None:
            group = self.groups[(partition, envelope.service)] = Group()
        group.offsets.append(offset)
        group.nanos.append(nanos)
        group.counts.append(len(rows))
        self.records += len(rows)

    def _drop(self, partitions: set[int]) -> None:
        self.groups = {k: g for k, g in self.groups.items() if k[0] not in partitions}
        self.records = sum(sum(g.counts) for g in self.groups.values())

    def fence_producer(self, partition: int) -> str:
        return f"kafka:{self.topic}:{partition}"


def apply_group(store: BudgetStore, producer: str, service: str, group: Group) -> Applied:
    """Apply one group's spend at most once (see the module docs); store errors propagate.

    A group whose sum reaches the store's per-call limit (2**53 nanos) is applied in
    consecutive chunks, each with its own fence.
    """
    offsets, nanos, counts = group.offsets, group.nanos, group.counts
    applied = duplicates = start = 0
    while True:  # a group holds at least one message
        end, total = start, 0
        while end < len(offsets) and total + nanos[end] < MAX_DELTA_NANOS:
            total += nanos[end]
            end += 1
        chunk, status = _apply_chunk(
            store,
            producer,
            service,
            offsets=offsets[start:end],
            nanos=nanos[start:end],
            counts=counts[start:end],
        )
        applied += chunk
        duplicates += sum(counts[start:end]) - chunk
        start = end
        if start == len(offsets):
            return Applied(applied, duplicates, status)


def _apply_chunk(
    store: BudgetStore,
    producer: str,
    service: str,
    *,
    offsets: list[int],
    nanos: list[int],
    counts: list[int],
) -> tuple[int, BudgetStatus]:
    """Records applied (0 for a duplicate) and the store's status."""
    fence = Fence(producer, seq=offsets[-1], first_seq=offsets[0])
    try:
        status = store.apply(service, sum(nanos), fence)
    except FenceOverlapError as exc:
        start = next(i for i, offset in enumerate(offsets) if offset > exc.last_seq)
        fence = Fence(producer, seq=offsets[-1], first_seq=offsets[start])
        status = store.apply(service, sum(nanos[start:]), fence)
        return (0 if status.duplicate else sum(counts[start:])), status
    return (0 if status.duplicate else sum(counts)), status
