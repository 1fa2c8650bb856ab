"""Prices, pricing tables (parsing, precedence, free tier, bad input) and PricingCache."""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import otelcost
from _processes import in_forked_child
from _wait import wait_for
from otelcost.errors import PricingError, PricingNotFoundError, PricingStaleError
from otelcost.money import to_nanos
from otelcost.pricing import Price, PricingCache, PricingTable


class FakeClock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self, now: float = 1_764_236_400.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedSource:
    """A PricingSource whose fetch returns or raises the next scripted step (the last repeats)."""

    def __init__(self, *steps: PricingTable | BaseException | object) -> None:
        self.steps = list(steps)
        self.calls = 0
        self.fetched = threading.Event()

    def fetch(self) -> Any:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        self.fetched.set()
        if isinstance(step, BaseException):
            raise step
        return step


def table(version: str, per_ms: float = 1.0) -> PricingTable:
    return PricingTable.parse(
        {"version": version, "prices": {"svc:op": {"per_ms": per_ms}, "*:*": {"per_ms": per_ms}}}
    )


# -- Price -----------------------------------------------------------------------------------


def test_price_defaults_are_free() -> None:
    price = Price()
    assert (price.per_ms, price.per_request, dict(price.per_unit)) == (0.0, 0.0, {})
    assert price.cost_nanos(1234.5, {}) == 0


def test_price_cost_is_the_design_formula_in_nanos() -> None:
    price = Price(per_ms=2e-6, per_request=1e-6, per_unit={"in": 3e-6, "out": 1.5e-5})
    usage = {"in": 812.0, "out": 20.0}
    expected = to_nanos(1e-6 + 2e-6 * 12.5 + 3e-6 * 812 + 1.5e-5 * 20)
    assert price.cost_nanos(12.5, usage) == expected
    assert price.cost_nanos(12.5, {}) == to_nanos(1e-6 + 2e-6 * 12.5)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"tok": 812}, {"tok": 812.0}),
        ({"tok": 1.5, "other": 9}, {"tok": 1.5}),
        ({"tok": True}, {}),
        ({"tok": "812"}, {}),
        ({"tok": -1}, {}),
        ({"tok": math.nan}, {}),
        ({"tok": math.inf}, {}),
        ({"tok": 10**400}, {}),
        ({"tok": [1, 2]}, {}),
        ({}, {}),
    ],
)
def test_usage_from_keeps_only_finite_non_negative_numbers(
    attributes: dict[str, object], expected: dict[str, float]
) -> None:
    assert Price(per_unit={"tok": 1e-6}).usage_from(attributes) == expected


@pytest.mark.parametrize(
    ("duration_ms", "usage"),
    [(-1.0, {}), (math.nan, {}), (math.inf, {}), (1.0, {"tok": 1e300})],
)
def test_cost_out_of_range_is_a_pricing_error_not_a_number(
    duration_ms: float, usage: dict[str, float]
) -> None:
    price = Price(per_ms=1.0, per_unit={"tok": 1e10})
    with pytest.raises(PricingError, match="out of range"):
        price.cost_nanos(duration_ms, usage)


@settings(max_examples=500, deadline=None)
@given(
    per_request=st.one_of(
        st.floats(min_value=0, max_value=1e-2), st.sampled_from([0.0, 5e-10, 1.5e-9, 2.5e-9])
    ),
    per_ms=st.one_of(
        st.floats(min_value=0, max_value=1e-3), st.sampled_from([0.0, 5e-10, 1e-6, 2.1e-6])
    ),
    duration_ms=st.one_of(
        st.floats(min_value=0, max_value=1e7), st.sampled_from([0.0, 0.5, 1.5, 2.5, 1e-3])
    ),
)
def test_flat_nanos_is_cost_nanos(per_request: float, per_ms: float, duration_ms: float) -> None:
    """The per-span shortcut of a flat price agrees with cost_nanos to the nano-unit, half
    nano-units (the exact decimal decides) and amounts out of range (both raise) included."""
    price = Price(per_ms=per_ms, per_request=per_request)
    try:
        expected = price.cost_nanos(duration_ms, {})
    except PricingError:
        with pytest.raises(PricingError):
            price.flat_nanos(duration_ms)
    else:
        assert price.flat_nanos(duration_ms) == expected


