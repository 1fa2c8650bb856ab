"""One consumed batch of the cost stream, as ``otelcost rollup`` processes it."""

from __future__ import annotations

from otelcost.rollup._aggregate import MinuteRollup
from otelcost.stream.consumer import ConsumedBatch, Message
from otelcost.stream.schema2 import Envelope, Row

__all__ = ["RollupBatch"]


class RollupBatch(ConsumedBatch):
    """Per partition, each message's offset and the per-minute sums of its valid records
    (the store adds those at or above the partition's stored offset); dead letters; per
    partition the offset after the last message (what the rollup stores once the batch
    is written)."""

    def __init__(self, topic: str) -> None:
        super().__init__(topic)
        self.sums: dict[int, list[tuple[int, MinuteRollup]]] = {}

    def _keep(self, message: Message, envelope: Envelope, rows: list[Row]) -> None:
        sums = MinuteRollup()
        sums.add_rows(envelope, rows)
        self.sums.setdefault(message.partition, []).append((message.offset, sums))
        self.records += len(rows)

    def _drop(self, partitions: set[int]) -> None:
        self.sums = {p: s for p, s in self.sums.items() if p not in partitions}
        self.records = sum(s.records for kept in self.sums.values() for _, s in kept)
