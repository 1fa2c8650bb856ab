"""service_name, derive_operation and CardinalityGuard."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind

from otelcost.costing import normalize as normalize_module
from otelcost.costing import operation
from otelcost.costing.normalize import PathNormalizer
from otelcost.costing.operation import (
    DEFAULT_OPERATION,
    DEFAULT_SERVICE,
    MAX_OPERATION_CHARS,
    MAX_VALUE_CHARS,
    NAMING_ATTRIBUTES,
    OTHER,
    RULE_DATABASE,
    RULE_GENAI,
    RULE_HTTP_CLIENT,
    RULE_HTTP_SERVER,
    RULE_MESSAGING,
    RULE_RPC,
    RULE_SPAN_NAME,
    CardinalityGuard,
    derive_operation,
    explain_operation,
    service_name,
)

# -- service_name --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "attributes", "expected"),
    [
        ({"service.name": "payment-svc"}, {"service.name": "other"}, "payment-svc"),
        ({}, {"service.name": "payment-svc"}, "payment-svc"),
        ({"service.name": "unknown_service:python"}, {"service.name": "pay"}, "pay"),
        ({"service.name": "unknown_service"}, {"service.name": "pay"}, "pay"),
        ({"service.name": "unknown_service:python3.11"}, {}, DEFAULT_SERVICE),
        ({"service.name": 42}, {"service.name": b"pay"}, DEFAULT_SERVICE),
        ({"service.name": "  \t"}, {"service.name": "pay"}, "pay"),
        ({"service.name": " pay\x00ment\u202e "}, {}, "payment"),
        ({}, {}, DEFAULT_SERVICE),
    ],
)
def test_service_name(
    resource: Mapping[str, object], attributes: Mapping[str, object], expected: str
) -> None:
    assert service_name(resource, attributes) == expected


def test_service_name_is_capped() -> None:
    assert service_name({"service.name": "s" * 10_000}, {}) == "s" * MAX_VALUE_CHARS


# -- derive_operation: precedence ----------------------------------------------------------

ROUTE = {"http.request.method": "POST", "http.route": "/api/v2/payments/{id}"}
RPC = {"rpc.service": "helloworld.Greeter", "rpc.method": "SayHello"}
PATH = {"http.request.method": "GET", "url.path": "/api/v2/users/123/orders/456"}


@pytest.mark.parametrize(
    ("name", "attributes", "expected"),
    [
        ("ignored", {**PATH, **RPC, **ROUTE}, "POST /api/v2/payments/{id}"),
        ("ignored", {**RPC, **PATH}, "helloworld.Greeter/SayHello"),
        ("ignored", PATH, "GET /api/v2/users/*/orders/*"),
        ("GET /users/123", {}, "GET /users/*"),
        # Route: used as is (no normalization), method optional, old attribute names.
        ("x", {"http.method": "GET", "http.route": "/users/{id}/2024"}, "GET /users/{id}/2024"),
        ("x", {"http.route": "/users/:id"}, "/users/:id"),
        # Routes start with one "/" and end without one (Django: "health/", "^health/$").
        ("x", {"http.method": "GET", "http.route": "health/"}, "GET /health"),
        (
            "x",
            {"http.method": "GET", "http.route": "^api/(?P<id>[0-9]+)/$"},
            "GET /api/(?P<id>[0-9]+)",
        ),
        ("x", {"http.method": "GET", "http.route": "/"}, "GET /"),
        ("x", {"http.method": "GET", "http.route": ""}, "x"),
        # New method attribute wins over the old one; case and unknown methods.
        ("x", {"http.request.method": "PUT", "http.method": "GET", "http.route": "/a"}, "PUT /a"),
        ("x", {"http.request.method": "delete", "http.route": "/a"}, "DELETE /a"),
        ("x", {"http.request.method": "PROPFIND", "http.route": "/a"}, "_OTHER /a"),
        ("x", {"http.request.method": "_OTHER", "http.route": "/a"}, "_OTHER /a"),
        # RPC needs both halves.
        ("span", {"rpc.service": "svc"}, "span"),
        ("span", {"rpc.method": "M"}, "span"),
        # Path: url.path before http.target; the target's query string dropped.
        ("x", {"url.path": "/a/1", "http.target": "/b/2"}, "/a/*"),
        ("x", {"http.method": "GET", "http.target": "/b/2?token=abc"}, "GET /b/*"),
        # Then the path of http.url (Django 404s under its development server).
        ("GET", {"http.method": "GET", "http.url": "http://h/nope/12/?q=1"}, "GET /nope/*"),
        # RPC: the full name in rpc.method alone (newer conventions).
        ("span", {"rpc.method": "pkg.Svc/Call"}, "pkg.Svc/Call"),
        # Span names: path words and other words normalized, plain names kept.
        ("SELECT orders", {}, "SELECT orders"),
        ("HTTP GET", {"http.request.method": "GET"}, "HTTP GET"),
        ("GET /users/123?x=1", {}, "GET /users/*"),
        ("charge card 4242", {}, "charge card *"),
        ("redis GET user:123", {}, "redis GET user:*"),
        ("grpc.health.v1.Health/Check", {}, "grpc.health.v1.Health/Check"),
        ("", {}, DEFAULT_OPERATION),
        (" \x00\n ", {}, DEFAULT_OPERATION),
    ],
)
def test_derive_operation(name: str, attributes: Mapping[str, object], expected: str) -> None:
    assert derive_operation(name, attributes) == expected


def test_custom_normalizer_applies_to_paths_and_name_paths() -> None:
    normalize = PathNormalizer([(r"^/tenants/[^/]+", "/tenants/{tenant}")])
    attributes = {"http.request.method": "GET", "url.path": "/tenants/acme/users/7"}
    assert derive_operation("x", attributes, normalize) == "GET /tenants/{tenant}/users/*"
    assert derive_operation("GET /tenants/acme", {}, normalize) == "GET /tenants/{tenant}"


@pytest.mark.parametrize(
    "value",
    [b"/users/{id}", 42, 3.5, True, None, ["/a"], ("/a",), {"/a": 1}, object()],
    ids=lambda v: type(v).__name__,
)
def test_non_string_values_are_ignored(value: object) -> None:
    attributes = {
        "http.request.method": value,
        "http.method": value,
        "http.route": value,
        "rpc.service": value,
        "rpc.method": value,
        "url.path": value,
        "http.target": value,
    }
    assert derive_operation("fallback 7", attributes) == "fallback *"


def test_control_characters_and_surrogates_are_cleaned() -> None:
    attributes = {"http.request.method": "GET\r\n", "http.route": "/a\x1b[31m\tb\ud800\u202e"}
    assert derive_operation("x", attributes) == "GET /a[31m b\ufffd"


def test_huge_values_are_cut() -> None:
    route = "/r" * 50_000
    assert derive_operation("x", {"http.route": route}) == route[:MAX_OPERATION_CHARS]
    huge_name = "word " * 50_000
    assert len(derive_operation(huge_name, {})) <= MAX_OPERATION_CHARS


_HOSTILE_VALUE = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=200),
    st.text(max_size=5).map(lambda s: s * 3000),
    st.binary(max_size=50),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=5), max_size=3),
    st.tuples(st.integers()),
)
_KEYS = [*NAMING_ATTRIBUTES, "service.name"]


@settings(max_examples=300, deadline=None)
@given(
    st.text(st.characters(exclude_categories=()), max_size=300),
    st.dictionaries(st.sampled_from(_KEYS), _HOSTILE_VALUE),
    st.dictionaries(st.sampled_from(_KEYS), _HOSTILE_VALUE),
    st.sampled_from([None, *SpanKind]),
)
def test_hostile_input_never_raises(
    name: str,
    attributes: dict[str, object],
    resource: dict[str, object],
    kind: SpanKind | None,
) -> None:
    operation = derive_operation(name, attributes, kind=kind)
    assert explain_operation(name, attributes, kind=kind)[0] == operation
    assert derive_operation(name, attributes, kind=kind) == operation  # memo hit, same answer
    service = service_name(resource, attributes)
    for result, cap in ((operation, MAX_OPERATION_CHARS), (service, MAX_VALUE_CHARS)):
        assert 0 < len(result) <= cap
        result.encode("utf-8")  # no lone surrogates: always valid JSON / Kafka keys
        assert not any(c in result for c in "\x00\n\r\t\x1b\u202e")


# -- derive_operation: by what the span is ---------------------------------------------------

CLIENT, SERVER, PRODUCER = SpanKind.CLIENT, SpanKind.SERVER, SpanKind.PRODUCER
STABLE_CLIENT = {
    "http.request.method": "GET",
    "url.full": "https://api.example.com/users/42?token=s3cr3t",
    "server.address": "api.example.com",
    "server.port": 443,
}
OLD_CLIENT = {"http.method": "GET", "http.url": "https://api.example.com/users/42?token=s3cr3t"}


@pytest.mark.parametrize(
    ("kind", "attributes", "expected", "rule"),
    [
        # HTTP client: method + downstream host (+ port unless the default) + normalized path.
        (CLIENT, STABLE_CLIENT, "GET api.example.com/users/*", RULE_HTTP_CLIENT),
        (CLIENT, OLD_CLIENT, "GET api.example.com/users/*", RULE_HTTP_CLIENT),
        (CLIENT, {**OLD_CLIENT, **STABLE_CLIENT}, "GET api.example.com/users/*", RULE_HTTP_CLIENT),
        (
            CLIENT,
            {"http.method": "POST", "http.url": "http://user:pw@Billing.internal:8080/v2/charges"},
            "POST billing.internal:8080/v2/charges",
            RULE_HTTP_CLIENT,
        ),
        (CLIENT, {"http.method": "GET", "http.url": "http://h:80/"}, "GET h/", RULE_HTTP_CLIENT),
        (
            CLIENT,
            {"http.method": "GET", "http.url": "https://h:80/"},
            "GET h:80/",
            RULE_HTTP_CLIENT,
        ),
        (
            CLIENT,
            {"http.method": "GET", "net.peer.name": "h", "net.peer.port": 443, "http.target": "/a"},
            "GET h/a",
            RULE_HTTP_CLIENT,
        ),
        (
            CLIENT,
            {"http.method": "GET", "url.full": "http://[::1]:9000/x"},
            "GET [::1]:9000/x",
            RULE_HTTP_CLIENT,
        ),
        (
            CLIENT,
            {"http.method": "GET", "url.full": "http://shard-17.db.internal/x"},
            "GET shard-*.db.internal/x",
            RULE_HTTP_CLIENT,
        ),
        (CLIENT, {"http.method": "GET", "server.address": "h"}, "GET h", RULE_HTTP_CLIENT),
        # A client span without any host falls back to its name.
        (CLIENT, {"http.method": "GET"}, "GET", RULE_SPAN_NAME),
        # The same attributes on a server span: the path, never the host.
        (SERVER, OLD_CLIENT, "GET /users/*", RULE_HTTP_SERVER),
        (None, {"http.method": "GET", "url.path": "/a/1"}, "GET /a/*", RULE_HTTP_SERVER),
        # Without a kind, the stable client attribute url.full marks an outbound call.
        (None, STABLE_CLIENT, "GET api.example.com/users/*", RULE_HTTP_CLIENT),
        (None, OLD_CLIENT, "GET /users/*", RULE_HTTP_SERVER),
        # Database and cache: system, operation, collection/table; never values.
        (
            CLIENT,
            {"db.system": "postgresql", "db.statement": "SELECT * FROM orders WHERE id = 42"},
            "postgresql SELECT orders",
            RULE_DATABASE,
        ),
        (
            CLIENT,
            {"db.system.name": "postgresql", "db.query.text": 'update "Public"."Orders" set a=1'},
            "postgresql UPDATE Public.Orders",
            RULE_DATABASE,
        ),
        (
            CLIENT,
            {
                "db.system.name": "mongodb",
                "db.operation.name": "find",
                "db.collection.name": "users",
                "db.query.text": "{ssn: 123}",
            },
            "mongodb find users",
            RULE_DATABASE,
        ),
        (
            CLIENT,
            {"db.system": "mysql", "db.operation": "SELECT", "db.sql.table": "t"},
            "mysql SELECT t",
            RULE_DATABASE,
        ),
        (
            CLIENT,
            {"db.system": "postgresql", "db.statement": "SELECT 'FROM ssn' AS x FROM t"},
            "postgresql SELECT t",
            RULE_DATABASE,
        ),
        (
            CLIENT,
            {"db.system": "postgresql", "db.statement": "SELECT * FROM " + "t" * 100},
            "postgresql SELECT",
            RULE_DATABASE,
        ),
        (
            CLIENT,
            {"db.system": "postgresql", "db.statement": "delete from orders_2026_11 where x"},
            "postgresql DELETE orders_*_*",
            RULE_DATABASE,
        ),
        (CLIENT, {"db.system": "redis", "db.statement": "GET user:42"}, "redis GET", RULE_DATABASE),
        (
            CLIENT,
            {"db.system.name": "redis", "db.operation.name": "HGETALL", "db.query.text": "x y"},
            "redis HGETALL",
            RULE_DATABASE,
        ),
        (CLIENT, {"db.system": "redis", "db.statement": "42 x"}, "redis", RULE_DATABASE),
        (CLIENT, {"db.system": "sqlite"}, "sqlite", RULE_DATABASE),
        # Messaging: system, operation, destination (temporary ones folded).
        (
            PRODUCER,
            {
                "messaging.system": "kafka",
                "messaging.operation.name": "send",
                "messaging.destination.name": "orders",
            },
            "kafka send orders",
            RULE_MESSAGING,
        ),
        (
            PRODUCER,
            {
                "messaging.system": "rabbitmq",
                "messaging.operation": "publish",
                "messaging.destination": "amq.gen-JzTY20BRgKO",
                "messaging.destination.temporary": True,
            },
            "rabbitmq publish (temporary)",
            RULE_MESSAGING,
        ),
        # RPC and GenAI (the model verbatim: a point-release model stays its own operation).
        (CLIENT, RPC, "helloworld.Greeter/SayHello", RULE_RPC),
        (
            CLIENT,
            {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-5.6-luna"},
            "chat gpt-5.6-luna",
            RULE_GENAI,
        ),
        (CLIENT, {"gen_ai.operation.name": "embeddings"}, "embeddings", RULE_GENAI),
    ],
)
def test_derive_operation_by_kind(
    kind: SpanKind | None, attributes: Mapping[str, object], expected: str, rule: str
) -> None:
    assert explain_operation("GET", attributes, kind=kind) == (expected, rule)
    assert derive_operation("GET", attributes, kind=kind) == expected


def test_two_kinds_of_work_never_share_a_name() -> None:
    outbound = derive_operation("GET", OLD_CLIENT, kind=CLIENT)
    served = derive_operation("GET", {"http.method": "GET", "http.route": "/users/{id}"})
    cached = derive_operation("GET", {"db.system": "redis", "db.statement": "GET ?"}, kind=CLIENT)
    model = derive_operation("chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})
    assert len({outbound, served, cached, model}) == 4
    assert derive_operation(
        "chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-5.6-luna"}
    ) != derive_operation(
        "chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-5.6"}
    )


def test_only_naming_attributes_matter() -> None:
    noisy = {**STABLE_CLIENT, "http.response.status_code": 200, "user_agent.original": "curl"}
    reduced = {k: v for k, v in noisy.items() if k in NAMING_ATTRIBUTES}
    assert derive_operation("GET", noisy, kind=CLIENT) == derive_operation(
        "GET", reduced, kind=CLIENT
    )
    assert set(STABLE_CLIENT) | set(OLD_CLIENT) <= set(NAMING_ATTRIBUTES)


def test_a_repeat_is_a_memo_hit() -> None:
    calls: list[str] = []

    def counting(path: str) -> str:
        calls.append(path)
        return path

    attributes = {"http.method": "GET", "http.url": "http://h/users/7"}
    for _ in range(3):
        assert derive_operation("GET", attributes, counting, kind=CLIENT) == "GET h/users/7"
        assert derive_operation("GET /a/7", {}, counting) == "GET /a/7"
    assert calls == ["/users/7", "/a/7"]
    # Unhashable values (possible in hand-made dicts) are computed, not cached, by the
    # same rules: a route still wins.
    assert derive_operation("x", {"db.system": "redis", "db.statement": ["GET"]}) == "redis"
    route_first = {"http.route": "/a", "http.method": ["GET"], "gen_ai.operation.name": "chat"}
    assert derive_operation("x", route_first) == "/a"


# -- the path rule: Python and compiled ---------------------------------------------------

_PATH_KEYS = ("url.path", "http.target", "url.full", "http.url")
_SEGMENTS = st.one_of(
    st.sampled_from(
        [
            "users",
            "v2",
            "42",
            "0007",
            "550e8400-e29b-41d4-a716-446655440000",
            "a@b.com",
            "Jos%C3%A9",
            "%2F",
            "%EA%AF",
            "caf%e9",
            "a%",
            "deadbeef12",
            "user123",
            "v1.2",
            "x" * 70,
            "1" * 70,
            "a1" * 40,
            "José",
            "a b",
            "\x00",
            "",
        ]
    ),
    st.text(st.characters(codec="ascii"), max_size=12),
    st.text(max_size=6),
)
_PATHS = st.builds(
    lambda prefix, segments, suffix: prefix + "/".join(segments) + suffix,
    st.sampled_from(
        [
            *("/", "", "//", " /", "http://h:8080/", "HTTPS://a.b", "x://", "mailto:x/"),
            # At most 31 scheme characters, the first a letter.
            *("a" * 31 + "://h/", "a" * 32 + "://h/", "1a://h/"),
        ]
    ),
    st.lists(_SEGMENTS, max_size=6),
    st.sampled_from(["", "/", " ", "?q=1/2", "#f/3", "?a#b", "?"]),
)
_PATH_VALUES = st.one_of(
    _PATHS, st.sampled_from(["", " ", "/" + "ab/" * 400, "/" + "7/" * 900, 7, None])
)
_NORMALIZERS = {
    "default": PathNormalizer(),
    "no memo": PathNormalizer(cache_size=0),
    "user rules": PathNormalizer(rules=[(r"/tenants/[^/]+", "/tenants/{tenant}")]),
    "not a PathNormalizer": str.lower,
}


@pytest.mark.skipif(operation._speedups is None, reason="the extension was not built")
@settings(max_examples=400, deadline=None)
@given(
    keys=st.lists(st.sampled_from(_PATH_KEYS), min_size=1, max_size=4, unique=True),
    values=st.lists(_PATH_VALUES, min_size=4, max_size=4),
    method_key=st.sampled_from(["http.request.method", "http.method", "http.method", None]),
    # Half the examples in the compiled rule's common case (a method, no user rules).
    method=st.one_of(st.just("GET"), st.sampled_from(["POST", "get", "BREW", "", 3, None])),
    normalizer=st.one_of(st.just("default"), st.sampled_from(sorted(_NORMALIZERS))),
    exact_dict=st.booleans(),
)
def test_the_compiled_server_rule_names_as_the_python_rule(
    *,
    keys: list[str],
    values: list[object],
    method_key: str | None,
    method: object,
    normalizer: str,
    exact_dict: bool,
) -> None:
    """Spans a raw path names (a server span without a route): the compiled rule gives what
    the Python rule gives, whether it takes the value or hands it to the Python rule."""
    attributes: dict[str, object] = {
        key: value for key, value in zip(keys, values, strict=False) if value is not None
    }
    names = list(attributes)
    if method_key is not None:
        names.append(method_key)
        if method is not None:
            attributes[method_key] = method
    python = operation.path_rule(SpanKind.SERVER, names, compiled=False)
    compiled = operation.path_rule(SpanKind.SERVER, names, compiled=True)
    if python is None:  # no raw path key left: no rule either way
        assert compiled is None
        return
    assert isinstance(compiled, operation._speedups.ServerRule)
    given_attributes: Mapping[str, object] = (
        attributes if exact_dict else MappingProxyType(attributes)
    )
    normalize = _NORMALIZERS[normalizer]
    assert compiled(given_attributes, normalize) == python(given_attributes, normalize)


@pytest.mark.skipif(operation._speedups is None, reason="the extension was not built")
@settings(max_examples=500, deadline=None)
@given(path=_PATHS, key=st.sampled_from(_PATH_KEYS))
def test_the_compiled_server_rule_normalizes_as_python(path: str, key: str) -> None:
    """The compiled rule's own case, only the path varying."""
    names = ("http.method", key)
    python = operation.path_rule(SpanKind.SERVER, names, compiled=False)
    compiled = operation.path_rule(SpanKind.SERVER, names, compiled=True)
    assert python is not None and compiled is not None
    attributes = {"http.method": "GET", key: path}
    normalize = _NORMALIZERS["default"]
    assert compiled(attributes, normalize) == python(attributes, normalize)


