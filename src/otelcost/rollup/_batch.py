"""One consumed batch of the cost stream, as ``otelcost rollup`` processes it."""

from __future__ import annotations

from otelcost.record import CostRecord
from otelcost.stream._consume import DeadLetter, Headers, decode, take

__all__ = ["RollupBatch"]


class RollupBatch:
    """Valid records by partition with their message's offset, dead letters, and per
    partition the offset after the last message (what the rollup stores once the batch
    is written)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.records: dict[int, list[tuple[int, CostRecord]]] = {}
        self.dead: list[DeadLetter] = []
        self.next_offsets: dict[int, int] = {}
        self.messages = 0

    def __len__(self) -> int:
        """Messages consumed into this batch."""
        return self.messages

    @property
    def record_count(self) -> int:
        """Valid records plus dead letters."""
        return sum(len(entries) for entries in self.records.values()) + len(self.dead)

    def add(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
    ) -> None:
        """Decode one message into the records or the dead letters (as ``enforce`` does)."""
        self.messages += 1
        decoded = take(
            self.next_offsets,
            self.dead,
            partition,
            offset,
            key=key,
            value=value,
            headers=headers,
            decoder=decode,
        )
        if decoded is not None and decoded[0]:
            entries = self.records.setdefault(partition, [])
            entries.extend((offset, record) for record in decoded[0])

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget everything from ``partitions`` (revoked: the new owner replays them)."""
        self.records = {p: e for p, e in self.records.items() if p not in partitions}
        self.dead = [d for d in self.dead if d.partition not in partitions]
        self.next_offsets = {p: o for p, o in self.next_offsets.items() if p not in partitions}
