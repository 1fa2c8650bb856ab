"""A gunicorn-style pre-fork server for the fork fault test (run as a script).

The master calls ``otelcost.install()`` (Redis and Kafka exporters), ends a few spans of its
own that are still queued when it forks, binds one listening socket and forks ``workers``
processes that serve an instrumented WSGI app on it. A worker that dies is replaced, like
gunicorn's arbiter does. SIGTERM to the master stops the workers gracefully (each shuts its
tracer provider down, which flushes otelcost) and then the master itself.

Every process appends ``<span id> <nano-units>`` to ``<dir>/<pid>.spans`` for each span it
priced (unbuffered, so a SIGKILL loses no line already written), and a process that stops
gracefully writes its counters to ``<dir>/<pid>.json``. ``<dir>/master.json`` holds the
port and the current worker PIDs.

    python _prefork.py '{"dir": ..., "redis_url": ..., "bootstrap": ..., "topic": ...,
                         "workers": 2, "prefork_spans": 50}'
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _stack import BUDGETS, PRICING, SERVICE
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

import otelcost
from _wsgi import App
from otelcost.exporters import KafkaCostExporter, RedisBudgetExporter
from otelcost.money import to_nanos


class SpanLedger(SpanExporter):
    """Appends every enriched span's id and cost to this process's own file."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._fd: int | None = None
        self._pid = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._pid != os.getpid():  # a forked child writes its own file
            self._pid = os.getpid()
            path = self._directory / f"{self._pid}.spans"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        assert self._fd is not None
        lines = []
        for span in spans:
            amount = (span.attributes or {}).get("cost.amount")
            if isinstance(amount, float) and span.context is not None:
                lines.append(f"{span.context.span_id:016x} {to_nanos(amount)}\n")
        os.write(self._fd, "".join(lines).encode())
        return SpanExportResult.SUCCESS


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _serve(sock: socket.socket, provider: TracerProvider, exporters: dict[str, Any]) -> None:
    """A worker: serve until SIGTERM, then shut the provider down and write the counters."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = WSGIServer(sock.getsockname(), _Quiet, bind_and_activate=False)
    server.socket.close()
    server.socket = sock  # the master's listening socket, shared by every worker
    server.server_name, server.server_port = sock.getsockname()[:2]
    server.setup_environ()
    server.set_app(OpenTelemetryMiddleware(App(), tracer_provider=provider))
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        processor = exporters["processor"]
        provider.shutdown()
        counters = {
            "processor": processor.stats(),
            "kafka": dict(exporters["kafka"].stats()),
            "redis": dict(exporters["redis"].stats()),
        }
        _write_json(exporters["dir"] / f"{os.getpid()}.json", counters)


def main(config: dict[str, Any]) -> None:
    directory = Path(config["dir"])
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    kafka = KafkaCostExporter(config["bootstrap"], config["topic"])
    redis_exporter = RedisBudgetExporter(config["redis_url"], BUDGETS)
    processor = otelcost.install(
        PRICING,
        exporters=[kafka, redis_exporter],
        tracer_provider=provider,
        span_processors=[SimpleSpanProcessor(SpanLedger(directory))],
    )
    exporters = {"kafka": kafka, "redis": redis_exporter, "processor": processor, "dir": directory}
    tracer = provider.get_tracer("prefork")
    for i in range(config["prefork_spans"]):  # still queued at fork time
        with tracer.start_as_current_span("startup", attributes={"http.route": f"/warm/{i}"}):
            pass
    sock = socket.create_server(("127.0.0.1", 0))
    workers: set[int] = set()
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            try:
                _serve(sock, provider, exporters)
            finally:
                os._exit(0)  # never return into the master's loop
        workers.add(pid)
        _write_json(
            directory / "master.json",
            {"port": sock.getsockname()[1], "workers": sorted(workers), "pid": os.getpid()},
        )

    def on_term(*_: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in workers:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    for _ in range(config["workers"]):
        spawn()
    while workers:
        try:
            pid, _status = os.wait()
        except ChildProcessError:
            break
        workers.discard(pid)
        if not stopping:
            spawn()  # replace a dead worker, as gunicorn's arbiter does
    provider.shutdown()
    _write_json(
        directory / f"{os.getpid()}.json",
        {
            "processor": processor.stats(),
            "kafka": dict(kafka.stats()),
            "redis": redis_exporter.stats(),
        },
    )


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
