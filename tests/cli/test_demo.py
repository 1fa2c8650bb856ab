"""``otelcost demo``: a real instrumented workload, priced, summarised and reconciled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from otelcost.cli import main
from otelcost.money import to_nanos


def demo_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["demo", "--json", *args]) == 0
    summary: dict[str, Any] = json.loads(capsys.readouterr().out)
    return summary


def test_the_json_summary_reconciles(capsys: pytest.CaptureFixture[str]) -> None:
    summary = demo_json(capsys, "--duration", "2")
    assert summary["instrumentation"] == "opentelemetry-instrumentation-wsgi"
    assert summary["pricing"] == {
        "version": "demo-2026-11-27.1",
        "currency": "USD",
        "region": "us-east-1",
    }
    spans = summary["spans"]
    services = {s["service"]: s for s in summary["services"]}
    assert set(services) == {"storefront", "payments", "recommendations"}
    assert spans["seen"] == spans["priced"] + spans["unpriced"] + spans["dropped"]
    assert spans["dropped"] == 0
    assert spans["records_exported"] == spans["seen"]
    assert sum(s["spans"] for s in services.values()) == spans["seen"]
    assert to_nanos(summary["total_cost"]) == sum(to_nanos(s["cost"]) for s in services.values())
    # Only the admin export has no price, and the storefront serves it.
    assert spans["unpriced_by_reason"] == {"pricing_not_found": spans["unpriced"]}
    assert services["storefront"]["unpriced"] == spans["unpriced"] > 0
    operations = {(o["service"], o["operation"]): o for o in summary["top_operations"]}
    assert operations["storefront", "GET /admin/export/*"]["unpriced"] == spans["unpriced"]
    health = operations["storefront", "GET /health"]
    assert health["cost"] == 0.0 and health["unpriced"] == 0
    assert operations["storefront", "GET /products/{product_id}"]["cost"] > 0  # http.route
    assert operations["storefront", "GET /search"]["cost"] > 0  # normalized url.path
    llm = operations["recommendations", "chat gpt-demo"]
    assert llm["cost_per_span"] >= 200 * 3e-6 + 20 * 1.5e-5  # priced per token
    costs = [o["cost"] for o in summary["top_operations"]]
    assert costs == sorted(costs, reverse=True)
    assert summary["requests"] > 0 and summary["failed_requests"] == 0


def test_spans_stops_the_run_early(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    summary = demo_json(capsys, "--spans", "120", "--duration", "60")
    assert summary["spans"]["seen"] >= 120
    assert time.monotonic() - started < 30


def test_tables_with_rich(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "1", "--clients", "2"]) == 0
    out = capsys.readouterr().out
    for title in ("Cost per service", "Top 10 operations by cost", "Spans", "pricing_not_found"):
        assert title in out
    assert "┃" in out  # rich drew the tables


def test_without_rich_or_the_wsgi_instrumentation_it_still_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ["rich", *(m for m in sys.modules if m.startswith("rich."))]:
        monkeypatch.setitem(sys.modules, name, None)  # importing any of them now fails
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.wsgi", None)
    assert main(["demo", "--duration", "1", "--clients", "2"]) == 0
    out = capsys.readouterr().out
    assert "built-in minimal WSGI tracing" in out
    assert "Cost per service" in out and "┃" not in out
    assert "GET /products/{product_id}" in out


@pytest.mark.parametrize("flag", ["--duration", "--spans", "--clients"])
def test_sizes_must_be_positive(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", flag, "0"])
    assert exited.value.code == 2
    assert "must be > 0" in capsys.readouterr().err


@pytest.mark.slow
def test_the_default_run_ends_within_15_seconds() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "otelcost.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "160"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 15
    assert "Top 10 operations by cost" in done.stdout
