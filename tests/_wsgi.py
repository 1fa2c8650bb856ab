"""A real WSGI app served by wsgiref on a loopback port, instrumented with OpenTelemetry."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider

StartResponse = Callable[..., Any]


class App:
    """Routes: ``/orders/<id>`` (sets ``http.route`` like a framework would), ``/boom``
    (raises), anything else 200. Counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        with self.lock:
            self.calls += 1
        path = environ.get("PATH_INFO", "/")
        if path.startswith("/orders/"):
            trace.get_current_span().set_attribute("http.route", "/orders/{order_id}")
        if path == "/boom":
            raise ValueError("boom from the app")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietServer(WSGIServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class Served:
    """``app`` wrapped in OpenTelemetryMiddleware for ``provider``, served on 127.0.0.1."""

    def __init__(self, app: Any, provider: TracerProvider) -> None:
        self.wsgi = OpenTelemetryMiddleware(app, tracer_provider=provider)
        self.server = make_server(
            "127.0.0.1", 0, self.wsgi, server_class=_QuietServer, handler_class=_QuietHandler
        )
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def get(self, path: str) -> int:
        """GET ``path``; returns the HTTP status."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