def test_flat_nanos_leaves_half_nano_units_to_the_exact_sum() -> None:
    # 0.5 nano-units and 2.5 in float arithmetic: the exact decimal rounds half to even.
    assert Price(per_request=5e-10).flat_nanos(0.0) == Price(per_request=5e-10).cost_nanos(0, {})
    assert Price(per_ms=1e-9).flat_nanos(2.5) == Price(per_ms=1e-9).cost_nanos(2.5, {}) == 2
    with pytest.raises(PricingError, match="out of range"):
        Price(per_ms=1.0).flat_nanos(-1.0)


def test_largest_cost_is_one_a_record_can_carry() -> None:
    # Below 2**53 nano-units: CostRecord.from_json and schema 2 both accept it. The largest
    # float amount under that bound is 9007199.25474099; the next one is out of range.
    assert Price(per_request=9_007_199.25474099).cost_nanos(0.0, {}) == 2**53 - 2
    assert Price(per_ms=1e-6).flat_nanos(9_007_199_254_740.99) == 2**53 - 2
    for price, duration_ms in [
        (Price(per_request=9_007_199.254740993), 0.0),
        (Price(per_request=9_223_372_036.0), 0.0),  # the old bound (int64), garbage as a record
        (Price(per_ms=1e-6, per_request=1e-7), 9_007_199_254_740.893),  # 285 years: the fuzz test
    ]:
        with pytest.raises(PricingError, match="out of range"):
            price.flat_nanos(duration_ms)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"per_unit": [("tok", 1.0)]},
        {"per_ms": -1e-9},
        {"per_ms": math.nan},
        {"per_request": math.inf},
        {"per_ms": "0.1"},
        {"per_ms": True},
        {"per_unit": {"tok": -1.0}},
        {"per_unit": {"": 1.0}},
    ],
)
def test_price_rejects_invalid_components(kwargs: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Price(**kwargs)


def test_price_is_immutable_and_hashable() -> None:
    units = {"tok": 1e-6}
    price = Price(per_ms=1e-6, per_unit=units)
    units["tok"] = 5.0  # the caller's dict is copied
    assert price.per_unit == {"tok": 1e-6}
    with pytest.raises(TypeError):
        price.per_unit["tok"] = 2.0  # type: ignore[index]
    with pytest.raises(AttributeError):
        price.per_ms = 2.0  # type: ignore[misc]
    assert price == Price(per_ms=1e-6, per_unit={"tok": 1e-6})
    assert len({price, Price(per_ms=1e-6, per_unit={"tok": 1e-6})}) == 1
    assert Price(per_ms=-0.0).per_ms == 0.0
    assert repr(Price(per_ms=1.0)) == "Price(per_ms=1.0, per_request=0.0, per_unit={})"


# -- parsing and precedence --------------------------------------------------------------------

# Each entry's per_request identifies which key matched.
PRECEDENCE_DOC = {
    "version": "v1",
    "currency": "EUR",
    "region": "eu-west-1",
    "prices": {
        "pay:POST /api/v2/payments": {"per_request": 1},
        "pay:POST /api/*": {"per_request": 2},
        "pay:POST /api/v2/*": {"per_request": 3},
        "pay:*/refunds": {"per_request": 4},
        "pay:GET /api/*/orders/*": {"per_request": 5},
        "pay:GET /api/*/orders": {"per_request": 6},
        "pay:*": {"per_request": 7},
        "*:GET /health": {"per_request": 8},
        "*:GET /static/*": {"per_request": 9},
        "*:*": {"per_request": 10},
        "llm:*": {"per_unit": {"tok": 1e-6}, "per_request": 11},
        "pay:GET /users/*": {"per_request": 12},
    },
}


@pytest.mark.parametrize(
    ("service", "operation", "matched"),
    [
        ("pay", "POST /api/v2/payments", 1),  # exact beats every glob
        ("pay", "POST /api/v2/refunds", 3),  # 'POST /api/v2/' has more literal chars
        ("pay", "POST /api/v1/refunds", 2),  # 'POST /api/' (10) beats '/refunds' (8)
        ("pay", "DELETE /refunds", 4),
        ("pay", "GET /api/v2/orders/77", 5),
        ("pay", "GET /api/v2/orders", 6),
        ("pay", "GET /api/v2/orders/", 5),  # '*' matches the empty string
        ("pay", "GET /health", 7),  # service:* beats *:operation
        ("pay", "GET /users/*", 12),  # a normalised operation equal to a glob key
        ("pay", "GET /users/42", 12),
        ("pay", "", 7),
        ("cart", "GET /health", 8),
        ("cart", "GET /static/app.js", 9),
        ("cart", "POST /api/v2/payments", 10),
        ("llm", "chat", 11),
        ("PAY", "GET /health", 8),  # service names are case-sensitive
    ],
)
def test_match_precedence(service: str, operation: str, matched: int) -> None:
    resolved = PricingTable.parse(PRECEDENCE_DOC).resolve(service, operation)
    assert resolved.per_request == matched
    assert resolved.per_request == matched  # memo hit gives the same answer


def test_glob_order_does_not_depend_on_document_order() -> None:
    reversed_doc = dict(PRECEDENCE_DOC)
    reversed_doc["prices"] = dict(reversed(list(PRECEDENCE_DOC["prices"].items())))  # type: ignore[attr-defined]
    forward, backward = PricingTable.parse(PRECEDENCE_DOC), PricingTable.parse(reversed_doc)
    for op in ("POST /api/v2/x", "GET /api/a/orders/b", "x/refunds", "GET /api/x/refunds"):
        assert forward.resolve("pay", op) == backward.resolve("pay", op)


def test_equally_specific_globs_are_ordered_by_pattern_text() -> None:
    parsed = PricingTable.parse({"s:a*c": {"per_request": 1}, "s:*bc": {"per_request": 2}})
    # Both have 2 literal characters and one '*'; 'a*c' has the longer literal prefix.
    assert parsed.resolve("s", "abc").per_request == 1


def test_metadata_of_the_document_form() -> None:
    parsed = PricingTable.parse(PRECEDENCE_DOC)
    assert (parsed.version, parsed.currency, parsed.region, len(parsed)) == (
        "v1",
        "EUR",
        "eu-west-1",
        12,
    )
    assert "entries=12" in repr(parsed)


def test_flat_seed_form_with_cost_per_ms() -> None:
    parsed = PricingTable.parse({"svc:op": {"cost_per_ms": 0.0001}, "svc:*": {"per_ms": 1e-5}})
    assert parsed.resolve("svc", "op") == Price(per_ms=0.0001)
    assert (parsed.version, parsed.currency, parsed.region, len(parsed)) == (None, None, None, 2)


def test_no_match_raises_not_found_every_time() -> None:
    parsed = PricingTable.parse({"svc:op": None})
    for _ in range(2):  # the second call is answered from the memo
        with pytest.raises(PricingNotFoundError, match="'other'"):
            parsed.resolve("svc", "other")
    with pytest.raises(LookupError):
        parsed.resolve("svc2", "op")


def test_memo_is_bounded_and_stays_correct_when_evicting() -> None:
    parsed = PricingTable.parse(PRECEDENCE_DOC, memo_size=2)
    for _ in range(3):
        for op, matched in (("POST /api/v2/payments", 1), ("GET /health", 7), ("x", 7)):
            assert parsed.resolve("pay", op).per_request == matched


def test_runs_of_wildcards_count_as_one_and_are_duplicates() -> None:
    parsed = PricingTable.parse({"s:a**b": {"per_request": 1}})
    assert parsed.resolve("s", "a-b").per_request == 1
    with pytest.raises(PricingError, match=r"'s:a\*\*b': duplicates the entry 's:a\*b'"):
        PricingTable.parse({"s:a*b": None, "s:a**b": None})


def test_glob_matching_is_not_catastrophic() -> None:
    parsed = PricingTable.parse({"s:" + "a*" * 30 + "b": None, "*:*": {"per_ms": 1}})
    assert parsed.resolve("s", "a" * 20_000).per_ms == 1  # no match, found without backtracking


def test_constructor_builds_the_same_table_as_parse() -> None:
    built = PricingTable({"svc:op": Price(per_ms=1e-6), "*:*": None}, version="x")
    assert built.resolve("svc", "op") == Price(per_ms=1e-6)
    assert built.resolve("a", "b") == Price()
    with pytest.raises(TypeError):
        PricingTable({"svc:op": 0.1})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        PricingTable({"svc:op": None}, memo_size=0)


# -- free tier ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        None,
        {},
        {"per_ms": None},
        {"per_ms": None, "per_request": None, "per_unit": None},
        {"per_unit": {"tok": None}},
        {"cost_per_ms": None},
    ],
)
def test_null_means_free_never_nan(entry: object) -> None:
    price = PricingTable.parse({"prices": {"svc:op": entry}}).resolve("svc", "op")
    cost = price.cost_nanos(250.0, price.usage_from({"tok": 1000}))
    assert cost == 0
    assert all(
        math.isfinite(v) for v in (price.per_ms, price.per_request, *price.per_unit.values())
    )


