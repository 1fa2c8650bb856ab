"""Operations derived from spans that real instrumentations make, old and stable conventions.

Each convention runs in its own interpreter (``_instrumented.capture``): Django, Flask and
FastAPI servers, requests and httpx calls, psycopg against the test database, redis-py
against the private redis-server and an in-process gRPC server, all through the real
CostSpanProcessor.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from _instrumented import HEALTH_PRICING, MODES, SERVICE, Capture, capture
from opentelemetry.trace import SpanKind

from otelcost.costing.operation import derive_operation
from otelcost.pricing import PricingTable

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=list(MODES))
def captured(request: pytest.FixtureRequest, redis_server: object, postgres_dsn: str) -> Capture:
    url = redis_server.url  # type: ignore[attr-defined]
    return capture(request.param, redis_url=url, postgres_dsn=postgres_dsn)


def _operations(capture: Capture, scope: str, kind: str | None = None) -> list[str]:
    return [
        derive_operation(span.name, span.attributes, kind=SpanKind[span.kind])
        for span in capture.by(scope, kind)
    ]


def test_http_servers_name_the_route_with_a_leading_slash(
    captured: Capture, request: pytest.FixtureRequest
) -> None:
    stable = request.node.callspec.params["captured"] == "stable"
    assert _operations(captured, "django") == [
        "GET /health",
        "GET /users/<int:user_id>",
        # Without REQUEST_URI the stable conventions carry no path: the method alone.
        "GET" if stable else "GET /nope/*",
        "GET /missing/*",
    ]
    assert _operations(captured, "flask") == ["GET /health", "GET /users/<int:user_id>"]
    assert _operations(captured, "fastapi", "SERVER") == ["GET /health", "GET /users/{user_id}"]
    # The ASGI "http send" spans inside a request stay apart from the request itself.
    assert set(_operations(captured, "fastapi", "INTERNAL")) == {
        "GET /health http send",
        "GET /users/{user_id} http send",
    }


def test_http_clients_name_the_downstream(captured: Capture) -> None:
    expected = f"GET 127.0.0.1:{captured.http_port}/users/*"
    assert _operations(captured, "requests") == [expected]
    assert _operations(captured, "httpx") == [expected]


def test_database_and_cache_calls_name_system_operation_and_table(captured: Capture) -> None:
    assert _operations(captured, "psycopg") == [
        "postgresql CREATE",
        "postgresql INSERT naming_orders",
        "postgresql SELECT naming_orders",
        "postgresql DROP",
    ]
    assert _operations(captured, "redis") == ["redis SET", "redis GET", "redis DEL"]
    for span in captured.by("psycopg") + captured.by("redis"):
        operation = derive_operation(span.name, span.attributes, kind=SpanKind[span.kind])
        assert "secret" not in operation and "42" not in operation  # never values


def test_grpc_names_service_and_method(captured: Capture) -> None:
    assert _operations(captured, "grpc") == ["helloworld.Greeter/SayHello"] * 2


def test_a_get_is_never_just_get(captured: Capture) -> None:
    """The issue's case: outbound GETs, Redis GETs and server GETs in one service."""
    gets = {
        derive_operation(span.name, span.attributes, kind=SpanKind[span.kind])
        for span in captured.spans
        if "GET" in span.name and span.kind in ("SERVER", "CLIENT")
    }
    assert {"GET /health", f"GET 127.0.0.1:{captured.http_port}/users/*", "redis GET"} <= gets


def test_one_key_prices_the_health_route_of_django_flask_and_fastapi(captured: Capture) -> None:
    table = PricingTable.parse(HEALTH_PRICING)
    for scope in ("django", "flask", "fastapi"):
        health = [
            span
            for span in captured.by(scope, "SERVER")
            if span.attributes.get("http.route") in ("health/", "/health")
        ]
        assert len(health) == 1, scope
        operation = derive_operation(health[0].name, health[0].attributes, kind=SpanKind.SERVER)
        match = table.match(SERVICE, operation)
        assert match is not None and match.key == "*:GET /health", scope
    # Through the real processor: the three health requests, each charged by that key and
    # saying so on the span; nothing else is charged.
    for scope in ("django", "flask", "fastapi"):
        (health,) = [
            span for span in captured.by(scope, "SERVER")
            if span.attributes["cost.operation"] == "GET /health"
        ]  # fmt: skip
        assert health.attributes["cost.price_key"] == "*:GET /health"
        assert health.attributes["cost.amount"] == 0.001
    charged = Counter(
        (record["operation"], record["cost_amount"])
        for record in captured.records
        if record["cost_amount"]
    )
    assert charged == {("GET /health", 0.001): 3}


def test_the_processor_names_every_span_as_derive_operation_does(captured: Capture) -> None:
    for span in captured.spans:
        expected = derive_operation(span.name, span.attributes, kind=SpanKind[span.kind])
        assert span.attributes["cost.operation"] == expected, span
    # Nested spans no key names are not billable: no amount on the ASGI "http send" spans.
    for span in captured.by("fastapi", "INTERNAL"):
        assert "cost.amount" not in span.attributes


_DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
_SCOPES = {"django": "django", "flask": "flask", "fastapi": "fastapi", "requests": "requests",
           "httpx": "httpx", "psycopg": "psycopg", "redis-py": "redis", "grpc": "grpc"}  # fmt: skip


def _documented_rows() -> list[tuple[str, str, str, str, str]]:
    """(scope, conventions, kind, span name, operation) of the docs' instrumentation table."""
    text = _DOCS.read_text(encoding="utf-8")
    header = "| Instrumentation | Conventions | Span: kind, name, attributes read | Operation |"
    lines = text[text.index(header) :].split("\n\n", 1)[0].splitlines()[2:]
    rows = []
    for line in lines:
        instrumentation, conventions, span, operation = (
            cell.strip() for cell in line.strip("|").split("|")
        )
        kind, name = re.match(r"([A-Z]+) `([^`]*)`", span).groups()  # type: ignore[union-attr]
        rows.append(
            (_SCOPES[instrumentation.lower()], conventions, kind, name, operation.strip("`"))
        )
    return rows


def test_the_docs_table_is_what_the_instrumentations_produce(
    captured: Capture, request: pytest.FixtureRequest
) -> None:
    mode = request.node.callspec.params["captured"]
    rows = [row for row in _documented_rows() if row[1] in (mode, "both")]
    assert len(rows) >= 12 or mode == "dup"
    for scope, _, kind, name, operation in rows:
        derived = {
            derive_operation(span.name, span.attributes, kind=SpanKind[span.kind])
            for span in captured.by(scope, kind)
            if span.name == name
        }
        expected = operation.replace("<port>", str(captured.http_port))
        assert expected in derived, (scope, kind, name, derived)
