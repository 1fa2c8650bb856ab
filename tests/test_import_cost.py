"""What ``import otelcost`` costs the application: only the modules pricing spans needs.

Every module loaded stays in the host process for good: its import time at startup, its
objects in every full garbage collection. The exporters, budgets, streams and the HTTP
pricing source are imported when first used; each check runs a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import otelcost

_SRC = str(Path(otelcost.__file__).resolve().parents[1])

# Modules the pricing path must not load: stdlib ones that are heavy (asyncio, the HTTP and
# e-mail stack, TLS, archives), client libraries, and otelcost's own optional paths.
NOT_ON_THE_PRICING_PATH = (
    "asyncio",
    "bz2",
    "confluent_kafka",
    "email",
    "http.client",
    "importlib.resources",
    "lzma",
    "psycopg",
    "redis",
    "shutil",
    "ssl",
    "tempfile",
    "urllib.request",
    "zipfile",
    "otelcost.bill",
    "otelcost.budget.guard",
    "otelcost.budget.middleware",
    "otelcost.budget.model",
    "otelcost.budget.redis_store",
    "otelcost.cli",
    "otelcost.exporters.budget",
    "otelcost.exporters.console",
    "otelcost.exporters.kafka",
    "otelcost.exporters.metrics",
    "otelcost.pricing._http",
    "otelcost.pricing.imports",
    "otelcost.reconcile",
    "otelcost.rollup",
    "otelcost.stream._kafka",
    "otelcost.stream.consumer",
    "otelcost.stream.schema2",
)

_CLEAN_ENV = {
    key: value
    for key, value in os.environ.items()
    if not key.startswith(("OTELCOST_", "OTEL_", "PYTHON"))
}


def _loaded_after(code: str) -> set[str]:
    """The modules loaded once ``code`` ran in a fresh interpreter."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    env = {**_CLEAN_ENV, "PYTHONPATH": _SRC, "OTELCOST_QUIET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def _heavy(loaded: set[str]) -> list[str]:
    return sorted(
        name
        for name in loaded
        if any(name == bad or name.startswith(bad + ".") for bad in NOT_ON_THE_PRICING_PATH)
    )


def test_import_otelcost_loads_only_the_pricing_path() -> None:
    assert _heavy(_loaded_after("import otelcost")) == []


def test_installing_with_a_dict_and_no_exporters_loads_only_the_pricing_path() -> None:
    loaded = _loaded_after(
        "import otelcost\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "pricing = {'version': '1', 'prices': {'svc:GET /': {'per_request': 0.001}}}\n"
        "processor = otelcost.install(pricing, tracer_provider=TracerProvider())\n"
        "processor.shutdown()"
    )
    assert "otelcost.exporters.memory" in loaded  # the embedded default exporter
    assert _heavy(loaded) == []


def test_a_cost_span_processor_loads_only_the_pricing_path() -> None:
    loaded = _loaded_after(
        "import otelcost\n"
        "from otelcost.exporters import InMemoryCostExporter\n"
        "pricing = {'version': '1', 'prices': {'svc:GET /': {'per_request': 0.001}}}\n"
        "processor = otelcost.CostSpanProcessor(pricing, [InMemoryCostExporter()])\n"
        "processor.shutdown()"
    )
    assert _heavy(loaded) == []


def test_budgets_and_kafka_from_the_environment_are_imported_at_install(
    tmp_path: Path,
) -> None:
    budgets = tmp_path / "budgets.json"
    budgets.write_text('{"budgets": [{"service": "svc", "limit": 5, "period": "24h"}]}')
    code = (
        "import os, otelcost\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        f"os.environ['OTELCOST_BUDGETS'] = {str(budgets)!r}\n"
        "pricing = {'version': '1', 'prices': {'svc:GET /': {'per_request': 0.001}}}\n"
        "processor = otelcost.install(pricing, tracer_provider=TracerProvider())\n"
        "assert [type(e).__name__ for e in processor.exporters] == ['BudgetExporter']\n"
        "processor.shutdown()"
    )
    loaded = _loaded_after(code)
    assert {"otelcost.exporters.budget", "otelcost.budget.model"} <= loaded
    # Budgets read their Lua script without importlib.resources (tempfile, zipfile, lzma...),
    # and the guard's asyncio comes only with the guard.
    heavy = ("asyncio", "importlib.resources", "zipfile", "tempfile", "otelcost.budget.guard")
    assert sorted(loaded.intersection(heavy)) == []


@pytest.mark.parametrize(
    "module",
    ["otelcost", "otelcost.exporters", "otelcost.budget", "otelcost.pricing"],
)
def test_every_lazy_public_name_resolves_in_a_fresh_interpreter(module: str) -> None:
    code = (
        f"import importlib; m = importlib.import_module({module!r})\n"
        "missing = [n for n in m.__all__ if getattr(m, n, None) is None]\n"
        "assert not missing, missing\n"
        "assert set(m.__all__) <= set(dir(m))"
    )
    _loaded_after(code)


def test_subpackages_resolve_after_a_bare_import() -> None:
    code = (
        "import otelcost\n"
        "from otelcost.budget import Budget\n"
        "from otelcost.exporters import KafkaCostExporter\n"
        "assert otelcost.budget.Budget is Budget\n"
        "assert otelcost.exporters.KafkaCostExporter is KafkaCostExporter\n"
        "assert otelcost.budget.BudgetExporter is otelcost.exporters.BudgetExporter"
    )
    _loaded_after(code)


@pytest.mark.parametrize("first", ["otelcost.exporters.budget", "otelcost.budget.guard"])
def test_either_package_can_be_imported_first(first: str) -> None:
    # otelcost.budget re-exports the budget exporter, built on otelcost.budget's stores.
    _loaded_after(f"import {first}\nimport otelcost.budget, otelcost.exporters")


def test_an_unknown_name_is_an_attribute_error() -> None:
    import otelcost.budget
    import otelcost.exporters

    for module in (otelcost, otelcost.budget, otelcost.exporters):
        with pytest.raises(AttributeError):
            _ = module.NoSuchName


def test_the_command_line_help_lists_every_command_without_the_demo_app() -> None:
    from otelcost.cli import _COMMANDS

    code = (
        "import contextlib, io\n"
        "from otelcost.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        f"missing = [c for c in {_COMMANDS!r} if c not in out.getvalue()]\n"
        "assert not missing, missing"
    )
    loaded = _loaded_after(code)
    assert (
        sorted(loaded.intersection({"asyncio", "sqlite3", "wsgiref", "otelcost.cli._demo_app"}))
        == []
    )
