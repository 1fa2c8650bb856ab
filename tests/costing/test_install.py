"""otelcost.install(): providers, pre-warm, env, exporters, idempotence, and the app's errors."""

from __future__ import annotations

import json
import logging
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, StatusCode

import otelcost
from _processes import run_python
from _wsgi import App, Served
from otelcost import CostRecord, CostSpanProcessor, PricingCache
from otelcost.budget import Budget, BudgetExporter
from otelcost.costing._ending import ending_hook_supported
from otelcost.exporters import InMemoryCostExporter

PRICES: dict[str, Any] = {
    "version": "v7",
    "currency": "USD",
    "region": "us-east-1",
    "prices": {"shop:GET /orders/{order_id}": {"per_request": 1e-6}, "*:*": {"per_ms": 1e-7}},
}


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    made = TracerProvider(
        resource=Resource.create({"service.name": "shop"}), shutdown_on_exit=False
    )
    yield made
    made.shutdown()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTELCOST_PRICING",
        "OTELCOST_REGION",
        "OTELCOST_CURRENCY",
        "OTELCOST_BUDGETS",
        "OTELCOST_REDIS_URL",
        "OTELCOST_KAFKA_BOOTSTRAP",
    ):
        monkeypatch.delenv(name, raising=False)


def _one_record(
    provider: TracerProvider, processor: CostSpanProcessor, costs: InMemoryCostExporter
) -> CostRecord:
    """The record ``costs`` receives for one span ended on ``provider``."""
    with provider.get_tracer("t").start_as_current_span("job"):
        pass
    assert processor.force_flush(10_000)
    (record,) = costs.records
    return record


def test_install_prices_spans_and_enriches_the_span_exporter(provider: TracerProvider) -> None:
    costs, spans = InMemoryCostExporter(None), InMemorySpanExporter()
    processor = otelcost.install(
        PRICES, exporters=[costs], span_exporter=spans, tracer_provider=provider
    )
    assert isinstance(processor, CostSpanProcessor)
    record = _one_record(provider, processor, costs)
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["cost.amount"] == record.cost_amount
    assert record.pricing_version == "v7" and record.region == "us-east-1"