@pytest.mark.skipif(operation._speedups is None, reason="the extension was not built")
def test_the_compiled_server_rule_takes_common_paths_itself() -> None:
    """The e2e bench's paths never reach the Python rule (its fallback)."""
    names = ["http.method", "http.url", "http.target"]
    rule = operation.path_rule(SpanKind.SERVER, names, compiled=True)
    assert isinstance(rule, operation._speedups.ServerRule)
    fallback_calls: list[object] = []
    python = operation.path_rule(SpanKind.SERVER, names, compiled=False)
    assert python is not None

    def fallback(attributes: Mapping[str, object], normalize: object) -> str | None:
        fallback_calls.append(attributes)
        return python(attributes, normalize)  # type: ignore[arg-type]

    watched = operation._speedups.ServerRule(
        fallback,
        ("http.target", "http.url"),
        "http.method",
        operation._HTTP_METHODS,
        PathNormalizer,
        normalize_module._cached_segment,
        MAX_VALUE_CHARS,
        MAX_OPERATION_CHARS,
        normalize_module._MAX_CACHED_SEGMENT,
    )
    normalize = PathNormalizer()
    cases = {
        "http://127.0.0.1/users/42": "GET /users/*",
        "/users/42?expand=1#x": "GET /users/*",
        "/api/v2/users/42/orders/550e8400-e29b-41d4-a716-446655440000": (
            "GET /api/v2/users/*/orders/*"
        ),
        "//health/": "GET /health",
        "https://shop.example:8443": "GET /",
    }
    for path, expected in cases.items():
        attributes = {"http.method": "GET", "http.url": path}
        assert watched(attributes, normalize) == expected == rule(attributes, normalize)
    assert fallback_calls == []
    # Outside the common case: the Python rule decides.
    odd = {"http.method": "GET", "http.url": " /users/José/1 "}
    assert watched(odd, normalize) == "GET /users/José/*"
    assert fallback_calls == [odd]


