"""Overflow aggregates: what an exporter keeps when it cannot hand records to its client.

When the client's local queue is full, each record is folded into one running aggregate
per (service, currency, deploy): span count and exact integer nano-cost are summed, so the money
is kept while memory stays bounded by the number of services, not by the outage length.
The aggregate is later sent as a single ``CostRecord(aggregate=True)``, whose only exact form
is its float amount: below ``money.ROUND_TRIP_BOUND`` nano-units the amount rounds back to the
very integer summed (and far below what consumers accept), so an aggregate that a record would
take to that bound is set aside whole and a new one started for its key.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from types import MappingProxyType

from otelcost.money import ROUND_TRIP_BOUND, from_nanos
from otelcost.record import CostRecord

__all__ = ["OVERFLOW_OPERATION", "OverflowAggregates"]

#: The operation of an aggregate record (the same name the cardinality guard folds into).
OVERFLOW_OPERATION = "OTHER"


@dataclass(slots=True)
class _Running:
    spans: int = 0
    nanos: int = 0
    duration_ms: float = 0.0
    timestamp: int = 0
    region: str | None = None
    pricing_version: str | None = None
    usage: dict[str, float] = field(default_factory=dict)


_Key = tuple[str, str, str | None, str | None]


class OverflowAggregates:
    """Running aggregates per service, currency and deploy (``service_version``,
    ``environment``); not thread-safe (callers hold a lock). ``max_keys`` bounds the
    aggregates held, running or set aside at ``ROUND_TRIP_BOUND``.

    ``seal`` turns them into records with deterministic ids derived from this instance's
    random id and a sequence number, so one sealed aggregate keeps its ids however often
    it is retried, and two aggregates never share ids.
    """

    def __init__(self, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._max_keys = max_keys
        self._running: dict[_Key, _Running] = {}
        self._full: list[tuple[_Key, _Running]] = []  # set aside at the bound, oldest first
        self._instance = uuid.uuid4().hex
        self._seq = 0
        self.pending_spans = 0

    def __bool__(self) -> bool:
        return bool(self._running or self._full)

    def add(self, record: CostRecord) -> bool:
        """Fold ``record`` in; False (nothing kept) when a new aggregate would exceed
        ``max_keys``."""
        key = (record.service, record.currency, record.service_version, record.environment)
        nanos = record.cost_nanos
        agg = self._running.get(key)
        if agg is not None and agg.nanos + nanos >= ROUND_TRIP_BOUND:
            self._full.append((key, self._running.pop(key)))
            agg = None
        if agg is None:
            if len(self._running) + len(self._full) >= self._max_keys:
                return False
            agg = self._running[key] = _Running(
                region=record.region, pricing_version=record.pricing_version
            )
        agg.spans += record.span_count
        agg.nanos += nanos
        agg.duration_ms += record.duration_ms
        agg.timestamp = max(agg.timestamp, record.timestamp)
        if agg.region != record.region:
            agg.region = None
        if agg.pricing_version != record.pricing_version:
            agg.pricing_version = None
        for name, amount in record.usage.items():
            agg.usage[name] = agg.usage.get(name, 0.0) + amount
        self.pending_spans += record.span_count
        return True

    def seal(self) -> list[CostRecord]:
        """Remove and return every aggregate as an ``aggregate=True`` record, those set
        aside first."""
        sealed = []
        for (service, currency, service_version, environment), agg in [
            *self._full,
            *self._running.items(),
        ]:
            self._seq += 1
            digest = hashlib.sha256(f"otelcost-overflow/{self._instance}/{self._seq}".encode())
            ids = digest.hexdigest()
            sealed.append(
                CostRecord(
                    trace_id=ids[:32],
                    span_id=ids[32:48],
                    service=service,
                    operation=OVERFLOW_OPERATION,
                    cost_amount=from_nanos(agg.nanos),
                    currency=currency,
                    duration_ms=agg.duration_ms,
                    timestamp=agg.timestamp,
                    region=agg.region,
                    pricing_version=agg.pricing_version,
                    usage=MappingProxyType(agg.usage),
                    aggregate=True,
                    span_count=agg.spans,
                    service_version=service_version,
                    environment=environment,
                )
            )
        self._running.clear()
        self._full.clear()
        self.pending_spans = 0
        return sealed