def test_installing_twice_returns_the_same_processor_and_counts_once(
    provider: TracerProvider, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = InMemoryCostExporter(None), InMemoryCostExporter(None)
    processor = otelcost.install(PRICES, exporters=[first], tracer_provider=provider)
    again = otelcost.install(PRICES, exporters=[second], tracer_provider=provider)
    assert again is processor
    assert "already called for this TracerProvider" in caplog.text
    assert "exporters" in caplog.text
    tracer = provider.get_tracer("t")
    for _ in range(10):
        with tracer.start_as_current_span("job"):
            pass
    assert processor.force_flush(10_000)
    assert len(first.records) == 10
    assert second.records == []
    assert processor.stats()["spans_seen"] == 10


def test_after_shutdown_install_puts_a_new_processor_in(provider: TracerProvider) -> None:
    processor = otelcost.install(PRICES, exporters=[], tracer_provider=provider)
    processor.shutdown()
    replacement = otelcost.install(PRICES, exporters=[], tracer_provider=provider)
    assert replacement is not processor and not replacement.is_shutdown


def test_an_exception_in_the_app_propagates_once_and_the_app_runs_once(
    provider: TracerProvider,
) -> None:
    costs = InMemoryCostExporter(None)
    spans = InMemorySpanExporter()
    processor = otelcost.install(
        PRICES, exporters=[costs], span_exporter=spans, tracer_provider=provider
    )
    app = App()
    served = Served(app, provider)
    try:
        assert served.get("/boom") == 500  # through a real server
        assert app.calls == 1
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/boom",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        with pytest.raises(ValueError, match="boom from the app"):
            served.wsgi(environ, lambda *a: None)
        assert app.calls == 2  # called exactly once more, never replayed
        assert served.get("/orders/1") == 200
        assert app.calls == 3
    finally:
        served.close()
    assert processor.force_flush(10_000)
    exported = spans.get_finished_spans()
    assert len(exported) == len(costs.records) == 3
    failed = [s for s in exported if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == 2
    assert all(s.attributes is not None and "cost.amount" in s.attributes for s in failed)


def test_default_exporters_are_embedded_and_budgets_add_theirs(provider: TracerProvider) -> None:
    processor = otelcost.install(PRICES, tracer_provider=provider)
    assert [type(e) for e in processor.exporters] == [InMemoryCostExporter]
    other = TracerProvider(shutdown_on_exit=False)
    try:
        budgeted = otelcost.install(
            PRICES, budgets=[Budget("shop", 5.0)], exporters=[], tracer_provider=other
        )
        assert [type(e) for e in budgeted.exporters] == [BudgetExporter]
    finally:
        other.shutdown()


def test_the_environment_supplies_pricing_region_and_currency(
    provider: TracerProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({**PRICES, "currency": "EUR"}))
    monkeypatch.setenv("OTELCOST_PRICING", str(path))
    monkeypatch.setenv("OTELCOST_REGION", "eu-central-1")
    monkeypatch.setenv("OTELCOST_CURRENCY", "EUR")
    costs = InMemoryCostExporter(None)
    processor = otelcost.install(exporters=[costs], tracer_provider=provider)
    record = _one_record(provider, processor, costs)
    assert (record.currency, record.region, record.error) == ("EUR", "eu-central-1", None)


def test_arguments_win_over_the_environment(
    provider: TracerProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTELCOST_PRICING", "/nonexistent/prices.json")
    monkeypatch.setenv("OTELCOST_REGION", "eu-central-1")
    monkeypatch.setenv("OTELCOST_CURRENCY", "EUR")
    costs = InMemoryCostExporter(None)
    processor = otelcost.install(
        PRICES, exporters=[costs], tracer_provider=provider, region="sa-east-1", currency="USD"
    )
    record = _one_record(provider, processor, costs)
    assert (record.currency, record.region, record.error) == ("USD", "sa-east-1", None)


def test_unloadable_pricing_is_logged_and_spans_get_cost_error(
    provider: TracerProvider, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.ERROR)
    costs = InMemoryCostExporter(None)
    processor = otelcost.install(
        str(tmp_path / "missing.json"), exporters=[costs], tracer_provider=provider
    )
    assert "could not load pricing" in caplog.text
    record = _one_record(provider, processor, costs)
    assert record.error is not None and record.error.startswith("pricing_stale: ")


def test_a_callers_cache_is_prewarmed_started_and_left_running(provider: TracerProvider) -> None:
    cache = PricingCache(PRICES)
    processor = otelcost.install(cache, exporters=[], tracer_provider=provider)
    try:
        assert cache.version == "v7"
        assert cache.running
        assert processor.pricing is cache
        processor.shutdown()
        assert cache.running  # the caller owns it
    finally:
        cache.stop()


def test_without_pricing_install_says_what_is_missing(provider: TracerProvider) -> None:
    with pytest.raises(ValueError, match="OTELCOST_PRICING"):
        otelcost.install(tracer_provider=provider)


def test_a_non_sdk_provider_is_refused() -> None:
    with pytest.raises(TypeError, match="SDK"):
        otelcost.install(PRICES, tracer_provider=NoOpTracerProvider())  # type: ignore[arg-type]


def _run(script: str, tmp_path: Path) -> dict[str, Any]:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    env = {"OTELCOST_PRICING": str(prices), "PATH": "/usr/bin:/bin"}
    done = run_python(script, env=env)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_with_no_global_provider_install_creates_and_registers_one(tmp_path: Path) -> None:
    result = _run(
        """
        import json
        import otelcost
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        processor = otelcost.install()
        provider = trace.get_tracer_provider()
        with trace.get_tracer("t").start_as_current_span("job"):
            pass
        processor.force_flush(10_000)
        stats = processor.stats()
        (exporter,) = processor.exporters
        print(json.dumps({"sdk": isinstance(provider, TracerProvider),
                          "again": otelcost.install() is processor,
                          "priced": stats["spans_priced"],
                          "records": len(exporter.records)}))
        """,
        tmp_path,
    )
    assert result == {"sdk": True, "again": True, "priced": 1, "records": 1}


def test_an_existing_global_sdk_provider_is_used(tmp_path: Path) -> None:
    result = _run(
        """
        import json
        import otelcost
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        mine = TracerProvider(resource=Resource.create({"service.name": "shop"}))
        trace.set_tracer_provider(mine)
        processor = otelcost.install()
        with trace.get_tracer("t").start_as_current_span("job"):
            pass
        processor.force_flush(10_000)
        (exporter,) = processor.exporters
        print(json.dumps({"same": trace.get_tracer_provider() is mine,
                          "service": exporter.records[0].service}))
        """,
        tmp_path,
    )
    assert result == {"same": True, "service": "shop"}


def test_at_interpreter_exit_everything_is_flushed(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    script = f"""
        import otelcost
        from opentelemetry import trace
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        from otelcost.exporters import ConsoleCostExporter
        otelcost.install({str(prices)!r}, exporters=[ConsoleCostExporter()],
                         span_exporter=ConsoleSpanExporter())
        with trace.get_tracer("t").start_as_current_span("job"):
            pass
        """
    done = run_python(script, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    documents, decoder, text = [], json.JSONDecoder(), done.stdout.strip()
    while text:
        document, end = decoder.raw_decode(text)
        documents.append(document)
        text = text[end:].strip()
    (record,) = [otelcost.CostRecord.from_dict(d) for d in documents if "schema" in d]
    (span,) = [d for d in documents if "schema" not in d]
    assert record.operation == "job" and record.error is None
    assert span["attributes"]["cost.amount"] == record.cost_amount


def _stderr_of(script: str, tmp_path: Path, **env: str) -> str:
    """The stderr of ``script`` run alone, with nothing configured but ``env``."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    done = run_python(
        script,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **env},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


INSTALL_TWICE = """
    import otelcost
    from opentelemetry.sdk.trace import TracerProvider
    otelcost.install("prices.json")
    otelcost.install("prices.json", tracer_provider=TracerProvider())
    """


def test_with_logging_unconfigured_the_first_install_says_so_on_stderr(tmp_path: Path) -> None:
    lines = _stderr_of(INSTALL_TWICE, tmp_path).splitlines()
    # The oldest SDK the project supports (CI's floor job) has no ending hook.
    path = (
        "in the SDK's ending hook"
        if ending_hook_supported()
        else "on a worker, enriched copies to the span processors"
    )
    assert lines == [
        "otelcost: pricing table 'v7' from FilePricingSource('prices.json') (2 prices, USD); "
        f"pricing spans {path}; cost exporters: InMemoryCostExporter"
    ]


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_otelcost_quiet_keeps_stderr_clean(tmp_path: Path, value: str) -> None:
    assert _stderr_of(INSTALL_TWICE, tmp_path, OTELCOST_QUIET=value) == ""


def test_quiet_off_values_still_print_the_line(tmp_path: Path) -> None:
    assert "otelcost: pricing table 'v7'" in _stderr_of(INSTALL_TWICE, tmp_path, OTELCOST_QUIET="0")


def test_an_app_that_configured_logging_gets_a_record_not_a_stderr_line(tmp_path: Path) -> None:
    # basicConfig's WARNING level filters the INFO record: nothing at all is printed.
    configured = "import logging\nlogging.basicConfig()\n" + textwrap.dedent(INSTALL_TWICE)
    assert _stderr_of(configured, tmp_path) == ""


def test_each_install_logs_its_table_path_and_exporters_at_info(
    provider: TracerProvider, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "otelcost.costing.install"]

    caplog.set_level(logging.INFO, logger="otelcost.costing.install")
    otelcost.install(PRICES, exporters=[InMemoryCostExporter(None)], tracer_provider=provider)
    (line,) = said()
    assert line.startswith("otelcost: pricing table 'v7' from DictPricingSource(")
    assert "(2 prices, USD)" in line and line.endswith("cost exporters: InMemoryCostExporter")
    other = TracerProvider(shutdown_on_exit=False)
    try:
        otelcost.install(str(tmp_path / "missing.json"), exporters=[], tracer_provider=other)
        line = said()[-1]
        assert line.startswith("otelcost: no pricing table loaded yet from FilePricingSource(")
        assert line.endswith("cost exporters: none")
    finally:
        other.shutdown()
    flat = TracerProvider(shutdown_on_exit=False)
    try:
        otelcost.install({"shop:*": None}, exporters=[], tracer_provider=flat)
        assert said()[-1].startswith(
            "otelcost: pricing table without a version from DictPricingSource(<1 keys>) "
            "(1 prices, USD);"
        )
    finally:
        flat.shutdown()
