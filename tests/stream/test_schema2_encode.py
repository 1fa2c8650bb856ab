"""encode_messages: the one-call fast path writes exactly the bytes of the line-by-line
encoding, with orjson and with the stdlib fallback, and falls back whenever it cannot."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from _records import T0, cost_record
from otelcost import _json
from otelcost.record import MAX_RECORD_BYTES, CostRecord
from otelcost.stream import schema2
from otelcost.stream.schema2 import decode_message, encode_messages, json_schema

SCHEMA_2 = json_schema()
Message = tuple[str, bytes, list[CostRecord]]


@pytest.fixture(params=["orjson", "stdlib"])
def encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "stdlib":
        monkeypatch.setattr(_json, "dumps", _json._dumps_std)
    yield request.param


def _line_by_line(records: list[CostRecord], max_bytes: int) -> list[Message]:
    """The reference: every record encoded on its own, then split (the slow path)."""
    groups: dict[Any, list[CostRecord]] = {}
    for record in records:
        key = (
            record.service,
            record.currency,
            record.region,
            record.pricing_version,
            record.service_version,
            record.environment,
        )
        groups.setdefault(key, []).append(record)
    out: list[Message] = []
    for key, members in groups.items():
        prefix = schema2.envelope_prefix(key)
        room = max_bytes - len(prefix) - len(schema2._END)
        out.extend(schema2._group_of(members).messages(key[0], prefix, room))
    return out


OPERATIONS = (
    "GET /users/{id}",
    "GET /a[0]",  # a "[" in a string: the "],[" path
    "odd ],[ name",  # a row break in a string: line by line
    'quote " and \\ and \n newline',
    "ünïcode ✓ 𝄞",
    "x" * 300,
)


def _mixed(count: int, seed: int = 3) -> list[CostRecord]:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        fields: dict[str, Any] = {
            "service": rng.choice(("checkout", "search", "llm-gateway")),
            "operation": rng.choice(OPERATIONS),
            "cost_amount": rng.randrange(0, 10**9) / 1e9,
            "duration_ms": rng.choice((0.5, 12.25, 1e-3, 3.0)),
            "timestamp": T0 + i,
            "pricing_version": rng.choice(("v1", "v2")),
        }
        kind = rng.random()
        if kind < 0.2:
            fields["usage"] = {"gen_ai.usage.input_tokens": rng.randrange(10**6), "r": 0.5}
        elif kind < 0.25:
            fields["cost_amount"] = 0.0
            fields["error"] = "no_price: nothing matched [here]"
        elif kind < 0.3:
            fields["entry"] = False
        elif kind < 0.32:
            fields["aggregate"] = True
            fields["span_count"] = 7
        records.append(cost_record(i + 1, **fields))
    return records


def _valid(messages: list[Message]) -> None:
    for _key, value, members in messages:
        doc = _json.loads(value)
        jsonschema.validate(doc, SCHEMA_2)
        _envelope, good, bad = decode_message(doc, value)
        assert not bad
        assert good == members


@pytest.mark.usefixtures("encoder")
@pytest.mark.parametrize("operations", [OPERATIONS[:1], OPERATIONS[:2], OPERATIONS])
def test_the_bytes_are_those_of_the_line_by_line_encoding(operations: tuple[str, ...]) -> None:
    records = [r for r in _mixed(3000) if r.operation in operations]
    messages = list(encode_messages(records, 1_000_000))
    assert messages == _line_by_line(records, 1_000_000)
    assert len(messages) == 6  # 3 services x 2 pricing versions: one message each
    _valid(messages)


@pytest.mark.usefixtures("encoder")
def test_a_group_over_the_room_is_split_as_before() -> None:
    records = _mixed(3000)
    messages = list(encode_messages(records, 20_000))
    assert messages == _line_by_line(records, 20_000)
    assert all(0 < len(value) <= 20_000 for _key, value, _members in messages)
    _valid(messages)


@pytest.mark.usefixtures("encoder")
def test_a_line_over_64_kib_is_set_apart_and_its_group_still_goes() -> None:
    records = [cost_record(i + 1, operation=f"op {i}") for i in range(2000)]
    huge = cost_record(9999, operation="y" * (MAX_RECORD_BYTES + 1))
    near = cost_record(9998, operation="z" * 4096)  # the longest valid operation
    mixed = [*records[:1000], huge, near, *records[1000:]]
    messages = list(encode_messages(mixed, 1_000_000))
    assert messages == _line_by_line(mixed, 1_000_000)
    assert (huge.service, b"", [huge]) in messages
    _valid([m for m in messages if m[1]])
    assert sum(len(m[2]) for m in messages if m[1]) == len(mixed) - 1


@pytest.mark.usefixtures("encoder")
def test_a_record_that_cannot_be_encoded_is_set_apart() -> None:
    records = [cost_record(i + 1) for i in range(100)]
    bad = cost_record(500, usage={"k": object()})  # TypeError with either encoder
    mixed = [*records[:50], bad, *records[50:]]
    messages = list(encode_messages(mixed, 1_000_000))
    assert messages == _line_by_line(mixed, 1_000_000)
    assert ("svc", b"", [bad]) in messages
    _valid([m for m in messages if m[1]])


def test_nan_with_the_stdlib_is_set_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_json, "dumps", _json._dumps_std)
    records = [cost_record(1), cost_record(2, duration_ms=math.nan), cost_record(3)]
    messages = list(encode_messages(records, 1_000_000))
    assert ("svc", b"", [records[1]]) in messages
    assert [m[2] for m in messages if m[1]] == [[records[0], records[2]]]


def test_lines_at_once_refuses_a_line_that_covers_a_window() -> None:
    records = [cost_record(i + 1) for i in range(600)]  # more than one chunk
    lines = schema2._lines_at_once(records, 10**6)
    assert lines is not None
    assert lines.count(b"\n") == 600
    records.insert(300, cost_record(999, operation="w" * MAX_RECORD_BYTES))
    assert schema2._lines_at_once(records, 10**6) is None
