"""Fences: how a budget store applies each flush of spend at most once.

Per service, a store remembers the highest ``seq`` it applied for each ``producer``:

- ``seq <= last``: a duplicate (a retried or replayed flush); nothing changes and the
  returned status has ``duplicate=True``.
- ``first_seq <= last < seq``: the flush partly overlaps what was applied (e.g. the Kafka
  enforcer replays a batch that now holds more records than its first attempt). Nothing
  is applied and the store raises FenceOverlapError(last_seq); the caller re-aggregates
  only the items after ``last_seq`` and applies them with ``first_seq = last_seq + 1``.
- otherwise the delta is applied and ``last`` becomes ``seq``.

Fence state is bounded: each (service, producer) entry expires after the store's
``fence_ttl`` (default 7 days) without a flush.
"""

from __future__ import annotations

from dataclasses import dataclass

from otelcost.errors import FenceOverlapError

__all__ = ["MAX_PRODUCER_LEN", "Fence", "FenceOverlapError"]

MAX_PRODUCER_LEN = 200
_MAX_SEQ = 2**53  # Lua compares sequences as doubles: exact below 2**53


@dataclass(frozen=True, slots=True)
class Fence:
    """Identifies one flush: ``producer`` (stable per writer), ``seq`` (increasing per producer).

    In-process exporters use a random producer id per process and a flush counter; the
    Kafka enforcer uses ``f"kafka:{topic}:{partition}"`` with the batch's highest offset as
    ``seq`` and its lowest as ``first_seq``.
    """

    producer: str
    seq: int
    first_seq: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.producer, str) or not 0 < len(self.producer) <= MAX_PRODUCER_LEN:
            raise ValueError(f"fence producer must be 1..{MAX_PRODUCER_LEN} characters")
        for name in ("seq", "first_seq"):
            value = getattr(self, name)
            if value is None and name == "first_seq":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_SEQ:
                raise ValueError(f"fence {name} must be an integer in [0, 2**53), got {value!r}")
        if self.first_seq is not None and self.first_seq > self.seq:
            raise ValueError(f"fence first_seq {self.first_seq} > seq {self.seq}")
