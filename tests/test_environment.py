"""otelcost.environment: every OTELCOST_* variable, one rule (argument > environment > default)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

import otelcost
from otelcost import CostSpanProcessor, environment
from otelcost.budget import BudgetExporter, budget_exporter, load_budgets
from otelcost.budget.memory_store import InMemoryBudgetStore
from otelcost.exporters import InMemoryCostExporter, RedisBudgetExporter
from otelcost.exporters.kafka import kafka_exporter_from_env

SRC = Path(otelcost.__file__).parent
PRICES: dict[str, Any] = {
    "version": "env-1",
    "currency": "EUR",
    "region": "table-region",
    "prices": {"svc:*": {"per_request": 1e-6}},
}
BLANKS = ["", "   ", "\t\n"]


def test_read_strips_and_treats_blank_as_unset() -> None:
    assert environment.read(environment.REGION, {}) is None
    for blank in BLANKS:
        assert environment.read(environment.REGION, {environment.REGION: blank}) is None
    assert environment.read(environment.REGION, {environment.REGION: " eu-west-3\n"}) == (
        "eu-west-3"
    )
    with pytest.raises(KeyError, match="not an otelcost variable"):
        environment.read("OTELCOST_TYPO", {})


def test_read_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(environment.CURRENCY, "JPY")
    assert environment.read(environment.CURRENCY) == "JPY"
    monkeypatch.delenv(environment.CURRENCY)
    assert environment.read(environment.CURRENCY) is None


@pytest.mark.parametrize(
    ("explicit", "env", "expected"),
    [
        ("arg", "env", "arg"),
        ("", "env", ""),  # an explicit value is never replaced, even an empty one
        (None, "env", "env"),
        (None, "  ", "default"),
        (None, None, "default"),
    ],
)
def test_choose_is_argument_then_environment_then_default(
    explicit: str | None, env: str | None, expected: str
) -> None:
    environ = {} if env is None else {environment.CURRENCY: env}
    assert environment.choose(explicit, environment.CURRENCY, "default", environ) == expected


def test_the_docstring_table_lists_every_variable_the_package_names() -> None:
    doc = environment.__doc__ or ""
    rows = re.findall(r"^\| `(OTELCOST_[A-Z_]+)` \|", doc, re.MULTILINE)
    assert tuple(rows) == environment.VARIABLES
    named = {
        name
        for path in SRC.rglob("*.py")
        for name in re.findall(r"\bOTELCOST_[A-Z_]*[A-Z]\b", path.read_text(encoding="utf-8"))
    }
    assert named <= set(environment.VARIABLES), named - set(environment.VARIABLES)


def test_only_the_environment_module_reads_the_process_environment() -> None:
    readers = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name != "environment.py"
        and re.search(r"os\.environ\b(?!``)|getenv\(", path.read_text(encoding="utf-8"))
    ]
    assert readers == []


# -- each variable, through the code that reads it -------------------------------------


def _record(environ: Mapping[str, str] | None = None, **options: Any) -> Any:
    costs = InMemoryCostExporter(None)
    processor = CostSpanProcessor(PRICES, [costs], environ=environ, **options)
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(processor)
    try:
        with provider.get_tracer("t").start_as_current_span("job"):
            pass
        assert processor.force_flush(10_000)
        (record,) = costs.records
        return record
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    ("argument", "env", "expected"),
    [("EUR", "USD", "EUR"), (None, "EUR", "EUR"), (None, " ", "USD"), (None, None, "USD")],
)
def test_the_processor_reads_currency_like_region(
    argument: str | None, env: str | None, expected: str
) -> None:
    """The currency-mismatch log tells users to set OTELCOST_CURRENCY: the processor reads it."""
    environ = {} if env is None else {environment.CURRENCY: env}
    record = _record(environ, currency=argument)
    assert record.currency == expected
    assert (record.error is None) == (expected == "EUR")


@pytest.mark.parametrize(
    ("argument", "env", "expected"),
    [("arg", "env", "arg"), (None, "env", "env"), (None, "", "table-region"), (None, None, None)],
)
def test_the_processor_reads_region(argument: str | None, env: str | None, expected: str) -> None:
    environ = {} if env is None else {environment.REGION: env}
    assert _record(environ, region=argument).region == (expected or "table-region")


def test_the_processor_reads_the_process_environment_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(environment.CURRENCY, "EUR")
    monkeypatch.setenv(environment.REGION, "from-env")
    record = _record()
    assert (record.currency, record.region, record.error) == ("EUR", "from-env", None)


def test_install_reads_pricing_from_its_environ(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(PRICES))
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    costs = InMemoryCostExporter(None)
    environ = {environment.PRICING: str(path), environment.CURRENCY: "EUR"}
    processor = otelcost.install(exporters=[costs], tracer_provider=provider, environ=environ)
    try:
        with provider.get_tracer("t").start_as_current_span("job"):
            pass
        assert processor.force_flush(10_000)
        (record,) = costs.records
        assert (record.currency, record.error) == ("EUR", None)
    finally:
        provider.shutdown()
    with pytest.raises(ValueError, match="OTELCOST_PRICING"):
        otelcost.install(tracer_provider=TracerProvider(), environ={environment.PRICING: " "})


def test_budgets_and_redis_url(tmp_path: Path) -> None:
    path = tmp_path / "budgets.json"
    path.write_text(json.dumps({"budgets": [{"service": "*", "limit": 5}]}))
    for blank in BLANKS:
        assert not load_budgets(environ={environment.BUDGETS: blank})
        assert budget_exporter(environ={environment.BUDGETS: blank}) is None
    assert [b.limit for b in load_budgets(environ={environment.BUDGETS: str(path)}).budgets] == [5]
    embedded = budget_exporter(environ={environment.BUDGETS: str(path), environment.REDIS_URL: " "})
    assert isinstance(embedded, BudgetExporter)
    assert isinstance(embedded.store, InMemoryBudgetStore)
    remote = budget_exporter(
        environ={environment.BUDGETS: str(path), environment.REDIS_URL: "redis://127.0.0.1:1/0"}
    )
    assert isinstance(remote, RedisBudgetExporter)
    explicit = budget_exporter([{"service": "*", "limit": 7}], environ={})
    assert explicit is not None and isinstance(explicit.store, InMemoryBudgetStore)
    for exporter in (embedded, remote, explicit):
        exporter.shutdown(100)


def test_kafka_variables_blank_means_unset() -> None:
    for blank in BLANKS:
        assert kafka_exporter_from_env({environment.KAFKA_BOOTSTRAP: blank}) is None
    exporter = kafka_exporter_from_env(
        {
            environment.KAFKA_BOOTSTRAP: "k:9092",
            environment.KAFKA_TOPIC: " ",
            environment.KAFKA_ENCODING: "",
            environment.KAFKA_SCHEMA: " ",
            environment.KAFKA_CONFIG: "",
        }
    )
    assert exporter is not None
    try:
        assert "topic='otel-cost-spans'" in repr(exporter) and "schema=2" in repr(exporter)
    finally:
        exporter.shutdown()


def test_the_deployment_page_shows_the_modules_table() -> None:
    doc = environment.__doc__ or ""
    table = doc[doc.index("| Variable") : doc.index("\n\nOne rule")]
    page = (Path(__file__).parents[1] / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert table in page


def test_no_other_page_keeps_a_table_of_the_variables() -> None:
    """Partial copies drift: every other page names variables in prose and links the table."""
    root = Path(__file__).parents[1]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    with_rows = [p.name for p in pages if re.search(r"^\| `OTELCOST_", p.read_text("utf-8"), re.M)]
    assert with_rows == ["deployment.md"]
    for name in ("concepts.md", "zero-code.md"):
        assert "deployment.md#environment-variables" in (root / "docs" / name).read_text("utf-8")
    named = {
        name
        for page in pages
        for name in re.findall(r"\bOTELCOST_[A-Z_]*[A-Z]\b", page.read_text(encoding="utf-8"))
    }
    # Pages may name the test suite's own variables; every other name must be a real one.
    assert named - set(environment.VARIABLES) <= {"OTELCOST_TEST_POSTGRES"}, named


def test_flag_is_on_for_any_value_but_the_off_words() -> None:
    for value in ("1", "true", "YES", "on", "anything"):
        assert environment.flag(environment.QUIET, {environment.QUIET: value})
    for value in ("0", "false", "No", " off ", "", "  "):
        assert not environment.flag(environment.QUIET, {environment.QUIET: value})
    assert not environment.flag(environment.QUIET, {})