# -- CardinalityGuard ----------------------------------------------------------------------


def test_guard_folds_beyond_the_limit_and_counts() -> None:
    guard = CardinalityGuard(limit=3)
    assert [guard.admit("svc", f"op{i}") for i in range(5)] == ["op0", "op1", "op2", OTHER, OTHER]
    assert guard.admit("svc", "op1") == "op1"  # known operations stay admitted
    assert guard.admit("svc", "op4") == OTHER
    assert guard.admit("other", "op9") == "op9"  # the limit is per service
    assert guard.folded == 3
    assert guard.folded_by_service() == {"svc": 3}


def test_guard_bounds_the_number_of_services() -> None:
    guard = CardinalityGuard(limit=10, max_services=2)
    assert guard.admit("a", "x") == "x"
    assert guard.admit("b", "x") == "x"
    assert guard.admit("c", "x") == OTHER
    assert guard.admit("d", "y") == OTHER
    assert guard.admit("a", "z") == "z"
    assert guard.folded == 2
    assert guard.folded_by_service() == {OTHER: 2}


def test_guard_with_zero_limit_folds_everything() -> None:
    guard = CardinalityGuard(limit=0)
    assert guard.admit("svc", "op") == OTHER
    assert guard.folded == 1


def test_guard_rejects_negative_bounds() -> None:
    with pytest.raises(ValueError, match="limit"):
        CardinalityGuard(limit=-1)
    with pytest.raises(ValueError, match="max_services"):
        CardinalityGuard(max_services=-1)


