"""A plain WSGI app (stdlib wsgiref) with OpenTelemetry's WSGI middleware, priced by otelcost.

    python examples/wsgi_app.py                  # serve on 127.0.0.1:8000 until Ctrl-C
    python examples/wsgi_app.py --port 0 --requests 5   # any free port, exit after 5 requests

Each request's span is priced when it ends; the CostRecords are printed as JSON lines
(ConsoleCostExporter) when they are exported, at the latest when the process exits.
Without a route template the operation is the method plus the normalized path, so
``GET /users/42`` and ``GET /users/7`` are both ``GET /users/*``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

import otelcost
from otelcost.exporters import ConsoleCostExporter

PRICES = Path(__file__).with_name("prices.json")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    if path == "/health":
        status, body = "200 OK", {"status": "ok"}
    elif method == "GET" and path.startswith("/users/"):
        status, body = "200 OK", {"user": path.rsplit("/", 1)[-1]}
    elif method == "POST" and path == "/orders":
        status, body = "201 Created", {"order": "created"}
    else:
        status, body = "404 Not Found", {"error": "not found"}
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


# What servers such as gunicorn import (``wsgi_app:application``).
application = OpenTelemetryMiddleware(app)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # keep stdout for the records
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--requests", type=int, default=0, help="exit after N requests")
    args = parser.parse_args()
    os.environ.setdefault("OTEL_SERVICE_NAME", "shop")

    otelcost.install(PRICES, exporters=[ConsoleCostExporter()])  # <- the one line

    server = make_server(args.host, args.port, application, handler_class=_QuietHandler)
    print(f"listening on http://{args.host}:{server.server_port}", file=sys.stderr, flush=True)
    with server:
        if args.requests:
            for _ in range(args.requests):
                server.handle_request()
        else:
            server.serve_forever()


if __name__ == "__main__":
    main()
