"""A checkout service whose requests make a Redis call, a database call and an outbound
HTTP call, each named by what it is and priced by a key that names it.

    python examples/checkout_app.py --redis-url redis://127.0.0.1:6379/0 \\
        --postgres-dsn "dbname=shop" --payments-url https://payments.example.com
    python examples/checkout_app.py --port 0 --requests 2 --redis-url ... --postgres-dsn ...

``POST /checkout/<cart_id>`` reads the cart from Redis (redis-py), writes the order to
PostgreSQL (psycopg) and asks the payment service to charge it (requests), all with
OpenTelemetry's instrumentations. Without ``--payments-url`` a stand-in payment service
runs in this process on a free loopback port. ``prices.json`` prices them by what they are:

- ``shop:POST /checkout/<cart_id>``: the request itself (the Flask route);
- ``shop:redis GET``: every cache read;
- ``shop:postgresql INSERT orders``: every order written;
- ``shop:POST */v1/charges``: every call to the payment service, whatever its host.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import redis
import requests
from flask import Flask
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from werkzeug.serving import make_server

import otelcost
from otelcost.exporters import ConsoleCostExporter

PRICES = Path(__file__).with_name("prices.json")


class _PaymentsStandIn(BaseHTTPRequestHandler):
    """Answers ``POST /v1/charges`` like a payment API would."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"status": "succeeded"}'
        self.send_response(201 if self.path == "/v1/charges" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def payments_stand_in() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PaymentsStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def create_app(cache: redis.Redis, dsn: str, payments_url: str) -> Flask:
    app = Flask(__name__)

    @app.post("/checkout/<cart_id>")
    def checkout(cart_id: str) -> tuple[dict[str, object], int]:
        total = float(cache.get(f"cart:{cart_id}") or 0)
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute("INSERT INTO orders (cart_id, total) VALUES (%s, %s)", (cart_id, total))
        charge = requests.post(
            f"{payments_url}/v1/charges", json={"amount": total, "cart": cart_id}, timeout=10
        )
        return {"cart": cart_id, "total": total, "payment": charge.json()["status"]}, 201

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--requests", type=int, default=0, help="exit after N requests")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres-dsn", default=os.environ.get("DATABASE_URL", "dbname=shop"))
    parser.add_argument("--payments-url", help="default: a stand-in on a free loopback port")
    args = parser.parse_args()
    os.environ.setdefault("OTEL_SERVICE_NAME", "shop")

    otelcost.install(PRICES, exporters=[ConsoleCostExporter()])  # <- the one line

    # Setup first, so that only the requests' own calls are traced and priced.
    with psycopg.connect(args.postgres_dsn, autocommit=True) as db:
        db.execute("CREATE TABLE IF NOT EXISTS orders (cart_id text, total double precision)")
    cache = redis.Redis.from_url(args.redis_url)
    cache.set("cart:42", json.dumps(19.99))  # a cart to check out
    RedisInstrumentor().instrument()
    PsycopgInstrumentor().instrument()
    RequestsInstrumentor().instrument()

    with payments_stand_in() as stand_in:
        app = create_app(cache, args.postgres_dsn, args.payments_url or stand_in)
        FlaskInstrumentor().instrument_app(app)
        server = make_server(args.host, args.port, app)
        print(f"listening on http://{args.host}:{server.server_port}", file=sys.stderr, flush=True)
        if args.requests:
            for _ in range(args.requests):
                server.handle_request()
        else:
            server.serve_forever()
        server.server_close()
    cache.close()


if __name__ == "__main__":
    main()