def test_free_per_unit_attribute_is_still_reported_as_usage() -> None:
    price = PricingTable.parse({"svc:op": {"per_unit": {"tok": None}}}).resolve("svc", "op")
    assert price.usage_from({"tok": 7}) == {"tok": 7.0}


# -- bad input ---------------------------------------------------------------------------------

BAD_DOCUMENTS: list[tuple[object, str]] = [
    ([], "document: must be a JSON object"),
    ("svc:op", "document: must be a JSON object"),
    (None, "document: must be a JSON object"),
    ({}, "no entries"),
    ({"prices": {}}, "no entries"),
    ({"prices": []}, "prices: must be an object"),
    ({"prices": None}, "prices: must be an object"),
    ({"svc:op": {"per_ms": -0.1}}, "'svc:op'.per_ms: must be a finite number >= 0"),
    ({"prices": {"svc:op": {"per_ms": math.nan}}}, "prices['svc:op'].per_ms"),
    ({"svc:op": {"per_ms": math.inf}}, "'svc:op'.per_ms"),
    ({"svc:op": {"per_ms": -math.inf}}, "'svc:op'.per_ms"),
    ({"svc:op": {"per_ms": "0.1"}}, "'svc:op'.per_ms: must be a number >= 0 or null, got a string"),
    ({"svc:op": {"per_ms": True}}, "'svc:op'.per_ms: must be a number >= 0 or null, got a boolean"),
    ({"svc:op": {"per_ms": 10**400}}, "'svc:op'.per_ms: must be a finite number"),
    ({"svc:op": {"per_ms": [1]}}, "'svc:op'.per_ms: must be a number >= 0 or null, got an array"),
    (
        {"svc:op": {"per_ms": {"v": 1}}},
        "'svc:op'.per_ms: must be a number >= 0 or null, got an o",
    ),
    ({"svc:op": {"per_request": -1}}, "'svc:op'.per_request"),
    ({"svc:op": {"cost_per_ms": -1}}, "'svc:op'.cost_per_ms"),
    ({"svc:op": {"per_ms": 1, "cost_per_ms": 1}}, "'svc:op'.cost_per_ms: 'per_ms' is given too"),
    ({"svc:op": {"per_unit": {"tok": -1}}}, "'svc:op'.per_unit['tok']"),
    ({"svc:op": {"per_unit": {"tok": "1"}}}, "'svc:op'.per_unit['tok']"),
    ({"svc:op": {"per_unit": [1]}}, "'svc:op'.per_unit: must be an object"),
    ({"svc:op": {"per_unit": {"": 1}}}, "'svc:op'.per_unit: attribute names"),
    ({"svc:op": {"tier": {"free": True}}}, "'svc:op'.tier: unknown field"),
    ({"svc:op": {"per_gb": 0.1}}, "'svc:op'.per_gb: unknown field"),
    ({"svc:op": 0.1}, "'svc:op': an entry must be an object, an array of dated prices or null"),
    ({"svc:op": "free"}, "'svc:op': an entry must be an object, an array of dated prices or"),
    ({"svc:op": [0.1]}, "'svc:op'[0]: a dated price must be an object, got float"),
    ({"svcop": None}, "'svcop': key must be 'service:operation'"),
    ({":op": None}, "':op': key must be"),
    ({"svc:": None}, "'svc:': key must be"),
    ({"svc: op": None}, "'svc: op': operation has leading or trailing whitespace"),
    ({"svc :op": None}, "'svc :op': service has leading or trailing whitespace"),
    ({"pay*:op": None}, "'pay*:op': the service is either a name or '*'"),
    ({"version": "1", "svc:op": None}, "'version': key must be 'service:operation'"),
    ({"prices": {"svc:op": None}, "version": 3}, "version: must be a non-empty printable string"),
    ({"prices": {"svc:op": None}, "currency": ""}, "currency: must be a non-empty"),
    (
        {"prices": {"svc:op": None}, "currency": "usd"},
        "ISO 4217 code in upper case such as 'USD', got 'usd' (write 'USD')",
    ),
    (
        {"prices": {"svc:op": None}, "currency": "US$"},
        "ISO 4217 code in upper case such as 'USD', got 'US$'",
    ),
    ({"prices": {"svc:op": None}, "region": ["us"]}, "region: must be a non-empty"),
    ({"prices": {"svc:op": None}, "version": "a\nb"}, "version: must be a non-empty printable"),
    ({"prices": {"svc:op": None}, "generated": 5}, "'generated': unknown field"),
    ({"prices": {"svc:op": None, "x": None}}, "prices['x']: key must be"),
]


