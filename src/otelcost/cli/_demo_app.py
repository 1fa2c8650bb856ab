"""The demo's workload: three instrumented services on loopback and the clients driving them.

- ``storefront``: a WSGI app served by wsgiref (one thread per request), instrumented with
  ``opentelemetry-instrumentation-wsgi``. Product pages set ``http.route`` as a framework
  would; search has no route, so it is priced by its normalized ``url.path``; product pages
  ask ``recommendations`` for suggestions; the cart is read from a cache (a Redis ``GET``
  span); checkout writes the order to an SQLite database (a database span) and calls
  ``payments`` over HTTP (a client span, trace context propagated); an admin export has no
  price (unpriced spans). The cache, database and client spans carry the attributes the
  redis-py, DB-API and requests instrumentations set, so they are named the same way:
  ``redis GET``, ``sqlite INSERT orders``, ``POST 127.0.0.1:<port>/charge``.
- ``payments``: a second WSGI server with its own TracerProvider and resource.
- ``recommendations``: a GenAI client span per call to ``gpt-4o``, priced from the
  genai-prices catalog when it is installed (the ``llm`` extra), else per token.

Each service has its own TracerProvider (``service.name`` resource), all feeding one
CostSpanProcessor. Without ``opentelemetry-instrumentation-wsgi`` installed, a minimal
built-in WSGI tracer with the same span attributes is used instead.

Given a BudgetGuard, both WSGI services sit behind ``BudgetWSGIMiddleware``, in front of
their instrumentation: a request refused with 429 does no work, so it makes no span and
costs nothing. Refusals are counted per service (``rejected``): the clients count the
storefront's, the storefront counts the payment service's (its checkout then fails with
502). A client refused with 429 waits ``REJECTED_BACKOFF`` seconds before its next request,
as a polite client honouring ``Retry-After`` would rather than retrying at once.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind, Tracer

from otelcost.budget import BudgetGuard, BudgetWSGIMiddleware

__all__ = ["GUARDED", "REJECTED_BACKOFF", "SERVICES", "Workload"]

SERVICES = ("storefront", "payments", "recommendations")
LLM_MODEL = "gpt-4o"
"""The model the recommendations service calls (priced from the genai-prices catalog)."""
GUARDED = ("storefront", "payments")  # the services with an HTTP server (and a budget guard)
REJECTED_BACKOFF = 0.05  # seconds a client waits after a 429

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

# One client's request cycle: 20 requests in the proportions of a small shop.
_CYCLE = (
    [("GET", "/products/{}")] * 8
    + [("GET", "/cart")] * 4
    + [("POST", "/checkout")] * 2
    + [("GET", "/search?q={}")] * 3
    + [("GET", "/health")] * 2
    + [("GET", "/admin/export/{}")]
)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    # server_close() joins the request threads, so every span has ended once close() returns
    daemon_threads = False
    block_on_close = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connection resets from clients stopping mid-request are expected here."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on the terminal the demo draws on."""


