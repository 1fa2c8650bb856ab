"""The Coster's naming memo: a repeat span is a few dict lookups, and never a wrong name.

Spans are memoised on (resource, kind, name, attribute names) and then on the values of the
attributes the applicable naming rule reads; these tests hold the memo to
``derive_operation`` for spans that share attribute names but not values.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from otelcost.costing import coster as coster_module
from otelcost.costing.coster import Coster
from otelcost.costing.operation import (
    derive_operation,
    explain_operation,
    naming_keys,
    service_name,
)
from otelcost.pricing import PricingCache

_START = 1_764_236_400_000_000_000
_CHECKOUT = Resource.create({"service.name": "checkout"})
_NAMELESS = Resource.get_empty()


def _coster(limit: int = 1000) -> Coster:
    cache = PricingCache({"prices": {"*:*": {"per_ms": 1e-6, "per_request": 1e-7}}})
    cache.refresh()
    return Coster(
        cache, currency="USD", region=None, max_operations_per_service=limit, normalizer=None
    )


def _span(
    name: str,
    attributes: dict[str, Any],
    kind: SpanKind = SpanKind.SERVER,
    resource: Resource = _CHECKOUT,
) -> ReadableSpan:
    return ReadableSpan(
        name=name,
        context=SpanContext(1, 2, False, TraceFlags(TraceFlags.SAMPLED)),
        attributes=attributes,
        kind=kind,
        resource=resource,
        start_time=_START,
        end_time=_START + 2_000_000,
    )


# Few names and values, so that spans often share attribute names but not values.
_VALUES = st.sampled_from(
    ["", " ", "GET", "get", "POST", "/users/7", "/users/8", "/a", "redis", "SELECT 1", 7, None]
)
_NAMES = st.sampled_from(
    [
        "http.route",
        "http.request.method",
        "http.method",
        "url.path",
        "url.full",
        "http.target",
        "server.address",
        "db.system",
        "db.statement",
        "messaging.system",
        "rpc.method",
        "gen_ai.operation.name",
        "service.name",
        "http.response.status_code",
    ]
)
_SPANS = st.lists(
    st.tuples(
        st.sampled_from(["GET", "GET /users/{id}", "job 12"]),
        st.dictionaries(_NAMES, _VALUES, max_size=5).map(
            lambda attributes: {k: v for k, v in attributes.items() if v is not None}
        ),
        st.sampled_from([SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL]),
        st.sampled_from([_CHECKOUT, _NAMELESS]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spans=_SPANS)
def test_memo_hits_and_misses_name_every_span_as_derive_operation_does(
    spans: list[tuple[str, dict[str, Any], SpanKind, Resource]],
) -> None:
    coster = _coster()
    for _ in range(2):  # the second pass hits the memo for every span
        for name, attributes, kind, resource in spans:
            cost = coster.cost(_span(name, attributes, kind, resource), coster.snapshot())
            assert cost.operation == derive_operation(name, attributes, kind=kind)
            assert cost.service == service_name(resource.attributes, attributes)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The span names the Coster runs the complete naming rules for."""
    names: list[str] = []

    def counting(name: str, attributes: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
        names.append(name)
        return explain_operation(name, attributes, *args, **kwargs)

    monkeypatch.setattr(coster_module, "explain_operation", counting)
    return names


def test_a_routed_span_is_named_once_whatever_its_raw_path(calls: list[str]) -> None:
    coster = _coster()
    costs = [
        coster.cost(
            _span(
                "GET /users/{id}",
                {"http.route": "/users/{id}", "http.request.method": "GET", "url.path": path},
            )
        )
        for path in (f"/users/{i}" for i in range(50))
    ]
    assert {c.operation for c in costs} == {"GET /users/{id}"}
    assert len(calls) == 1
    assert all(c.named is costs[0].named for c in costs)


def test_a_blank_route_is_never_memoised_as_a_route() -> None:
    """A blank route falls back to the path: two such spans with other paths differ."""
    coster = _coster()
    for _ in range(2):
        a = coster.cost(_span("GET", {"http.route": "", "http.method": "GET", "url.path": "/a/1"}))
        b = coster.cost(_span("GET", {"http.route": "", "http.method": "GET", "url.path": "/b/1"}))
        assert (a.operation, b.operation) == ("GET /a/*", "GET /b/*")


def test_spans_without_a_route_share_the_named_of_their_operation() -> None:
    """A raw path misses the memo, but its operation's Named (and price binding) is found."""
    coster = _coster()
    costs = [
        coster.cost(_span("GET", {"http.request.method": "GET", "url.path": f"/users/{i}"}))
        for i in range(20)
    ]
    assert {c.operation for c in costs} == {"GET /users/*"}
    assert all(c.named is costs[0].named and c.binding is costs[0].binding for c in costs)


def test_spans_naming_their_own_service_keep_an_entry_per_service_and_operation() -> None:
    """A resource that names no service: each span's own service.name does, so the same
    operation under two services is two entries of the shape, keyed by both."""
    coster = _coster()
    nameless = Resource.create({})

    def attributes(service: str, i: int) -> dict[str, Any]:
        return {"http.request.method": "GET", "url.path": f"/users/{i}", "service.name": service}

    costs = {
        service: [
            coster.cost(_span("GET", attributes(service, i), resource=nameless)) for i in range(3)
        ]
        for service in ("checkout", "billing")
    }
    for service, each in costs.items():
        assert {(c.service, c.operation) for c in each} == {(service, "GET /users/*")}
        assert all(c.named is each[0].named for c in each)
    assert costs["checkout"][0].named is not costs["billing"][0].named
    (shape,) = coster._shapes.values()
    assert sorted(shape.by_path) == [("billing", "GET /users/*"), ("checkout", "GET /users/*")]


def test_spans_without_a_route_keep_one_entry_per_operation_not_per_raw_path(
    calls: list[str],
) -> None:
    """Each raw path is new, so its values miss the memo; the rules run once per
    operation, and nothing is kept per raw path (no memo churn, no garbage to collect)."""
    coster = _coster()
    for i in range(300):
        for kind, attributes in (
            (
                SpanKind.SERVER,
                {"http.method": "GET", "http.url": f"http://shop/users/{i}", "http.flavor": "1.1"},
            ),
            (SpanKind.SERVER, {"http.request.method": "POST", "url.path": f"/orders/{i}/items"}),
            (SpanKind.CLIENT, {"http.request.method": "GET", "url.full": f"http://api/v1/u/{i}"}),
        ):
            coster.named(_span("GET", attributes, kind), attributes)
    assert calls == []
    shapes = list(coster._shapes.values())
    assert len(shapes) == 3
    assert all(not shape.memo and not shape.by_name for shape in shapes)
    # Keyed by the operation alone: the resource names the service of every span.
    assert sorted(op for shape in shapes for op in shape.by_path) == [
        "GET /users/*",
        "GET api/v1/u/*",
        "POST /orders/*/items",
    ]
    # A path with nothing volatile repeats: its raw values are memoized too (a plain hit).
    health = {"http.request.method": "GET", "url.path": "/health"}
    coster.named(_span("GET", health), health)
    assert [len(shape.memo) for shape in shapes] == [0, 1, 0]
    # No usable path: the span name decides, through the complete rules.
    empty = {"http.method": "GET", "http.url": " ", "http.status_code": 200}
    assert coster.named(_span("GET /users/1", empty), empty).operation == "GET /users/*"
    assert calls == ["GET /users/1"]


def test_one_name_and_attribute_names_under_two_kinds_and_resources() -> None:
    coster = _coster()
    attributes = {"http.method": "GET", "http.url": "http://api.example.com/users/7"}
    setups = [
        (SpanKind.SERVER, _CHECKOUT, "checkout", "GET /users/*"),
        (SpanKind.CLIENT, _CHECKOUT, "checkout", "GET api.example.com/users/*"),
        (SpanKind.SERVER, Resource.create({"service.name": "billing"}), "billing", "GET /users/*"),
    ]
    for _ in range(3):
        for kind, resource, service, operation in setups:
            cost = coster.cost(_span("GET", attributes, kind, resource))
            assert (cost.service, cost.operation) == (service, operation)


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coster_module, "_MEMO_SIZE", 10)
    coster = _coster(limit=5)
    for i in range(100):
        cost = coster.cost(_span(f"job {i}", {f"attr{i}": 1}))
        assert cost.operation in ("job *", "OTHER")
        assert coster._memo_entries <= 10
        assert sum(len(shape.memo) + 1 for shape in coster._shapes.values()) <= 10