@pytest.mark.parametrize(("doc", "message"), BAD_DOCUMENTS)
def test_bad_documents_fail_whole_with_the_key_named(doc: object, message: str) -> None:
    with pytest.raises(PricingError) as caught:
        PricingTable.parse(doc)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_string_annotations_are_allowed() -> None:
    parsed = PricingTable.parse(
        {"prices": {"svc:op": {"per_ms": 1e-6, "note": "list price"}}, "source": "aws"}
    )
    assert parsed.resolve("svc", "op") == Price(per_ms=1e-6)


def test_long_keys_are_shortened_in_messages() -> None:
    with pytest.raises(PricingError) as caught:
        PricingTable.parse({"svc:" + "x" * 10_000: {"per_ms": -1}})
    assert len(str(caught.value)) < 300


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
# Documents shaped like pricing tables, so the property reaches the deeper validation rules.
KEYS = st.sampled_from(["svc:op", "svc:*", "*:*", "svc:GET /a/*", "a**:b", "bad", ": x", "s:"])
FIELDS = st.sampled_from(["per_ms", "cost_per_ms", "per_request", "per_unit", "note", "x"])
ENTRIES = st.none() | st.dictionaries(
    FIELDS, JSON_SCALARS | st.dictionaries(st.text(max_size=4), JSON_VALUES, max_size=3)
)
PRICE_MAPS = st.dictionaries(KEYS, ENTRIES | JSON_VALUES, max_size=5)
PRICING_LIKE = PRICE_MAPS | st.fixed_dictionaries(
    {"prices": PRICE_MAPS},
    optional={"version": JSON_SCALARS, "currency": JSON_SCALARS, "region": JSON_SCALARS},
)


