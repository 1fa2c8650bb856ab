"""WSGI and ASGI middleware: 429 with Retry-After while throttled, traffic again after release.

The throttle comes from a real RedisBudgetStore evaluation on an injected clock; the guard
reads the flag from the same redis-server with no caching (``max_staleness=0``).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
import redis
from _budget_support import MINUTE, UNIT, Clock

from otelcost.budget import (
    Budget,
    BudgetASGIMiddleware,
    BudgetGuard,
    BudgetWSGIMiddleware,
    RedisBudgetStore,
)


class WSGIApp:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        self.calls += 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"paid"]


def _get(app: Callable[..., Iterable[bytes]], path: str) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


@pytest.fixture
def throttling(redis_client: redis.Redis) -> tuple[RedisBudgetStore, Clock, BudgetGuard]:
    clock = Clock()
    store = RedisBudgetStore(
        redis_client, [Budget("checkout", 10, "1h", consecutive=10_000)], clock=clock
    )
    return store, clock, BudgetGuard(redis_client, max_staleness=0)


def test_wsgi_429_then_release(
    throttling: tuple[RedisBudgetStore, Clock, BudgetGuard], redis_client: redis.Redis
) -> None:
    store, clock, guard = throttling
    app = WSGIApp()
    wrapped = BudgetWSGIMiddleware(app, guard, "checkout")
    assert _get(wrapped, "/pay")[0] == "200 OK"
    store.apply("checkout", 10 * UNIT)  # hard cap
    status, headers, body = _get(wrapped, "/pay")
    assert status == "429 Too Many Requests"
    retry_after = int(headers["Retry-After"])
    left = math.ceil(redis_client.pttl("enforce:throttle:{checkout}") / 1000)
    assert retry_after - 1 <= left <= retry_after  # read a moment after the guard's read
    assert 3590 <= retry_after <= 3600
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "error": "budget_exceeded",
        "service": "checkout",
        "retry_after": retry_after,
    }
    assert _get(wrapped, "/healthz")[0] == "200 OK"  # probes are exempt
    assert _get(wrapped, "/metrics/")[0] == "200 OK"
    assert app.calls == 3  # the throttled request never reached the app
    clock.advance(60 * MINUTE)
    assert not store.apply("checkout", 0).throttled  # the spend left the rolling hour
    assert _get(wrapped, "/pay") == ("200 OK", {"Content-Type": "text/plain"}, b"paid")
    assert app.calls == 4


def test_wsgi_app_errors_propagate_and_the_app_runs_once(
    throttling: tuple[RedisBudgetStore, Clock, BudgetGuard],
) -> None:
    _, _, guard = throttling
    calls = []

    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        calls.append(1)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _get(BudgetWSGIMiddleware(broken, guard, "checkout"), "/pay")
    assert calls == [1]


def test_service_from_the_request_and_custom_exemptions(
    throttling: tuple[RedisBudgetStore, Clock, BudgetGuard],
) -> None:
    store, _, guard = throttling
    store.apply("checkout", 10 * UNIT)
    wrapped = BudgetWSGIMiddleware(
        WSGIApp(), guard, lambda environ: environ["PATH_INFO"].split("/")[1], exempt=["/other"]
    )
    assert _get(wrapped, "/checkout/pay")[0].startswith("429")
    assert _get(wrapped, "/search/q")[0] == "200 OK"
    assert _get(wrapped, "/healthz")[0] == "200 OK"  # not throttled: service "healthz"


async def _asgi_get(app: Any, path: str, scope_type: str = "http") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": scope_type, "path": path, "method": "GET", "headers": []}, receive, send)
    return sent


def test_asgi_429_then_release(throttling: tuple[RedisBudgetStore, Clock, BudgetGuard]) -> None:
    store, clock, guard = throttling
    calls = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"paid"})

    wrapped = BudgetASGIMiddleware(app, guard, "checkout")
    store.apply("checkout", 10 * UNIT)
    start, body = asyncio.run(_asgi_get(wrapped, "/pay"))
    assert start["status"] == 429
    headers = dict(start["headers"])
    assert 3590 <= int(headers[b"retry-after"]) <= 3600
    assert json.loads(body["body"])["error"] == "budget_exceeded"
    assert calls == []
    asyncio.run(_asgi_get(wrapped, "/", scope_type="lifespan"))  # non-HTTP scopes pass
    assert calls == ["lifespan"]
    clock.advance(60 * MINUTE)
    store.apply("checkout", 0)
    start, body = asyncio.run(_asgi_get(wrapped, "/pay"))
    assert (start["status"], body["body"]) == (200, b"paid")
    assert calls == ["lifespan", "http"]
