"""A Flask app with OpenTelemetry's Flask instrumentation, priced by otelcost.

    python examples/flask_app.py                        # serve on 127.0.0.1:8000
    python examples/flask_app.py --port 0 --requests 5  # any free port, exit after 5 requests

The Flask instrumentation sets ``http.route`` (``/users/<int:user_id>``), which otelcost
uses as the operation as is: route templates are already low-cardinality, so
``prices.json`` prices ``shop:GET /users/<int:user_id>`` directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flask import Flask
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from werkzeug.serving import make_server

import otelcost
from otelcost.exporters import ConsoleCostExporter

PRICES = Path(__file__).with_name("prices.json")

app = Flask(__name__)


@app.get("/users/<int:user_id>")
def get_user(user_id: int) -> dict[str, int]:
    return {"user": user_id}


@app.post("/orders")
def create_order() -> tuple[dict[str, str], int]:
    return {"order": "created"}, 201


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--requests", type=int, default=0, help="exit after N requests")
    args = parser.parse_args()
    os.environ.setdefault("OTEL_SERVICE_NAME", "shop")

    otelcost.install(PRICES, exporters=[ConsoleCostExporter()])  # <- the one line

    FlaskInstrumentor().instrument_app(app)
    server = make_server(args.host, args.port, app)
    print(f"listening on http://{args.host}:{server.server_port}", file=sys.stderr, flush=True)
    if args.requests:
        for _ in range(args.requests):
            server.handle_request()
    else:
        server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
