"""Dated prices (docs/pricing.md): parsing, validation and the price in force at a span's end."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otelcost.errors import PricingError, PricingNotFoundError
from otelcost.pricing import Price, PricingTable
from otelcost.pricing.table import ALWAYS, PriceMatch, PriceSchedule

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


def test_a_bad_schedule_fails_the_refresh_and_the_old_table_stays() -> None:
    from otelcost.pricing import PricingCache

    doc: dict[str, object] = {"version": "1", "prices": {"svc:*": [{"per_ms": 1.0}]}}
    cache = PricingCache(doc, ttl=600)  # the dict is read again at every refresh
    cache.refresh()
    doc.update(version="2", prices={"svc:*": [{"per_ms": 1.0}, {"per_ms": 2.0}]})
    with pytest.raises(PricingError, match=r"prices\['svc:\*'\]\[1\]: needs 'from'"):
        cache.refresh()
    assert cache.version == "1"


def test_from_outside_a_dated_entry_is_rejected() -> None:
    # As a string annotation it would be silently ignored and the price in force always.
    with pytest.raises(PricingError, match=r"'svc:op'\.from: 'from' belongs to a dated entry"):
        PricingTable.parse({"svc:op": {"from": "2027-01-01T00:00:00Z", "per_ms": 1e-6}})


# -- charge_sums: the rule applied to sums (re-pricing history) ---------------------------------

SPAN = st.tuples(
    st.booleans(),  # entry
    st.floats(min_value=0, max_value=1e6, allow_nan=False),  # duration_ms
    st.integers(min_value=0, max_value=10**6),  # tokens
)
RATE = st.floats(min_value=0, max_value=1e-3, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    spans=st.lists(SPAN, max_size=30),
    per_ms=RATE,
    per_request=RATE,
    per_token=RATE,
    key=st.sampled_from(["svc:*", "svc:chat", "svc:ch*"]),
)
def test_charge_of_the_sums_is_the_sum_of_the_charges(
    spans: list[tuple[bool, float, int]],
    per_ms: float,
    per_request: float,
    per_token: float,
    key: str,
) -> None:
    price = {"per_ms": per_ms, "per_request": per_request, "per_unit": {"tokens": per_token}}
    match = PricingTable.parse({key: price}).match("svc", "chat")
    assert match is not None
    for entry in (True, False):
        group = [(d, t) for e, d, t in spans if e is entry]
        charges = [
            match.charge(entry=entry, duration_ms=d, attributes={"tokens": t}, end_ms=DEC_1)
            for d, t in group
        ]
        live = sum(c.nanos for c in charges if c is not None)
        summed = match.charge_sums(
            entry=entry,
            spans=len(group),
            duration_ms=math.fsum(d for d, _ in group),
            usage={"tokens": sum(t for _, t in group)},
            end_ms=DEC_1,
        )
        # Live pricing rounds each span (and adds in floats); the sums round once.
        assert abs(summed - live) <= len(group) + 1


def test_charge_sums_follows_the_entry_and_nested_rule_with_the_dated_price() -> None:
    table = PricingTable.parse(
        {
            "svc:*": [
                {"per_request": 1e-3, "per_ms": 1e-6, "per_unit": {"tokens": 2e-6}},
                {"from": "2026-12-01T00:00:00Z", "per_request": 2e-3},
            ],
            "svc:GET /x": {"per_request": 5e-3},
        }
    )
    bare = table.match("svc", "op")
    named = table.match("svc", "GET /x")
    assert bare is not None and named is not None

    def sums(match: PriceMatch, entry: bool, end_ms: int) -> int:
        return match.charge_sums(
            entry=entry, spans=3, duration_ms=100.0, usage={"tokens": 1000}, end_ms=end_ms
        )

    assert sums(bare, True, DEC_1 - 1) == 3_000_000 + 100_000 + 2_000_000
    assert sums(bare, False, DEC_1 - 1) == 2_000_000  # usage only
    assert sums(bare, True, DEC_1) == 6_000_000
    assert sums(bare, False, DEC_1) == 0  # not billable
    assert sums(named, False, DEC_1) == 15_000_000  # targeted: the whole price


# -- through the real processor -----------------------------------------------------------------


def test_spans_ending_either_side_of_a_change_are_each_priced_by_the_price_in_force() -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, set_span_in_context

    from otelcost import CostSpanProcessor
    from otelcost.exporters import InMemoryCostExporter

    tokens = "gen_ai.usage.input_tokens"
    table = {
        "version": "dated-1",
        "currency": "USD",
        "prices": {
            "shop:*": [
                {"per_ms": 1e-6, "per_unit": {tokens: 1e-6}},
                {"from": "2026-12-01T00:00:00Z", "per_ms": 3e-6, "per_unit": {tokens: 5e-6}},
            ],
            "late:*": [{"from": "2026-12-01T00:00:00Z", "per_request": 1e-3}],
        },
    }
    costs = InMemoryCostExporter(max_records=None)
    spans = InMemorySpanExporter()
    processor = CostSpanProcessor(table, [costs], span_processors=[SimpleSpanProcessor(spans)])
    providers = {}
    for service in ("shop", "late"):
        providers[service] = TracerProvider(
            resource=Resource.create({"service.name": service}), shutdown_on_exit=False
        )
        providers[service].add_span_processor(processor)
    shop, late = providers["shop"].get_tracer("t"), providers["late"].get_tracer("t")
    ms = 1_000_000
    ends = {"before": DEC_1 - 1, "at": DEC_1, "after": DEC_1 + 3_600_000}
    for name, end_ms in ends.items():
        root = shop.start_span(name, kind=SpanKind.SERVER, start_time=(end_ms - 10) * ms)
        # A nested span under the bare "*": it pays only its usage, at the price then.
        child = shop.start_span(
            f"{name} llm",
            context=set_span_in_context(root),
            kind=SpanKind.CLIENT,
            attributes={tokens: 100},
            start_time=(end_ms - 8) * ms,
        )
        child.end(end_time=(end_ms - 1) * ms)
        root.end(end_time=end_ms * ms)
        span = late.start_span(name, kind=SpanKind.SERVER, start_time=(end_ms - 5) * ms)
        span.end(end_time=end_ms * ms)
    assert processor.force_flush(30_000)
    processor.shutdown()
    records = {(r.service, r.operation): r for r in costs.records}
    # (root: 10 ms, its nested span: 100 tokens) in nanos. Each span is priced at its own
    # end: the nested span of "at" ends 1 ms before the change, so at the old price.
    expected = {"before": (10_000, 100_000), "at": (30_000, 100_000), "after": (30_000, 500_000)}
    for name, (root_nanos, nested_nanos) in expected.items():
        assert records["shop", name].cost_nanos == root_nanos
        assert records["shop", name].entry
        nested = records["shop", f"{name} llm"]
        assert (nested.entry, nested.cost_nanos) == (False, nested_nanos)
    assert records["late", "at"].cost_nanos == records["late", "after"].cost_nanos == 1_000_000
    before = records["late", "before"]
    assert before.cost_nanos == 0 and before.error is not None
    assert before.error.startswith("pricing_not_found")
    enriched = {s.name: dict(s.attributes or {}) for s in spans.get_finished_spans()}
    assert enriched["before llm"]["cost.price_key"] == "shop:*"
    assert enriched["after llm"]["cost.amount"] == 5e-4