@settings(max_examples=300, deadline=None)
@given(doc=JSON_VALUES | PRICING_LIKE)
def test_parse_raises_only_pricing_error_and_accepts_only_sane_prices(doc: object) -> None:
    try:
        parsed = PricingTable.parse(doc)
    except PricingError:
        return
    assert len(parsed) >= 1
    for service, operation in (("svc", "op"), ("svc", "GET /a/b"), ("zzz", "q")):
        try:
            price = parsed.resolve(service, operation)
        except PricingNotFoundError:
            continue
        for value in (price.per_ms, price.per_request, *price.per_unit.values()):
            assert math.isfinite(value)
            assert value >= 0


# -- PricingCache ------------------------------------------------------------------------------


def test_nothing_loaded_is_stale() -> None:
    cache = PricingCache({"svc:op": None})
    assert (cache.last_sync, cache.version, cache.currency, cache.region) == (None,) * 4
    with pytest.raises(PricingStaleError, match="no pricing table loaded"):
        cache.get_price("svc", "op")


def test_refresh_loads_the_table_and_metadata() -> None:
    clock = FakeClock(1_764_236_400.123)
    cache = PricingCache(PRECEDENCE_DOC, clock=clock)
    loaded = cache.refresh()
    assert cache.current() is loaded
    assert cache.get_price("pay", "GET /health").per_request == 7
    assert (cache.version, cache.currency, cache.region) == ("v1", "EUR", "eu-west-1")
    assert cache.last_sync == 1_764_236_400_123
    assert cache.stats()["refreshes_ok"] == 1
    assert cache.stats()["entries"] == 12


