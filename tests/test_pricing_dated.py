"""Dated prices (DESIGN §3): parsing, validation and the price in force at a span's end."""

from __future__ import annotations

import pytest

from otelcost.errors import PricingError, PricingNotFoundError
from otelcost.pricing import Price, PricingTable
from otelcost.pricing.table import ALWAYS, PriceSchedule

DEC_1 = 1_796_083_200_000  # 2026-12-01T00:00:00Z in epoch ms
JAN_1 = 1_798_761_600_000  # 2027-01-01T00:00:00Z

DATED = {
    "currency": "USD",
    "prices": {
        "svc:*": [
            {"per_ms": 1e-6},
            {"from": "2026-12-01T00:00:00Z", "per_ms": 2e-6, "note": "new contract"},
            {"from": "2027-01-01T00:00:00+00:00", "per_request": 1e-3},
        ],
        "*:*": {"per_ms": 5e-7},
    },
}


def test_schedule_is_parsed_in_order_with_utc_starts() -> None:
    match = PricingTable.parse(DATED).match("svc", "op")
    assert match is not None and match.schedule is not None
    assert match.schedule.starts == (ALWAYS, DEC_1, JAN_1)
    assert match.schedule.prices == (
        Price(per_ms=1e-6),
        Price(per_ms=2e-6),
        Price(per_request=1e-3),
    )
    assert match.price == Price(per_request=1e-3)  # the latest


@pytest.mark.parametrize(
    ("end_ms", "expected"),
    [
        (DEC_1 - 1, Price(per_ms=1e-6)),
        (DEC_1, Price(per_ms=2e-6)),  # "from" is inclusive
        (JAN_1 - 1, Price(per_ms=2e-6)),
        (JAN_1, Price(per_request=1e-3)),
        (JAN_1 + 10**11, Price(per_request=1e-3)),
    ],
)
def test_the_price_in_force_at_the_end_applies(end_ms: int, expected: Price) -> None:
    table = PricingTable.parse(DATED)
    match = table.match("svc", "op")
    assert match is not None
    assert match.price_at(end_ms) == expected
    assert table.resolve("svc", "op", at_ms=end_ms) == expected
    charge = match.charge(entry=True, duration_ms=10.0, attributes={}, end_ms=end_ms)
    assert charge is not None
    assert charge.nanos == expected.cost_nanos(10.0, {})


def test_before_the_first_start_no_price_is_in_force() -> None:
    table = PricingTable.parse({"svc:op": [{"from": "2026-12-01T00:00:00Z", "per_ms": 1e-6}]})
    match = table.match("svc", "op")
    assert match is not None
    with pytest.raises(
        PricingNotFoundError, match=r"'svc:op': no price in force at 2026-11-30T23:59:59.999Z"
    ):
        match.charge(entry=True, duration_ms=1.0, attributes={}, end_ms=DEC_1 - 1)
    assert match.price_at(DEC_1) == Price(per_ms=1e-6)


def test_nested_spans_follow_the_rule_with_the_dated_price() -> None:
    table = PricingTable.parse(
        {
            "svc:*": [
                {"per_unit": {"tokens": 1e-6}},
                {"from": "2026-12-01T00:00Z", "per_unit": {"tokens": 3e-6}},
            ]
        }
    )
    match = table.match("svc", "chat")
    assert match is not None and not match.targeted
    before = match.charge(entry=False, duration_ms=5.0, attributes={"tokens": 10}, end_ms=DEC_1 - 1)
    after = match.charge(entry=False, duration_ms=5.0, attributes={"tokens": 10}, end_ms=DEC_1)
    assert before is not None and after is not None
    assert (before.nanos, after.nanos) == (10_000, 30_000)
    assert match.charge(entry=False, duration_ms=5.0, attributes={}, end_ms=DEC_1) is None


def test_python_built_schedules_and_constructor_agree_with_parse() -> None:
    schedule = PriceSchedule((ALWAYS, DEC_1), (Price(per_ms=1.0), Price(per_ms=2.0)))
    built = PricingTable({"svc:op": schedule})
    parsed = PricingTable.parse(
        {"svc:op": [{"per_ms": 1.0}, {"from": "2026-12-01T00:00:00.000Z", "per_ms": 2.0}]}
    )
    assert built.match("svc", "op") == parsed.match("svc", "op")
    with pytest.raises(ValueError, match="strictly increasing"):
        PriceSchedule((DEC_1, DEC_1), (Price(), Price()))


def test_table_lists_its_entries_in_document_order() -> None:
    assert [m.key for m in PricingTable.parse(DATED)] == ["svc:*", "*:*"]


def item(when: object, per_ms: float = 1e-6) -> dict[str, object]:
    return {"from": when, "per_ms": per_ms}


BAD_SCHEDULES = [
    ([], "'svc:op': a dated entry needs at least one price"),
    ([None], "'svc:op'[0]: a dated price must be an object, got NoneType"),
    (
        [{"per_ms": 1}, {"per_ms": 2}],
        "'svc:op'[1]: needs 'from' (only the first price may omit it)",
    ),
    (
        [item("2027-01-01T00:00:00Z"), item("2026-12-01T00:00:00Z")],
        "'svc:op'[1].from: 2026-12-01T00:00:00Z is earlier than the 'from' of [0] "
        "(2027-01-01T00:00:00Z)",
    ),
    (
        [item("2027-01-01T00:00:00Z"), item("2027-01-01T00:00:00+00:00")],
        "'svc:op'[1].from: 2027-01-01T00:00:00Z repeats the 'from' of [0]",
    ),
    ([item("2027-01-01")], "'svc:op'[0].from: not an ISO 8601 instant like '2027-01-01T00:00:00Z'"),
    ([item("2027-01-01T00:00:00")], "'svc:op'[0].from: not an ISO 8601 instant"),
    (
        [item("2027-01-01T00:00:00+01:00")],
        "'svc:op'[0].from: must be in UTC ('Z' or '+00:00'), got '2027-01-01T00:00:00+01:00'",
    ),
    ([item("2027-02-30T00:00:00Z")], "'svc:op'[0].from: not a valid date and time"),
    ([item("next tuesday")], "'svc:op'[0].from: not an ISO 8601 instant"),
    (
        [item(1798761600000)],
        "'svc:op'[0].from: must be a string such as '2027-01-01T00:00:00Z', got int",
    ),
    ([item("2027-01-01T00:00:00Z", -1.0)], "'svc:op'[0].per_ms: must be a finite number >= 0"),
    ([item("2027-01-01T00:00:00.5Z")], "'svc:op'[0].from: not an ISO 8601 instant"),
]


@pytest.mark.parametrize(("schedule", "message"), BAD_SCHEDULES)
def test_bad_schedules_fail_the_table_naming_key_and_index(schedule: object, message: str) -> None:
    with pytest.raises(PricingError) as caught:
        PricingTable.parse({"svc:op": schedule, "*:*": None})
    assert message in str(caught.value)


def test_from_outside_a_dated_entry_is_rejected() -> None:
    # As a string annotation it would be silently ignored and the price in force always.
    with pytest.raises(PricingError, match=r"'svc:op'\.from: 'from' belongs to a dated entry"):
        PricingTable.parse({"svc:op": {"from": "2027-01-01T00:00:00Z", "per_ms": 1e-6}})
