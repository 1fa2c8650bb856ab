"""Spans from real third-party instrumentations, captured in a subprocess per convention.

The instrumentations read ``OTEL_SEMCONV_STABILITY_OPT_IN`` once per process (at their first
``instrument()``), so each convention runs in its own interpreter: ``capture(mode, ...)``
starts this file as a script with the variable set. The script serves Django, Flask and
FastAPI apps, calls a loopback HTTP server with requests and httpx, PostgreSQL with
psycopg, the test redis-server with redis-py and an in-process gRPC server, all
instrumented, with a TracerProvider holding an InMemorySpanExporter and the real
CostSpanProcessor; it prints the spans and the cost records as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODES = {
    "old": "",
    "stable": "http,database",
    "dup": "http/dup,database/dup",
}
"""Conventions to capture under: the name and the OTEL_SEMCONV_STABILITY_OPT_IN value."""

SERVICE = "shop"

HEALTH_PRICING = {
    "version": "instrumented-1",
    "prices": {"*:GET /health": {"per_request": 0.001}, "*:*": None},
}
"""What the script prices its spans with: the one documented health key, all else free."""


@dataclass(frozen=True)
class CapturedSpan:
    """One ended span as an instrumentation made it."""

    scope: str  # the instrumentation's module, e.g. "opentelemetry.instrumentation.flask"
    name: str
    kind: str  # SpanKind member name, e.g. "SERVER"
    attributes: Mapping[str, Any]


@dataclass(frozen=True)
class Capture:
    """What one run of the script produced."""

    spans: list[CapturedSpan]
    records: list[dict[str, Any]]  # CostRecord JSON objects
    http_port: int  # the loopback HTTP server requests and httpx called

    def by(self, scope: str, kind: str | None = None) -> list[CapturedSpan]:
        """Spans of instrumentation ``scope`` (a suffix such as ``"flask"``), of ``kind``."""
        return [
            span
            for span in self.spans
            if span.scope.rsplit(".", 1)[-1] == scope and (kind is None or span.kind == kind)
        ]


def capture(mode: str, *, redis_url: str, postgres_dsn: str) -> Capture:
    """Run the script under convention ``mode`` (a key of ``MODES``) and parse its output."""
    env = {**os.environ, "OTEL_SEMCONV_STABILITY_OPT_IN": MODES[mode]}
    env.pop("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", None)
    done = subprocess.run(
        [sys.executable, __file__, "--redis-url", redis_url, "--postgres-dsn", postgres_dsn],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"capture under {mode!r} failed:\n{done.stderr[-4000:]}")
    document = json.loads(done.stdout)
    return Capture(
        spans=[CapturedSpan(**span) for span in document["spans"]],
        records=document["records"],
        http_port=document["http_port"],
    )


# -- the script ------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _django() -> None:
    import django
    from django.conf import settings
    from django.http import HttpRequest, HttpResponse
    from django.test import Client
    from django.urls import path
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    def health(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    def user(request: HttpRequest, user_id: int) -> HttpResponse:
        return HttpResponse(str(user_id))

    module = sys.modules[__name__]
    module.urlpatterns = [  # type: ignore[attr-defined]
        path("health/", health),
        path("users/<int:user_id>/", user),
    ]
    settings.configure(
        ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], MIDDLEWARE=[], DEBUG=False, SECRET_KEY="x"
    )
    DjangoInstrumentor().instrument()
    django.setup()
    client = Client()
    client.get("/health/")
    client.get("/users/42/")
    # A 404 as Django's development server (wsgiref) hands it on: no REQUEST_URI, so the
    # old conventions give only http.url and the stable ones no path at all ...
    client.get("/nope/123/")
    # ... and as gunicorn, uWSGI or mod_wsgi do (the path in url.path / http.target).
    client.get("/missing/7/", REQUEST_URI="/missing/7/")


def _flask() -> None:
    from flask import Flask
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = Flask("flask_app")

    @app.route("/health")
    def health() -> str:
        return "ok"

    @app.route("/users/<int:user_id>")
    def user(user_id: int) -> str:
        return str(user_id)

    FlaskInstrumentor().instrument_app(app)
    client = app.test_client()
    client.get("/health")
    client.get("/users/42")


def _fastapi() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = FastAPI()

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.get("/users/{user_id}")
    def user(user_id: int) -> int:
        return user_id

    FastAPIInstrumentor.instrument_app(app)
    with TestClient(app) as client:
        client.get("/health")
        client.get("/users/42")


def _http_clients() -> int:
    import httpx
    import requests
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    RequestsInstrumentor().instrument()
    HTTPXClientInstrumentor().instrument()
    with _http_server() as base:
        requests.get(f"{base}/users/42?expand=orders", timeout=10)
        httpx.get(f"{base}/users/42?expand=orders", timeout=10)
        return int(base.rsplit(":", 1)[1])


def _psycopg(dsn: str) -> None:
    import psycopg
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    PsycopgInstrumentor().instrument()
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS naming_orders (id int, note text)")
        connection.execute("INSERT INTO naming_orders VALUES (%s, %s)", (42, "secret"))
        connection.execute("SELECT note FROM naming_orders WHERE id = %s", (42,)).fetchall()
        connection.execute("DROP TABLE naming_orders")


def _redis(url: str) -> None:
    import redis
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().instrument()
    client = redis.Redis.from_url(url)
    client.set("user:42", "secret")
    client.get("user:42")
    client.delete("user:42")
    client.close()


def _grpc() -> None:
    from concurrent import futures

    import grpc
    from opentelemetry.instrumentation.grpc import (
        GrpcInstrumentorClient,
        GrpcInstrumentorServer,
    )

    GrpcInstrumentorServer().instrument()
    GrpcInstrumentorClient().instrument()

    def say_hello(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"hello " + request

    handler = grpc.method_handlers_generic_handler(
        "helloworld.Greeter", {"SayHello": grpc.unary_unary_rpc_method_handler(say_hello)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/helloworld.Greeter/SayHello")
            call(b"world", timeout=10)
    finally:
        server.stop(None)


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--postgres-dsn", required=True)
    args = parser.parse_args()

    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otelcost import CostSpanProcessor
    from otelcost.exporters import InMemoryCostExporter

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    spans = InMemorySpanExporter()
    costs = InMemoryCostExporter()
    processor = CostSpanProcessor(HEALTH_PRICING, [costs])
    provider.add_span_processor(SimpleSpanProcessor(spans))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)

    _django()
    _flask()
    _fastapi()
    http_port = _http_clients()
    _psycopg(args.postgres_dsn)
    _redis(args.redis_url)
    _grpc()
    provider.shutdown()

    document = {
        "spans": [
            {
                "scope": span.instrumentation_scope.name if span.instrumentation_scope else "",
                "name": span.name,
                "kind": span.kind.name,
                "attributes": dict(span.attributes or {}),
            }
            for span in spans.get_finished_spans()
        ],
        "records": [json.loads(record.to_json()) for record in costs.records],
        "http_port": http_port,
    }
    json.dump(document, sys.stdout)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _main()