def test_ttl_staleness_with_injected_clock() -> None:
    clock = FakeClock()
    cache = PricingCache({"svc:op": {"per_ms": 1}}, ttl=900, refresh_interval=600, clock=clock)
    cache.refresh()
    clock.now += 900
    assert cache.get_price("svc", "op").per_ms == 1  # exactly ttl old is still fresh
    clock.now += 0.001
    with pytest.raises(PricingStaleError, match="stale"):
        cache.get_price("svc", "op")
    cache.refresh()
    assert cache.get_price("svc", "op").per_ms == 1


def test_failed_refresh_keeps_last_good_table_until_ttl() -> None:
    clock = FakeClock()
    good = table("good")
    source = ScriptedSource(
        good,
        PricingError("bad data"),
        RuntimeError("socket exploded"),
        "not a table",
    )
    cache = PricingCache(source, ttl=100, refresh_interval=50, clock=clock)
    cache.refresh()
    synced = cache.last_sync
    clock.now += 60
    with pytest.raises(PricingError, match="bad data"):
        cache.refresh()
    with pytest.raises(PricingError, match="RuntimeError: socket exploded") as wrapped:
        cache.refresh()
    assert isinstance(wrapped.value.__cause__, RuntimeError)
    with pytest.raises(PricingError, match="returned str, not a PricingTable"):
        cache.refresh()
    assert cache.current() is good
    assert cache.last_sync == synced
    stats = cache.stats()
    assert (stats["refreshes_ok"], stats["refreshes_failed"], stats["consecutive_failures"]) == (
        1,
        3,
        3,
    )
    assert "not a PricingTable" in str(stats["last_error"])
    clock.now += 40.001
    with pytest.raises(PricingStaleError, match="'good' is stale"):
        cache.current()


def test_refresh_to_the_same_table_counts_as_unchanged_and_renews_the_sync() -> None:
    clock = FakeClock()
    same = table("same")
    cache = PricingCache(same, ttl=10, refresh_interval=5, clock=clock)
    cache.refresh()
    clock.now += 8
    assert cache.refresh() is same
    clock.now += 8
    assert cache.current() is same
    assert cache.stats()["refreshes_unchanged"] == 1


@pytest.mark.parametrize(
    ("ttl", "interval"), [(600, 400.0), (900.0, 600.0), (0.3, 0.2), (1e9, 1e9 * 2 / 3)]
)
def test_refresh_interval_defaults_to_two_thirds_of_the_ttl(ttl: float, interval: float) -> None:
    cache = PricingCache({"*:*": None}, ttl=ttl)
    assert cache.refresh_interval == pytest.approx(interval)
    assert 0 < cache.refresh_interval < ttl


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": 600, "refresh_interval": 600}, "refresh_interval must be > 0 and < ttl"),
        ({"ttl": 60, "refresh_interval": 600}, "refresh_interval"),
        ({"refresh_interval": 0}, "refresh_interval"),
        ({"refresh_interval": math.nan}, "refresh_interval"),
        ({"ttl": 60, "refresh_interval": 60.0}, r"must be > 0 and < ttl \(60\), got 60.0"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": math.inf}, "ttl"),
        ({"ttl": math.nan}, "ttl"),
        ({"retry_initial": 0}, "retry_initial"),
    ],
)
def test_invalid_cache_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PricingCache({"svc:op": None}, **kwargs)


