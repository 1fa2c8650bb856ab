"""WSGI and ASGI middleware that answer 429 while a service is throttled by its budget.

The response has ``Retry-After`` (seconds left on the throttle flag) and a small JSON body
``{"error": "budget_exceeded", "service": ..., "retry_after": ...}``; the flag's reason
(spend and limits) is not sent to clients. Requests to exempt paths (health checks and
metrics by default, so a throttled service is not also restarted by its probes) always
pass. The wrapped app is called at most once per request, and only when not throttled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Generic, TypeVar

from otelcost import _json
from otelcost.budget.guard import BudgetGuard, Throttle

__all__ = ["DEFAULT_EXEMPT", "BudgetASGIMiddleware", "BudgetWSGIMiddleware"]

DEFAULT_EXEMPT = ("/health", "/healthz", "/livez", "/readyz", "/metrics")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Exempt:
    """Matches a path equal to an exempt path or below it (``/health`` covers ``/health/db``)."""

    def __init__(self, paths: Iterable[str]) -> None:
        self._exact = frozenset(p.rstrip("/") or "/" for p in paths)
        self._prefixes = tuple(p.rstrip("/") + "/" for p in self._exact if p != "/")

    def __call__(self, path: str) -> bool:
        return (path.rstrip("/") or "/") in self._exact or path.startswith(self._prefixes)


def _body(service: str, throttle: Throttle) -> tuple[bytes, list[tuple[str, str]]]:
    body = _json.dumps(
        {"error": "budget_exceeded", "service": service, "retry_after": throttle.retry_after}
    )
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Retry-After", str(throttle.retry_after)),
    ]
    return body, headers


_App = TypeVar("_App")
_Request = TypeVar("_Request", bound=MutableMapping[str, Any])


class _Guarded(Generic[_App, _Request]):
    """What both middlewares hold: the app, the guard, how to name the service, exemptions."""

    def __init__(
        self,
        app: _App,
        guard: BudgetGuard,
        service: str | Callable[[_Request], str],
        *,
        exempt: Iterable[str] = DEFAULT_EXEMPT,
    ) -> None:
        self.app = app
        self.guard = guard
        self._service = service
        self._exempt = _Exempt(exempt)

    def _service_of(self, request: _Request) -> str:
        return self._service if isinstance(self._service, str) else self._service(request)


class BudgetWSGIMiddleware(_Guarded[WSGIApp, dict[str, Any]]):
    """Wraps a WSGI app: 429 while ``service`` is throttled, else the app, called once.

    ``service`` is the service name, or a function of the WSGI environ returning it.
    """

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not self._exempt(environ.get("PATH_INFO", "") or "/"):
            service = self._service_of(environ)
            throttle = self.guard.throttle(service)
            if throttle is not None:
                body, headers = _body(service, throttle)
                start_response("429 Too Many Requests", headers)
                return [body]
        return self.app(environ, start_response)


class BudgetASGIMiddleware(_Guarded[ASGIApp, Scope]):
    """Wraps an ASGI app: 429 on HTTP requests while ``service`` is throttled.

    ``service`` is the service name, or a function of the ASGI scope returning it. Other
    scope types (lifespan, websocket) pass through. The flag read never blocks the loop.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "http" and not self._exempt(scope.get("path", "") or "/"):
            service = self._service_of(scope)
            throttle = await self.guard.throttle_async(service)
            if throttle is not None:
                body, headers = _body(service, throttle)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 429,
                        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