def test_folded_by_service_is_a_copy() -> None:
    guard = CardinalityGuard(limit=0)
    guard.admit("svc", "op")
    guard.folded_by_service()["svc"] = 100
    assert guard.folded_by_service() == {"svc": 1}


def test_guard_is_thread_safe() -> None:
    limit, services, calls = 20, ("a", "b"), 5000
    guard = CardinalityGuard(limit=limit)
    start = threading.Barrier(8)
    results: list[list[tuple[str, str, str]]] = [[] for _ in range(8)]

    def work(index: int) -> None:
        out = results[index]
        start.wait()
        for i in range(calls):
            service = services[i % 2]
            operation = f"op{(i * 7 + index * 13) % 60}"
            out.append((service, operation, guard.admit(service, operation)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    flat = [r for chunk in results for r in chunk]
    for service in services:
        admitted = {op for svc, op, got in flat if svc == service and got != OTHER}
        assert len(admitted) == limit
        # Once admitted, an operation is never folded, whichever thread asks.
        assert all(got == op for svc, op, got in flat if svc == service and op in admitted)
    folded = sum(got == OTHER for _, _, got in flat)
    assert folded == guard.folded
    assert sum(guard.folded_by_service().values()) == folded
    assert all(got in (op, OTHER) for _, op, got in flat)