def test_unknown_source_type_is_rejected() -> None:
    with pytest.raises(TypeError, match="pricing source"):
        PricingCache(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only http and https"):
        PricingCache("ftp://example.com/prices.json")


def test_public_names_are_exported() -> None:
    assert otelcost.PricingCache is PricingCache
    assert otelcost.PricingTable is PricingTable
    assert otelcost.Price is Price
    assert isinstance(ScriptedSource(), otelcost.PricingSource)


@pytest.fixture
def cache_factory() -> Iterator[Callable[..., PricingCache]]:
    caches: list[PricingCache] = []

    def make(source: object, **kwargs: Any) -> PricingCache:
        cache = PricingCache(source, **kwargs)  # type: ignore[arg-type]
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        cache.stop()


def test_refresher_fetches_at_once_and_stops_promptly(
    cache_factory: Callable[..., PricingCache],
) -> None:
    source = ScriptedSource(table("v1"))
    cache = cache_factory(source, ttl=3600, refresh_interval=600)
    cache.start()
    cache.start()  # idempotent
    assert source.fetched.wait(10)
    wait_for(lambda: cache.version == "v1")
    started = time.monotonic()
    cache.stop()
    assert time.monotonic() - started < 2.0  # waiting 600 s for the next refresh is interrupted
    assert not cache.running
    assert source.calls == 1
    cache.start()  # restartable; a table is loaded, so the next fetch is 600 s away
    assert cache.running
    cache.stop()
    assert source.calls == 1


def test_refresher_refreshes_on_its_interval(cache_factory: Callable[..., PricingCache]) -> None:
    source = ScriptedSource(table("v1"), table("v2"))
    cache = cache_factory(source, ttl=60, refresh_interval=0.02)
    cache.start()
    wait_for(lambda: cache.version == "v2")
    wait_for(lambda: source.calls >= 4)


def test_refresher_keeps_the_table_retries_with_backoff_and_logs_once_per_streak(
    cache_factory: Callable[..., PricingCache], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    good = table("good")
    failure = PricingError("HTTP 500")
    source = ScriptedSource(good, failure, failure, failure, failure, table("new"))
    cache = cache_factory(source, ttl=120, refresh_interval=60, retry_initial=0.01, clock=clock)
    cache.refresh()
    clock.now += 61  # the first background refresh is due at once
    caplog.set_level(logging.INFO, logger="otelcost.pricing")
    cache.start()
    # Retries come after 0.01-0.08 s rather than the 60 s refresh interval.
    wait_for(lambda: source.calls >= 3)
    assert cache.current() is good
    wait_for(lambda: cache.version == "new")
    cache.stop()
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    warnings = [m for level, m in records if level == "WARNING"]
    assert len(warnings) == 1
    assert "HTTP 500" in warnings[0]
    assert [m for level, m in records if level == "ERROR"] == []  # never stale within ttl
    assert any("recovered after 4 failures" in m for level, m in records if level == "INFO")
    assert cache.stats()["refreshes_failed"] == 4


def test_refresher_logs_staleness_once(
    cache_factory: Callable[..., PricingCache], caplog: pytest.LogCaptureFixture
) -> None:
    source = ScriptedSource(PricingError("unreachable"))
    cache = cache_factory(source, ttl=60, refresh_interval=0.04, retry_initial=0.001)
    caplog.set_level(logging.INFO, logger="otelcost.pricing")
    cache.start()
    wait_for(lambda: source.calls >= 10)
    cache.stop()
    levels = [r.levelname for r in caplog.records]
    assert levels.count("WARNING") == 1
    assert levels.count("ERROR") == 1  # no table at all: stale from the first failure
    with pytest.raises(PricingStaleError, match="unreachable"):
        cache.current()


def test_readers_never_see_an_error_or_a_mixed_table_during_1000_refreshes() -> None:
    services = [f"svc{i}" for i in range(5)]

    def versioned(version: str, per_ms: float) -> PricingTable:
        prices: dict[str, object] = {f"{s}:op": {"per_ms": per_ms} for s in services}
        prices["*:*"] = {"per_ms": per_ms, "per_request": per_ms}
        prices["svc0:GET /*"] = {"per_ms": per_ms}
        return PricingTable.parse({"version": version, "prices": prices})

    expected = {"A": 1.0, "B": 2.0}
    docs = [versioned("A", 1.0), versioned("B", 2.0)]
    flip = iter(range(1_000_000))

    class Alternating:
        def fetch(self) -> PricingTable:
            # A fresh table each time, so readers also race the memo being rebuilt.
            old = docs[next(flip) % 2]
            return versioned(old.version or "", expected[old.version or ""])

    cache = PricingCache(Alternating())
    cache.refresh()
    done = threading.Event()
    errors: list[BaseException] = []
    observations = [0] * 8

    def reader(slot: int) -> None:
        try:
            while not done.is_set():
                snapshot = cache.current()
                want = expected[snapshot.version or ""]
                seen = {snapshot.resolve(s, "op").per_ms for s in services}
                seen.add(snapshot.resolve("other", "x").per_request)
                seen.add(snapshot.resolve("svc0", "GET /a").per_ms)
                assert seen == {want}, (snapshot.version, seen)
                assert cache.get_price("svc3", "op").per_ms in (1.0, 2.0)
                observations[slot] += 1
        except BaseException as exc:  # recorded and asserted in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(1000):
            cache.refresh()
    finally:
        done.set()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert all(count > 0 for count in observations)
    assert cache.stats()["refreshes_ok"] == 1001


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_refresher_restarts_in_a_forked_child(
    cache_factory: Callable[..., PricingCache],
) -> None:
    source = ScriptedSource(table("v1"))
    cache = cache_factory(source, ttl=60, refresh_interval=0.02)
    cache.start()
    assert source.fetched.wait(10)

    def child() -> str:  # the child's refresher runs on, and stops
        running = cache.running
        calls_at_fork = source.calls
        wait_for(lambda: source.calls >= calls_at_fork + 2, 10, "the child's refreshes")
        cache.stop()
        return f"{running} {cache.running}"

    assert in_forked_child(child) == "True False"
    assert cache.running


# The parser checks a plain entry once and builds its Price without Price's own checks; an
# entry it does not take as plain goes through Price(...): both must build the same Price.
_RATES = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=2**70),
    st.floats(min_value=0, allow_infinity=False, allow_nan=False),
)
_UNIT_NAMES = st.sampled_from(
    [
        "tokens",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.reasoning.output_tokens",
    ]
)


