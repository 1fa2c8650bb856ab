"""encode_cost_messages: schema 2 from the processor's cost tuples writes exactly the bytes
encode_messages writes for their CostRecords (with orjson and the stdlib), keeps each
message's tuples, and writes a span's own nano-units."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import pytest
from opentelemetry.trace import SpanContext

from _records import T0
from otelcost import _json
from otelcost.costing.coster import NO_USAGE, Binding, CostFields, Named, PricingSnapshot
from otelcost.stream._costs import cost_records, encode_cost_messages, row_of
from otelcost.stream.schema2 import decode_rows, encode_messages

SNAPSHOTS = (
    PricingSnapshot(None, "USD", "us-east-1", "v1", None),
    PricingSnapshot(None, "USD", None, "v2", None),  # a refresh between two spans
)
NAMEDS = (
    Named("checkout", "GET /users/{id}", entry_kind=True, folded=False),
    Named("checkout", "POST /cart", entry_kind=True, folded=False),  # same group
    Named("checkout", "GET /users/{id}", entry_kind=True, folded=False, deploy=("1.2", "prod")),
    Named("search", "GET /a[0]", entry_kind=False, folded=False),  # a "[" in a string
    Named("search", "odd ],[ name", entry_kind=False, folded=False),  # a row break
    Named("llm-gateway", 'quote " \\ \n ✓ 𝄞', entry_kind=True, folded=False),
)


class _Context:
    """A span context that is not the SDK's SpanContext (a hand-built span's)."""

    def __init__(self, trace_id: int, span_id: int) -> None:
        self.trace_id = trace_id
        self.span_id = span_id


@pytest.fixture(params=["orjson", "stdlib"])
def encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "stdlib":
        monkeypatch.setattr(_json, "dumps", _json._dumps_std)
    yield request.param


def _cost(
    i: int,
    rng: random.Random,
    *,
    named: Named | None = None,
    snap: PricingSnapshot = SNAPSHOTS[0],
    context: Any = None,
    **fields: Any,
) -> CostFields:
    values: dict[str, Any] = {
        "nanos": rng.randrange(0, 10**9),
        "duration_ms": rng.choice((0.5, 12.25, 1e-3, 3.0, 1 / 3)),
        "usage": NO_USAGE,
        "error": None,
        "entry": True,
        **fields,
    }
    return (
        named or rng.choice(NAMEDS),
        Binding(snap, None, values["error"], {}),
        values["nanos"],
        values["duration_ms"],
        T0 + i,
        values["usage"],
        values["error"],
        values["entry"],
        values["error"] is None,
        context or SpanContext(rng.getrandbits(128), rng.getrandbits(64), is_remote=False),
    )


def _mixed(count: int, seed: int = 3) -> list[CostFields]:
    rng = random.Random(seed)
    costs = []
    for i in range(count):
        kind = rng.random()
        fields: dict[str, Any] = {}
        if kind < 0.15:
            fields["usage"] = MappingProxyType({"gen_ai.usage.input_tokens": rng.randrange(10**6)})
        elif kind < 0.2:
            fields["nanos"] = 0
            fields["error"] = "pricing_not_found: nothing matched [here]"
        elif kind < 0.25:
            fields["entry"] = False
        elif kind < 0.27:
            fields["context"] = _Context(rng.getrandbits(128), rng.getrandbits(64))
        elif kind < 0.3:
            fields["snap"] = SNAPSHOTS[1]
        costs.append(_cost(i, rng, **fields))
    return costs


def _as_tuples(records: list[Any]) -> list[tuple[Any, ...]]:
    """Records as field tuples: tuples compare a NaN duration by identity first, where
    Python 3.13's dataclass __eq__ compares field by field (and NaN != NaN)."""
    return [tuple(getattr(r, f.name) for f in dataclasses.fields(r)) for r in records]


def _same_as_records(costs: list[CostFields], max_bytes: int) -> list[tuple[str, bytes, Any]]:
    """The messages of ``costs``, checked against encode_messages of their records."""
    messages = list(encode_cost_messages(costs, max_bytes))
    expected = list(encode_messages(cost_records(costs), max_bytes))
    assert [(key, value) for key, value, _ in messages] == [
        (key, value) for key, value, _ in expected
    ]
    assert [_as_tuples(cost_records(members)) for _, _, members in messages] == [
        _as_tuples(members) for _, _, members in expected
    ]
    return messages


@pytest.mark.usefixtures("encoder")
@pytest.mark.parametrize("count", [1, 7, 3000])
def test_the_bytes_are_those_of_the_records(count: int) -> None:
    costs = _mixed(count)
    messages = _same_as_records(costs, 1_000_000)
    assert sum(len(members) for _, _, members in messages) == count
    for _key, value, members in messages:
        _envelope, rows, bad = decode_rows(_json.loads(value), value)
        assert bad == []
        assert [list(row[:6]) for row in rows] == [list(row_of(cost)[:6]) for cost in members]


@pytest.mark.usefixtures("encoder")
def test_one_service_one_table_is_one_message() -> None:
    rng = random.Random(1)
    costs = [_cost(i, rng, named=NAMEDS[i % 2]) for i in range(600)]  # two Named, one key
    messages = _same_as_records(costs, 1_000_000)
    assert len(messages) == 1 and messages[0][2] == costs


@pytest.mark.usefixtures("encoder")
def test_a_group_over_the_room_is_split_as_the_records_are() -> None:
    messages = _same_as_records(_mixed(3000), 20_000)
    assert all(0 < len(value) <= 20_000 for _key, value, _members in messages)


@pytest.mark.usefixtures("encoder")
def test_a_cost_that_cannot_be_encoded_is_set_apart() -> None:
    rng = random.Random(2)
    costs = [_cost(i, rng) for i in range(100)]
    costs.insert(50, _cost(50, rng, usage=MappingProxyType({"k": object()})))
    costs.insert(60, _cost(60, rng, duration_ms=math.nan))  # the stdlib refuses NaN only
    messages = _same_as_records(costs, 1_000_000)
    apart = [members for _, value, members in messages if not value]
    assert costs[50:51] in apart
    assert sum(len(members) for _, _, members in messages) == len(costs)


def test_ids_out_of_range_are_spelled_as_the_records_spell_them() -> None:
    rng = random.Random(4)
    costs = [
        _cost(1, rng, context=SpanContext(2**128 + 5, 7, is_remote=False)),
        _cost(2, rng, context=_Context(-3, 2**64)),
        _cost(3, rng),
    ]
    _same_as_records(costs, 1_000_000)


def test_the_span_nanos_are_written_as_they_are() -> None:
    # Above 2**51 a float amount no longer rounds back to every integer; the sums and
    # the budget stores add the span's integer, and so does the stream.
    rng = random.Random(5)
    nanos = [4_470_521_724_410_497, 2**53 - 1, 123]
    costs = [_cost(i, rng, nanos=n, named=NAMEDS[0]) for i, n in enumerate(nanos)]
    [(_key, value, _members)] = encode_cost_messages(costs, 1_000_000)
    rows = _json.loads(value)["records"]
    assert [row[3] for row in rows] == nanos
    assert round(nanos[0] / 1e9 * 1e9) != nanos[0]  # what a CostRecord would have said