class _Server:
    def __init__(self, app: WSGIApp) -> None:
        self.httpd = make_server(
            "127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otelcost-demo-server",
            daemon=True,
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class _BasicWSGITracing:
    """A SERVER span per request with the HTTP semantic-convention attributes the pricing
    uses; only for when opentelemetry-instrumentation-wsgi is not installed."""

    def __init__(self, app: WSGIApp, tracer: Tracer) -> None:
        self._app = app
        self._tracer = tracer

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        carrier = {"traceparent": environ.get("HTTP_TRACEPARENT", "")}
        attributes = {
            "http.request.method": method,
            "url.path": environ.get("PATH_INFO", "/"),
            "url.scheme": environ.get("wsgi.url_scheme", "http"),
            "server.address": environ.get("SERVER_NAME", ""),
        }
        with self._tracer.start_as_current_span(
            method, context=propagate.extract(carrier), kind=SpanKind.SERVER, attributes=attributes
        ) as span:

            def traced_start(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
                span.set_attribute("http.response.status_code", int(status.split(" ", 1)[0]))
                return start_response(status, headers, *rest)

            return list(self._app(environ, traced_start))


def instrument(app: WSGIApp, provider: TracerProvider) -> tuple[WSGIApp, bool]:
    """``app`` traced for ``provider``; True when the OpenTelemetry WSGI instrumentation is used."""
    try:
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
    except ImportError:
        return _BasicWSGITracing(app, provider.get_tracer("otelcost.demo")), False
    return OpenTelemetryMiddleware(app, tracer_provider=provider), True


def _respond(start_response: StartResponse, status: str = "200 OK") -> list[bytes]:
    start_response(status, [("Content-Type", "application/json")])
    return [b'{"ok": true}']


class Workload:
    """The three services, started on free loopback ports; ``run`` drives them.

    With a ``guard``, the WSGI services answer 429 while their budget throttles them.
    """

    def __init__(
        self, processor: SpanProcessor, *, guard: BudgetGuard | None = None, seed: int = 7
    ) -> None:
        self.providers: dict[str, TracerProvider] = {}
        for service in SERVICES:
            provider = TracerProvider(
                resource=Resource.create(
                    {"service.name": service, "deployment.environment": "demo"}
                ),
                shutdown_on_exit=False,
            )
            provider.add_span_processor(processor)
            self.providers[service] = provider
        self._llm = self.providers["recommendations"].get_tracer("otelcost.demo.llm")
        self._calls = self.providers["storefront"].get_tracer("otelcost.demo.storefront")
        self._cart_cache: dict[str, str] = {}
        self._orders = sqlite3.connect(":memory:", check_same_thread=False)
        self._orders.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        self._orders_lock = threading.Lock()
        self._seed = seed
        self.requests = 0
        self.failures = 0
        self.rejected: dict[str, int] = dict.fromkeys(GUARDED if guard is not None else (), 0)
        self._count_lock = threading.Lock()
        payments_app, real = instrument(self._payments, self.providers["payments"])
        storefront_app, _ = instrument(self._storefront, self.providers["storefront"])
        self.instrumented = real
        if guard is not None:
            payments_app = BudgetWSGIMiddleware(payments_app, guard, "payments")
            storefront_app = BudgetWSGIMiddleware(storefront_app, guard, "storefront")
        self._payments_server = _Server(payments_app)
        self._storefront_server = _Server(storefront_app)

    # -- the services ---------------------------------------------------------------------

    def _storefront(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path.startswith("/products/"):
            trace.get_current_span().set_attribute("http.route", "/products/{product_id}")
            time.sleep(random.uniform(0.002, 0.010))
            if random.random() < 0.5:
                self._recommend()
        elif path == "/cart":
            trace.get_current_span().set_attribute("http.route", "/cart")
            self._read_cart()
            time.sleep(random.uniform(0.001, 0.005))
        elif path == "/checkout":
            trace.get_current_span().set_attribute("http.route", "/checkout")
            time.sleep(random.uniform(0.003, 0.008))
            self._save_order()
            if not self._charge():
                return _respond(start_response, "502 Bad Gateway")
        elif path == "/search":
            time.sleep(random.uniform(0.003, 0.012))
        elif path.startswith("/admin/export/"):
            time.sleep(random.uniform(0.001, 0.003))
        elif path != "/health":
            return _respond(start_response, "404 Not Found")
        return _respond(start_response)

    def _payments(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/charge":
            return _respond(start_response, "404 Not Found")
        trace.get_current_span().set_attribute("http.route", "/charge")
        time.sleep(random.uniform(0.004, 0.015))
        return _respond(start_response)

    def _read_cart(self) -> None:
        # An in-process stand-in for a Redis cache, traced as redis-py's instrumentation does.
        with self._calls.start_as_current_span(
            "GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis", "db.statement": "GET ?"}
        ):
            self._cart_cache.get(f"cart:{random.randint(1, 5000)}")

    def _save_order(self) -> None:
        statement = "INSERT INTO orders (total) VALUES (?)"
        # Traced as the DB-API instrumentation does: the statement's verb is the span name.
        with (
            self._calls.start_as_current_span(
                "INSERT",
                kind=SpanKind.CLIENT,
                attributes={"db.system": "sqlite", "db.statement": statement},
            ),
            self._orders_lock,
        ):
            self._orders.execute(statement, (round(random.uniform(5, 500), 2),))

    def _charge(self) -> bool:
        url = self._payments_server.url + "/charge"
        host, port = self._payments_server.httpd.server_address[:2]
        # Traced as the requests/httpx instrumentations do (stable HTTP conventions).
        with self._calls.start_as_current_span(
            "POST",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "POST",
                "url.full": url,
                "server.address": str(host),
                "server.port": int(port),
            },
        ) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)  # payments' span joins the checkout's trace
            request = urllib.request.Request(url, data=b"{}", headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    response.read()
                    span.set_attribute("http.response.status_code", response.status)
            except urllib.error.HTTPError as exc:
                span.set_attribute("http.response.status_code", exc.code)
                if exc.code == 429:
                    self._count_rejected("payments")
                return False
            except OSError:
                return False
        return True

    def _count_rejected(self, service: str) -> None:
        with self._count_lock:
            self.rejected[service] += 1

    def _recommend(self) -> None:
        input_tokens, output_tokens = random.randint(200, 1500), random.randint(20, 400)
        with self._llm.start_as_current_span(
            f"chat {LLM_MODEL}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": LLM_MODEL,
            },
        ) as span:
            time.sleep(0.001 + output_tokens * 0.00002)  # "generation" time grows with output
            # As the API answers: a dated model id, and part of the prompt served from cache.
            span.set_attribute("gen_ai.response.model", f"{LLM_MODEL}-2024-08-06")
            span.set_attribute("gen_ai.response.id", f"chatcmpl-demo-{uuid.uuid4().hex}")
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", input_tokens // 4)
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)

    # -- the clients ------------------------------------------------------------------------

    def _requests(self, client: int) -> Iterator[tuple[str, str]]:
        rng = random.Random(self._seed * 1000 + client)
        cycle = list(_CYCLE)
        while True:
            rng.shuffle(cycle)
            for method, template in cycle:
                yield method, template.format(rng.randint(1, 5000))

    def _client(self, client: int, stop: threading.Event) -> None:
        base = self._storefront_server.url
        for method, path in self._requests(client):
            if stop.is_set():
                return
            request = urllib.request.Request(
                base + path, data=b"{}" if method == "POST" else None, method=method
            )
            rejected = False
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    response.read()
                ok = True
            except urllib.error.HTTPError as exc:
                ok = exc.code < 500
                rejected = exc.code == 429
            except OSError:
                ok = False
            with self._count_lock:
                self.requests += 1
                self.failures += not ok
                if rejected:
                    self.rejected["storefront"] += 1
            if rejected:
                stop.wait(REJECTED_BACKOFF)

    def run(
        self, clients: int, until: Callable[[], bool], tick: Callable[[], None], interval: float
    ) -> None:
        """Drive the storefront from ``clients`` threads until ``until()``, calling ``tick``
        every ``interval`` seconds on this thread."""
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=self._client, args=(n, stop), name=f"otelcost-demo-client-{n}", daemon=True
            )
            for n in range(clients)
        ]
        for thread in threads:
            thread.start()
        try:
            while not until():
                tick()
                time.sleep(interval)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
            tick()

    def close(self) -> None:
        self._storefront_server.close()
        self._payments_server.close()
        self._orders.close()