@given(
    per_ms=_RATES,
    per_request=_RATES,
    per_unit=st.one_of(st.none(), st.dictionaries(_UNIT_NAMES, _RATES, max_size=4)),
)
def test_a_parsed_entry_is_the_price_its_constructor_builds(
    per_ms: Any, per_request: Any, per_unit: Any
) -> None:
    entry = {"per_ms": per_ms, "per_request": per_request, "per_unit": per_unit, "note": "x"}
    parsed = PricingTable.parse({"a:b": entry}).resolve("a", "b")
    built = Price(per_ms=per_ms, per_request=per_request, per_unit=per_unit or {})
    assert parsed == built and hash(parsed) == hash(built) and repr(parsed) == repr(built)
    assert parsed._terms == built._terms and parsed._genai_keys == built._genai_keys
    assert type(parsed.per_unit) is type(built.per_unit)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"per_ms": 1e-6, "cost_per_ms": 1e-6}, "'per_ms' is given too; use only one"),
        ({"per_ms": float("nan")}, "must be a finite number >= 0, got nan"),
        ({"per_ms": -0.5}, "must be a finite number >= 0, got -0.5"),
        ({"per_request": True}, "must be a number >= 0 or null, got a boolean (true)"),
        ({"per_request": 10**400}, "must be a finite number, got an integer too large"),
        ({"per_unit": {"": 1.0}}, "attribute names must be non-empty strings: ''"),
        ({"per_unit": []}, "must be an object of attribute: price, got an array"),
        ({"from": "2027-01-01T00:00:00Z"}, "'from' belongs to a dated entry"),
        ({"note": 3}, "unknown field; only string annotations may be added, got int"),
        ({"catalog": "nope"}, "catalog: must be one of"),
    ],
)
def test_an_entry_the_fast_path_declines_raises_the_full_parsers_error(
    entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(PricingError, match=re.escape(message)) as caught:
        PricingTable.parse({"prices": {"a:b": entry}})
    assert str(caught.value).startswith("prices['a:b']")
