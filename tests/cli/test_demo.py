"""``otelcost demo``: a real instrumented workload, priced, summarised and reconciled."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from typing import Any

import pytest
from _cli_support import exit_code

from otelcost.cli import main
from otelcost.cli._demo_app import SERVICES
from otelcost.cli._demo_budgets import DemoBudgets, demo_budgets
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
    # Calls inside a request are named by what they are and priced by keys naming them.
    checkouts = operations["storefront", "POST /checkout"]["spans"]
    assert operations["storefront", "sqlite INSERT orders"]["spans"] == checkouts
    assert (
        operations["storefront", "redis GET"]["spans"]
        == operations["storefront", "GET /cart"]["spans"]
    )
    (outbound,) = [
        o
        for (service, operation), o in operations.items()
        if service == "storefront" and re.fullmatch(r"POST 127\.0\.0\.1:\d+/charge", operation)
    ]
    assert outbound["spans"] == checkouts and outbound["cost"] == pytest.approx(2e-5 * checkouts)
    llm = operations["recommendations", "chat gpt-4o"]
    assert llm["unpriced"] == 0
    # Priced per token: from the genai-prices catalog (a quarter of the input cached) when
    # it is installed, else from the table's own rates.
    low, high = (200 * 2.5e-6 + 20 * 1e-5) * 0.8, 1500 * 2.5e-6 + 400 * 1e-5
    assert low <= llm["cost_per_span"] <= high
    costs = [o["cost"] for o in summary["top_operations"]]
    assert costs == sorted(costs, reverse=True)
    assert summary["requests"] > 0 and summary["failed_requests"] == 0


def test_the_llm_service_is_priced_from_the_catalog_when_installed() -> None:
    from importlib.util import find_spec

    from otelcost.cli.demo import demo_pricing

    entry = demo_pricing()["prices"]["recommendations:chat *"]
    if find_spec("genai_prices") is None:
        assert "per_unit" in entry
    else:
        assert entry == {"catalog": "genai-prices"}


def test_the_small_budget_throttles_the_storefront_and_reconciles(
    capsys: pytest.CaptureFixture[str],
) -> None:
    summary = demo_json(capsys, "--duration", "2", "--budget", "0.0005")
    assert {(b["service"], b["period"], b["limit"]) for b in summary["budget_definitions"]} == {
        ("storefront", "1h", 0.0005),
        ("*", "24h", 1000),
    }
    throttling = {t["service"]: t for t in summary["throttling"]}
    storefront = throttling["storefront"]
    assert storefront["guarded"] and storefront["rejected_requests"] > 0
    (episode,) = storefront["episodes"]  # a hard cap on 1h holds for the rest of the run
    assert 0 < episode["throttled_at_s"] <= summary["duration_s"]
    assert episode["released_at_s"] is None
    assert episode["reasons"] == ["1h hard_cap"]
    assert throttling["payments"] == {
        "service": "payments",
        "guarded": True,
        "rejected_requests": 0,
        "episodes": [],
    }
    assert summary["rejected_requests"] == storefront["rejected_requests"]
    assert summary["failed_requests"] == 0  # a 429 is the guard working, not a failure

    # ``budgets`` is the ``otelcost report --json`` document.
    report = {s["service"]: s for s in summary["budgets"]["services"]}
    assert set(report) == set(SERVICES)
    assert report["storefront"]["throttled"] is True
    assert 0 < report["storefront"]["throttle_ttl"] <= 3600
    assert report["payments"]["throttled"] is report["recommendations"]["throttled"] is False
    hour, day = report["storefront"]["budgets"]
    assert (hour["period"], hour["limit"], hour["throttling"]) == ("1h", 0.0005, "hard_cap")
    assert hour["utilization"] >= 1.0
    assert (day["period"], day["limit"], day["throttling"]) == ("24h", 1000.0, None)
    # Every budget's spend is exactly the service's priced cost, to the nano.
    cost = {s["service"]: to_nanos(s["cost"]) for s in summary["services"]}
    for service, status in report.items():
        assert {"service", "throttled", "throttle_ttl", "budgets"} <= set(status)
        for usage in status["budgets"]:
            assert usage["spend_nanos"] == cost[service] > 0
            assert to_nanos(usage["spend"]) == cost[service]
            assert usage["utilization"] == usage["spend_nanos"] / usage["limit_nanos"]
            for key in ("ema_rate", "consecutive_over"):
                assert key in usage
    exporter = summary["budget_exporter"]
    assert exporter["records"] == exporter["records_delivered"] == summary["spans"]["seen"]
    assert exporter["records_dropped"] == exporter["flush_errors"] == 0
    assert exporter["flushes"] < exporter["records"]  # pre-aggregated per service


def test_throttle_episodes_follow_the_flag() -> None:
    now = [1_764_236_400_000]
    budgets = DemoBudgets(demo_budgets(), SERVICES, clock=lambda: now[0])
    assert budgets.watch(0.1) == []
    budgets.store.set_flag("payments", "1", ttl=60)  # as an operator would, by hand
    assert budgets.watch(0.2) == ["payments"]
    assert budgets.guard.is_throttled("payments")
    now[0] += 60_000  # the flag expires
    assert budgets.watch(0.5) == []
    payments = budgets.throttling({"payments": 3})[1]
    assert payments == {
        "service": "payments",
        "guarded": True,
        "rejected_requests": 3,
        "episodes": [{"throttled_at_s": 0.2, "released_at_s": 0.5, "reasons": ["1"]}],
    }
    assert budgets.throttling({})[0]["guarded"] is False


def test_spans_stops_the_run_early(capsys: pytest.CaptureFixture[str]) -> None:
    summary = demo_json(capsys, "--spans", "120", "--duration", "60")
    assert summary["spans"]["seen"] >= 120
    assert summary["duration_s"] < 59  # stopped by --spans, not at the deadline


def test_tables_with_rich(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "1", "--clients", "2", "--budget", "0.0002"]) == 0
    out = capsys.readouterr().out
    for title in ("Cost per service", "Top 15 operations by cost", "Spans"):
        assert title in out
    # The unpriced admin export is 1 request in 20: the budget may stop the run before it.
    assert ("GET /admin/export/*" in out) == ("pricing_not_found" in out)
    assert "┃" in out  # rich drew the tables
    assert "storefront: 0.0002 USD per rolling 1h (hard cap" in out
    assert "otelcost budgets" in out and "[hard_cap]" in out  # the report's table
    assert "storefront throttled at " in out
    assert "(1h budget: rolling spend reached the limit), still throttled at the end" in out


def test_without_rich_or_the_wsgi_instrumentation_it_still_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ["rich", *(m for m in sys.modules if m.startswith("rich."))]:
        monkeypatch.setitem(sys.modules, name, None)  # importing any of them now fails
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.wsgi", None)
    assert main(["demo", "--duration", "1", "--clients", "2", "--budget", "0.0002"]) == 0
    out = capsys.readouterr().out
    assert "built-in minimal WSGI tracing" in out
    assert "Cost per service" in out and "┃" not in out
    assert "GET /products/{product_id}" in out
    assert "EMA burn rate" in out and "[hard_cap]" in out  # the report's plain table
    assert "storefront throttled at " in out


@pytest.mark.parametrize("flag", ["--duration", "--spans", "--clients", "--budget"])
def test_sizes_must_be_positive(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["demo", flag, "0"]) == 2
    assert "must be > 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "message"),
    [("inf", "must be finite"), ("nan", "must be > 0"), ("1e-12", "limit must be a number > 0")],
)
def test_the_budget_must_be_a_valid_limit(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(["demo", "--budget", value]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_the_default_run_ends_within_15_seconds() -> None:
    """Six seconds of traffic by default, and little around it.

    Wall time is the machine's, not the demo's: the test checks what makes it up instead.
    The traffic phase stops at its own deadline (the duration the demo prints), and the
    whole run, servers, pricing and report included, costs under 15 s of CPU.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-m", "otelcost.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "160"},
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 15, cpu
    traffic = re.search(r" requests(?: \(\d+ refused with 429\))? in ([\d.]+) s,", done.stdout)
    assert traffic and 6.0 <= float(traffic.group(1)) < 8.0, done.stdout
    assert "Top 15 operations by cost" in done.stdout
    assert "otelcost budgets" in done.stdout
    # stderr is a pipe here: one whole progress line at the end, not a bar cut at 80 columns.
    progress = [line for line in done.stderr.splitlines() if "priced live traffic" in line]
    assert len(progress) == 1 and re.search(r"\d+ requests · \d+ spans · \$\d+\.\d{4}", progress[0])


def test_help_is_for_users_not_docstring_markup() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "otelcost.cli", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Price a live, instrumented workload" in done.stdout
    assert "``" not in done.stdout and "_demo_app" not in done.stdout
