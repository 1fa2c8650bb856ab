"""Batch sorting and fenced application, driven through the embedded (pure-Python) store."""

from __future__ import annotations

import pytest

from otelcost.budget import Budget, InMemoryBudgetStore
from otelcost.budget.model import MAX_DELTA_NANOS
from otelcost.errors import InvalidRecordError
from otelcost.money import from_nanos
from otelcost.record import CostRecord
from otelcost.stream._enforce_batch import Batch, Group, apply_group, decode

_HEADERS = [("otelcost-schema", b"1")]


def _value(service: str = "svc", nanos: int = 5, span: int = 1) -> bytes:
    return CostRecord(
        trace_id=f"{span:032x}",
        span_id=f"{span:016x}",
        service=service,
        operation="op",
        cost_amount=from_nanos(nanos),
        currency="USD",
        duration_ms=1.0,
        timestamp=1_764_236_400_000,
    ).to_json()


def _store() -> InMemoryBudgetStore:
    return InMemoryBudgetStore([Budget("*", limit=1e9)], clock=lambda: 1_764_236_400_000)


def _spend(store: InMemoryBudgetStore, service: str = "svc") -> int:
    return store.status(service).budgets[0].spend_nanos


def test_decode_accepts_a_missing_key_and_missing_header() -> None:
    assert decode(None, _value(), None).service == "svc"


@pytest.mark.parametrize(
    ("key", "value", "headers", "field"),
    [
        (b"\xc3\x28", _value(), _HEADERS, "<key>"),
        (b"svc", _value(), [("otelcost-schema", b"2")], "<header otelcost-schema>"),
        (b"svc", None, _HEADERS, "<record>"),
        (b"svc", _value(service="s" * 257), _HEADERS, "service"),
        (b"svc", _value(nanos=MAX_DELTA_NANOS), _HEADERS, "cost_amount"),
    ],
)
def test_decode_rejects(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], field: str
) -> None:
    with pytest.raises(InvalidRecordError) as caught:
        decode(key, value, headers)
    assert caught.value.field == field


def test_batch_groups_by_partition_and_service_and_keeps_dead_letters() -> None:
    batch = Batch("costs")
    batch.add(0, 10, b"a", _value("a", 3), _HEADERS)
    batch.add(1, 4, b"b", _value("b", 7), _HEADERS)
    batch.add(0, 11, b"a", b"{", _HEADERS)
    batch.add(0, 12, b"a", _value("a", 5), _HEADERS)
    assert len(batch) == 4
    assert batch.next_offsets == {0: 13, 1: 5}
    assert batch.groups[(0, "a")] == Group(offsets=[10, 12], nanos=[3, 5])
    assert batch.groups[(1, "b")] == Group(offsets=[4], nanos=[7])
    (dead,) = batch.dead
    assert (dead.partition, dead.offset, dead.value, dead.headers) == (0, 11, b"{", _HEADERS)
    assert dead.error.startswith("<record>: not valid JSON")
    assert batch.fence_producer(1) == "kafka:costs:1"
    batch.drop_partitions({0})
    assert (len(batch), batch.next_offsets, list(batch.groups)) == (1, {1: 5}, [(1, "b")])


def test_replay_with_other_boundaries_counts_each_record_once() -> None:
    store = _store()
    producer = "kafka:costs:0"
    first = apply_group(store, producer, "svc", Group(offsets=[3, 5, 8], nanos=[1, 2, 4]))
    assert (first.records, first.duplicates) == (3, 0)
    # The same records replayed: a duplicate.
    again = apply_group(store, producer, "svc", Group(offsets=[3, 5, 8], nanos=[1, 2, 4]))
    assert (again.records, again.duplicates) == (0, 3)
    # A replay whose batch reaches further: only the records after offset 8 count.
    wider = apply_group(store, producer, "svc", Group(offsets=[5, 8, 9, 12], nanos=[2, 4, 8, 16]))
    assert (wider.records, wider.duplicates) == (2, 2)
    assert _spend(store) == 1 + 2 + 4 + 8 + 16


def test_a_group_above_the_per_apply_limit_is_applied_in_chunks() -> None:
    store = _store()
    big = MAX_DELTA_NANOS // 2 + 1  # two of them exceed one apply
    group = Group(offsets=[1, 2, 3], nanos=[big, big, 7])
    applied = apply_group(store, "kafka:costs:0", "svc", group)
    assert (applied.records, applied.duplicates) == (3, 0)
    assert _spend(store) == 2 * big + 7
    replay = apply_group(store, "kafka:costs:0", "svc", group)
    assert (replay.records, replay.duplicates) == (0, 3)
    assert _spend(store) == 2 * big + 7
