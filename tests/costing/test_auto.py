"""Zero-code: an unmodified Flask app under ``opentelemetry-instrument`` gets priced spans."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.distro", reason="needs opentelemetry-distro (test extra)")
pytest.importorskip("opentelemetry.instrumentation.flask", reason="needs the examples extra")

# The application knows nothing of OpenTelemetry or otelcost.
APP = """
import sys
from pathlib import Path

from flask import Flask
from werkzeug.serving import make_server

app = Flask(__name__)


@app.get("/users/<int:user_id>")
def user(user_id):
    return {"id": user_id}


@app.get("/health")
def health():
    return "ok"


if __name__ == "__main__":
    port_file, requests = Path(sys.argv[1]), int(sys.argv[2])
    server = make_server("127.0.0.1", 0, app)
    port_file.write_text(str(server.server_port))
    for _ in range(requests):
        server.handle_request()
"""

PRICES = {
    "version": "zero-code-test-1",
    "currency": "USD",
    "prices": {
        "shop:GET /users/<int:user_id>": {"per_ms": 0.000002, "per_request": 0.0000004},
        "*:GET /health": None,
    },
}


def instrument_command() -> list[str]:
    found = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("opentelemetry-instrument is not installed next to this interpreter")
    return [found, sys.executable]


def run_app(
    tmp_path: Path, env_extra: dict[str, str], paths: list[str]
) -> tuple[list[dict[str, Any]], str]:
    """Run the app under opentelemetry-instrument, GET ``paths``; its spans and stderr."""
    (tmp_path / "app.py").write_text(APP)
    port_file = tmp_path / "port"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "OTELCOST_"))
    }
    env.update(
        OTEL_SERVICE_NAME="shop",
        OTEL_TRACES_EXPORTER="console",  # the distro would default to OTLP
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        PYTHONUNBUFFERED="1",
        **env_extra,
    )
    command = [*instrument_command(), "app.py", str(port_file), str(len(paths))]
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                out, err = proc.communicate(timeout=10)
                pytest.fail(f"the app did not start (exit {proc.returncode}):\n{err}")
            time.sleep(0.05)
        port = int(port_file.read_text())
        for path in paths:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                assert r.status == 200
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    return list(json_documents(out)), err


def json_documents(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of the console span exporter (indented, one after another)."""
    decoder = json.JSONDecoder()
    pos = text.find("{")
    while pos >= 0:
        doc, end = decoder.raw_decode(text, pos)
        yield doc
        pos = text.find("{", end)


def server_spans(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in spans if s["kind"] == "SpanKind.SERVER"]


@pytest.fixture
def prices(tmp_path: Path) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(PRICES))
    return path


@pytest.mark.slow
def test_unmodified_app_exports_priced_spans(tmp_path: Path, prices: Path) -> None:
    spans, err = run_app(
        tmp_path, {"OTELCOST_PRICING": str(prices)}, ["/users/42", "/users/7", "/health"]
    )
    # The app configures no logging: the zero-code setup says on stderr that it works.
    (said,) = [line for line in err.splitlines() if line.startswith("otelcost: ")]
    assert said.startswith("otelcost: pricing table 'zero-code-test-1' from FilePricingSource(")
    by_route = {}
    for span in server_spans(spans):
        by_route.setdefault(span["attributes"]["http.route"], []).append(span["attributes"])
    assert len(by_route["/users/<int:user_id>"]) == 2
    for attrs in by_route["/users/<int:user_id>"]:
        assert attrs["cost.source"] == "otelcost"
        assert attrs["cost.currency"] == "USD"
        assert attrs["cost.pricing_version"] == "zero-code-test-1"
        assert "cost.error" not in attrs
        expected = 0.0000004 + 0.000002 * attrs["cost.duration_ms"]
        assert attrs["cost.amount"] == pytest.approx(expected, abs=2e-9)
    (health,) = by_route["/health"]
    assert health["cost.amount"] == 0.0


@pytest.mark.slow
def test_without_pricing_env_nothing_changes(tmp_path: Path) -> None:
    spans = server_spans(run_app(tmp_path, {}, ["/users/1"])[0])
    assert len(spans) == 1
    assert not [k for k in spans[0]["attributes"] if k.startswith("cost.")]


@pytest.mark.slow
def test_unloadable_pricing_never_stops_the_app(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"shop:*": {"per_ms": -1}}')
    spans = server_spans(run_app(tmp_path, {"OTELCOST_PRICING": str(broken)}, ["/users/1"])[0])
    (span,) = spans
    attrs = span["attributes"]
    assert "cost.amount" not in attrs
    assert attrs["cost.error"].startswith("pricing_stale:")


@pytest.mark.slow
def test_failed_setup_gives_the_exporters_back(tmp_path: Path, prices: Path) -> None:
    budgets = tmp_path / "budgets.json"
    budgets.write_text('{"budgets": [{"service": "shop", "limit": -5}]}')
    env = {"OTELCOST_PRICING": str(prices), "OTELCOST_BUDGETS": str(budgets)}
    spans, err = run_app(tmp_path, env, ["/users/1"])
    assert "otelcost: zero-code setup failed" in err
    assert "limit must be a number > 0" in err  # the cause is in the log
    (span,) = server_spans(spans)  # the user's exporter still gets every span
    assert not [k for k in span["attributes"] if k.startswith("cost.")]


def _provider_with_exporter() -> tuple[Any, Any, Any]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exported = InMemorySpanExporter()
    users = SimpleSpanProcessor(exported)
    provider = TracerProvider(
        resource=Resource.create({"service.name": "shop"}), shutdown_on_exit=False
    )
    provider.add_span_processor(users)
    return provider, users, exported


@pytest.mark.parametrize("hook", [True, False])
def test_processors_stay_on_the_provider_with_the_ending_hook(
    monkeypatch: pytest.MonkeyPatch, prices: Path, hook: bool
) -> None:
    from _costing_support import HAS_ENDING_HOOK
    from opentelemetry import trace

    from otelcost.costing import auto

    if hook and not HAS_ENDING_HOOK:
        pytest.skip("this SDK has no ending hook")
    provider, users, exported = _provider_with_exporter()
    monkeypatch.setenv("OTELCOST_PRICING", str(prices))
    monkeypatch.setattr(auto, "ending_hook_supported", lambda: hook)
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    auto.post_instrument()
    registered = provider._active_span_processor._span_processors
    (cost,) = [p for p in registered if p is not users]
    try:
        # With the hook nothing is re-routed; without it the user's processor moved.
        assert (users in registered) is hook
        assert (users in cost.span_processors) is not hook
        with provider.get_tracer("t").start_as_current_span(
            "GET", attributes={"http.request.method": "GET", "http.route": "/users/<int:user_id>"}
        ):
            pass
        assert cost.force_flush(10_000)
        (span,) = exported.get_finished_spans()
        assert span.attributes["cost.operation"] == "GET /users/<int:user_id>"
        assert span.attributes["cost.amount"] > 0
    finally:
        cost.shutdown()
