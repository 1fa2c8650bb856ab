"""Batch sorting and fenced application, driven through the embedded (pure-Python) store."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _records import cost_record
from otelcost.budget import Budget, InMemoryBudgetStore
from otelcost.budget.model import MAX_DELTA_NANOS
from otelcost.errors import InvalidRecordError
from otelcost.money import from_nanos
from otelcost.record import CostRecord
from otelcost.stream import schema2
from otelcost.stream._consume import decode_rows
from otelcost.stream._enforce_batch import Batch, Group, apply_group, decode
from otelcost.stream.schema2 import encode_messages

_HEADERS = [("otelcost-schema", b"1")]


def _value(service: str = "svc", nanos: int = 5, span: int = 1) -> bytes:
    return cost_record(span, service=service, cost_amount=from_nanos(nanos)).to_json()


def _record(service: str = "svc", nanos: int = 5, span: int = 1) -> CostRecord:
    return CostRecord.from_json(_value(service, nanos, span))


def _batch(records: list[CostRecord]) -> bytes:
    ((_key, value, _members),) = encode_messages(records, 1_000_000)
    return value


def _store() -> InMemoryBudgetStore:
    return InMemoryBudgetStore([Budget("*", limit=1e9)], clock=lambda: 1_764_236_400_000)


def _spend(store: InMemoryBudgetStore, service: str = "svc") -> int:
    return store.status(service).budgets[0].spend_nanos


def test_decode_accepts_a_missing_key_and_missing_header() -> None:
    records, bad = decode(None, _value(), None)
    assert ([r.service for r in records], bad) == (["svc"], [])


@pytest.mark.parametrize(
    ("key", "value", "headers", "field"),
    [
        (b"\xc3\x28", _value(), _HEADERS, "<key>"),
        (b"svc", _value(), [("otelcost-schema", b"3")], "<header otelcost-schema>"),
        (b"svc", _value(), [("otelcost-schema", b"2")], "schema"),
        (b"svc", _batch([_record()]), [("otelcost-schema", b"1")], "schema"),
        (b"svc", _batch([_record(service="s" * 257)]), None, "service"),
        (b"svc", b'{"schema":2,"service":"svc"}', None, "currency"),
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
    assert batch.groups[(0, "a")] == Group(offsets=[10, 12], nanos=[3, 5], counts=[1, 1])
    assert batch.groups[(1, "b")] == Group(offsets=[4], nanos=[7], counts=[1])
    (dead,) = batch.dead
    assert (dead.partition, dead.offset, dead.value, dead.headers) == (0, 11, b"{", _HEADERS)
    assert dead.error.startswith("<record>: not valid JSON")
    assert batch.fence_producer(1) == "kafka:costs:1"
    batch.drop_partitions({0})
    assert (batch.records, batch.next_offsets, list(batch.groups)) == (1, {1: 5}, [(1, "b")])


def test_replay_with_other_boundaries_counts_each_record_once() -> None:
    store = _store()
    producer = "kafka:costs:0"
    first = apply_group(
        store, producer, "svc", Group(offsets=[3, 5, 8], nanos=[1, 2, 4], counts=[1, 2, 1])
    )
    assert (first.records, first.duplicates) == (4, 0)
    # The same messages replayed: a duplicate.
    again = apply_group(
        store, producer, "svc", Group(offsets=[3, 5, 8], nanos=[1, 2, 4], counts=[1, 2, 1])
    )
    assert (again.records, again.duplicates) == (0, 4)
    # A replay whose batch reaches further: only the messages after offset 8 count.
    wider = apply_group(
        store,
        producer,
        "svc",
        Group(offsets=[5, 8, 9, 12], nanos=[2, 4, 8, 16], counts=[2, 1, 3, 1]),
    )
    assert (wider.records, wider.duplicates) == (4, 3)
    assert _spend(store) == 1 + 2 + 4 + 8 + 16


def test_a_group_above_the_per_apply_limit_is_applied_in_chunks() -> None:
    store = _store()
    big = MAX_DELTA_NANOS // 2 + 1  # two of them exceed one apply
    group = Group(offsets=[1, 2, 3], nanos=[big, big, 7], counts=[1, 1, 1])
    applied = apply_group(store, "kafka:costs:0", "svc", group)
    assert (applied.records, applied.duplicates) == (3, 0)
    assert _spend(store) == 2 * big + 7
    replay = apply_group(store, "kafka:costs:0", "svc", group)
    assert (replay.records, replay.duplicates) == (0, 3)
    assert _spend(store) == 2 * big + 7


def test_schema_1_and_2_mix_and_a_bad_record_goes_alone_to_the_dead_letters() -> None:
    good = [_record("a", nanos=10 + i, span=i + 1) for i in range(4)]
    value = _batch(good)
    # Corrupt the third record only (its line), keeping the message valid JSON.
    lines = value.split(b"\n")
    lines[3] = lines[3].replace(b'"op",12,', b'"op",-12,')
    broken = b"\n".join(lines)
    batch = Batch("costs")
    batch.add(0, 1, b"a", _value("a", 100), _HEADERS)
    batch.add(0, 2, b"a", broken, [("otelcost-schema", b"2")])
    batch.add(0, 3, b"a", value, None)  # schema 2 told by the value alone
    assert (len(batch), batch.records) == (3, 1 + 3 + 4)
    assert batch.groups[(0, "a")] == Group(
        offsets=[1, 2, 3], nanos=[100, 10 + 11 + 13, 10 + 11 + 12 + 13], counts=[1, 3, 4]
    )
    (dead,) = batch.dead
    assert (dead.offset, dead.index) == (2, 2)
    assert dead.error.startswith("records[2].cost_nanos:")
    assert dead.headers == [("otelcost-schema", b"2")]
    # The dead letter is a one-record schema-2 message holding the record's original line.
    assert dead.value == lines[0] + b"\n" + lines[3].rstrip(b",") + b"\n]}"
    assert decode(b"a", dead.value, None)[1][0].index == 0


def test_rows_and_records_decode_alike() -> None:
    records = [_record("a", nanos=i * 1000 + 1, span=i + 1) for i in range(50)]
    records[7] = dataclasses.replace(records[7], usage={"gen_ai.usage.input_tokens": 12})
    records[9] = dataclasses.replace(records[9], entry=False)
    records[11] = dataclasses.replace(records[11], aggregate=True, span_count=40)
    value = _batch(records)
    decoded, bad = decode(b"a", value, None)
    assert (decoded, bad) == (records, [])
    envelope, rows, bad = decode_rows(b"a", value, None)
    assert (envelope.service, bad) == ("a", [])
    assert [row[3] for row in rows] == [r.cost_nanos for r in records]
    assert rows[7][6] == {"usage": {"gen_ai.usage.input_tokens": 12}}
    assert rows[9][6] == {"entry": False}
    # A schema-1 message is one row.
    envelope, rows, bad = decode_rows(b"a", _value("a", 42), _HEADERS)
    assert (envelope.service, [row[3] for row in rows], bad) == ("a", [42], [])


_MUTATIONS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=5), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    row=st.integers(min_value=0, max_value=3),
    position=st.integers(min_value=0, max_value=7),
    replacement=_MUTATIONS,
    envelope_key=st.sampled_from(
        ["schema", "service", "currency", "region", "pricing_version", "records", "extra"]
    ),
    mutate_envelope=st.booleans(),
)
def test_a_mutated_schema_2_message_is_dead_lettered_never_raised(
    row: int, position: int, replacement: object, envelope_key: str, mutate_envelope: bool
) -> None:
    """Whatever one field becomes, decoding raises only InvalidRecordError (the message
    is dead-lettered whole) or returns every record as good or bad, none lost."""
    records = [_record("a", nanos=10 + i, span=i + 1) for i in range(4)]
    doc = json.loads(_batch(records))
    if mutate_envelope:
        doc[envelope_key] = replacement
    else:
        target = doc["records"][row]
        if position < len(target):
            target[position] = replacement
        else:
            target.append(replacement)
    value = json.dumps(doc).encode()
    try:
        good, bad = decode(b"a", value, None)
    except InvalidRecordError:
        return
    assert len(good) + len(bad) == len(doc["records"])  # every record, good or bad
    for letter in bad:
        alone, none_bad = decode(b"a", letter.value, None)
        assert (alone, [b.index for b in none_bad]) == ([], [0])


_CELLS = st.one_of(
    _MUTATIONS,
    st.sampled_from(
        [
            float("nan"),
            float("inf"),
            -0.0,
            2.0**64,
            2**64,
            2**53,
            10**12,
            10**13 - 1,
            "0" * 32,
            "A" * 32,
            "é" * 16,
            "0" * 16,
            "x" * 4097,
            {"entry": False},
            {"span_count": 2, "aggregate": True},
            {"usage": {"t": float("nan")}},
        ]
    ),
)


@settings(max_examples=500, deadline=None)
@given(
    cells=st.lists(
        st.tuples(st.integers(min_value=0, max_value=5), st.integers(0, 7), _CELLS),
        max_size=3,
    )
)
def test_the_column_check_never_accepts_what_the_record_check_rejects(
    cells: list[tuple[int, int, object]],
) -> None:
    """decode_rows tests a message's records column by column when it can; whatever the
    cells become, that test never passes a record the one-by-one check rejects."""
    records = [_record("a", nanos=10 + i, span=i + 1) for i in range(6)]
    records[1] = dataclasses.replace(records[1], entry=False)
    doc = json.loads(_batch(records))
    for row, position, replacement in cells:
        target = doc["records"][row]
        if position < len(target):
            target[position] = replacement
        else:
            target.append(replacement)
    rejected = 0
    for row in doc["records"]:
        try:
            schema2._check(row)
        except InvalidRecordError:
            rejected += 1
    if rejected:
        assert not schema2._all_valid(doc["records"])
    elif not cells:
        assert schema2._all_valid(doc["records"])
