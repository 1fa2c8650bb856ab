"""An LLM-gateway style WSGI app, priced per token.

    python examples/llm_gateway.py                        # serve on 127.0.0.1:8000
    python examples/llm_gateway.py --port 0 --requests 3  # exit after 3 requests

``POST /v1/chat/completions`` with ``{"model": ..., "prompt": ...}`` calls a (simulated)
model inside a span named like the GenAI semantic conventions (``chat <model>``) that
carries ``gen_ai.usage.input_tokens`` and ``gen_ai.usage.output_tokens``. The pricing
table prices ``llm-gateway:chat *`` (the span name is the operation) per token with
``per_unit``, so each model call costs ``3e-6 * input + 1.5e-5 * output`` USD whatever its
duration, and the record's ``usage`` keeps the token counts for re-pricing. The gateway's
own server span falls through to ``*:*`` (priced per millisecond).
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

from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

import otelcost
from otelcost.exporters import ConsoleCostExporter

PRICES = Path(__file__).with_name("prices.json")
tracer = trace.get_tracer("llm-gateway.example")


def fake_model(model: str, prompt: str) -> tuple[str, int, int]:
    """Stands in for a model API: the answer and the input/output token counts."""
    words = prompt.split()
    answer = " ".join(reversed(words)) or "..."
    return answer, len(words) * 4 // 3 + 1, len(answer.split()) * 4 // 3 + 1


def chat(model: str, prompt: str) -> str:
    with tracer.start_as_current_span(f"chat {model}", kind=trace.SpanKind.CLIENT) as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.request.model", model)
        answer, input_tokens, output_tokens = fake_model(model, prompt)
        span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        return answer


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["REQUEST_METHOD"] != "POST" or environ.get("PATH_INFO") != "/v1/chat/completions":
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"error": "not found"}']
    size = int(environ.get("CONTENT_LENGTH") or 0)
    request = json.loads(environ["wsgi.input"].read(size) or b"{}")
    answer = chat(str(request.get("model", "small-1")), str(request.get("prompt", "")))
    data = json.dumps({"choices": [{"text": answer}]}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [data]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # keep stdout for the records
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--requests", type=int, default=0, help="exit after N requests")
    args = parser.parse_args()
    os.environ.setdefault("OTEL_SERVICE_NAME", "llm-gateway")

    otelcost.install(PRICES, exporters=[ConsoleCostExporter()])  # <- the one line

    server = make_server(
        args.host, args.port, OpenTelemetryMiddleware(app), handler_class=_QuietHandler
    )
    print(f"listening on http://{args.host}:{server.server_port}", file=sys.stderr, flush=True)
    with server:
        if args.requests:
            for _ in range(args.requests):
                server.handle_request()
        else:
            server.serve_forever()


if __name__ == "__main__":
    main()