_DB = ("db.system", "db.statement")


@pytest.mark.parametrize(
    ("kind", "names", "keys"),
    [
        (SpanKind.SERVER, ("http.route", "url.path", "http.method"), ("http.route", "http.method")),
        (SpanKind.CLIENT, ("http.route", "url.full"), ("url.full",)),
        (SpanKind.SERVER, ("url.path", "http.response.status_code"), ("url.path",)),
        (SpanKind.INTERNAL, ("db.system", "db.statement", "url.path"), _DB),
        (SpanKind.INTERNAL, ("thread.id",), ()),
    ],
)
def test_naming_keys_are_what_the_rule_reads(
    kind: SpanKind, names: tuple[str, ...], keys: tuple[str, ...]
) -> None:
    assert naming_keys(kind, names) == keys


def test_spans_named_after_their_raw_path_share_one_shape() -> None:
    """Plain WSGI middleware names a span after its raw path ("GET /users/7"). The name is
    not what names these spans (the method and the normalized path are), so they share one
    shape whatever their names; spans that only their name can name are memoised by it."""
    coster = _coster()
    names = set()
    for i in range(200):
        attributes = {
            "http.method": "GET",
            "http.url": f"http://shop/users/{i}",
            "http.status_code": 200,
        }
        named = coster.named(_span(f"GET /users/{i}", attributes), attributes)
        names.add((named.service, named.operation))
    assert names == {("checkout", "GET /users/*")}
    assert len(coster._shapes) == 1
    (shape,) = coster._shapes.values()
    assert not shape.by_name
    for name in ("charge card 4242", "charge card 4243", "refund"):
        named = coster.named(_span(name, {}), {})
        again = coster.named(_span(name, {}), {})
        assert named is again
    assert {n.operation for n in coster._named_by.values()} >= {"charge card *", "refund"}
    (empty,) = [s for key, s in coster._shapes.items() if key == ()]
    assert set(empty.by_name) == {
        ("charge card 4242", 0),
        ("charge card 4243", 0),
        ("refund", 0),
    }
