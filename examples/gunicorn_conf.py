"""gunicorn configuration that installs otelcost in each worker (``post_fork``).

    gunicorn -c examples/gunicorn_conf.py --chdir examples wsgi_app:application

Why ``post_fork``: otelcost runs background threads (the pricing refresher, the pipeline
workers) and may hold network clients (Kafka, Redis), none of which survive ``fork()``.
Installing in each worker after the fork gives every worker its own; installing in the
master (for example with ``preload_app``) would price nothing there and leave the workers
to rebuild it all after the fork. ``worker_exit`` flushes what a worker still holds when it
stops (restart, scale-down, SIGTERM), so no record is lost at shutdown.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
graceful_timeout = 10

PRICES = Path(__file__).with_name("prices.json")


def post_fork(server: Any, worker: Any) -> None:
    import otelcost
    from otelcost.exporters import ConsoleCostExporter

    os.environ.setdefault("OTEL_SERVICE_NAME", "shop")
    otelcost.install(PRICES, exporters=[ConsoleCostExporter()])  # <- the one line
    server.log.info("otelcost installed in worker %s", worker.pid)


def worker_exit(server: Any, worker: Any) -> None:
    from opentelemetry import trace

    # Shuts down the CostSpanProcessor with the provider: flushes records within its timeout.
    shutdown = getattr(trace.get_tracer_provider(), "shutdown", None)
    if shutdown is not None:
        shutdown()
