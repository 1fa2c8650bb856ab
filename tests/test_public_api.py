"""The public surface, pinned: what each public module exports (its ``__all__``).

A change here is a change of the public API: deliberate, in the CHANGELOG, never an
accident of a refactoring. Every exported name must exist, and every exception class
otelcost exports belongs to the one hierarchy of ``otelcost.errors``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

import otelcost
from otelcost import errors

PUBLIC = {
    "otelcost": [
        "BudgetConfigError",
        "CostRecord",
        "CostSpanProcessor",
        "InvalidRecordError",
        "OtelCostError",
        "PathNormalizer",
        "Price",
        "PricingCache",
        "PricingError",
        "PricingNotFoundError",
        "PricingSource",
        "PricingStaleError",
        "PricingTable",
        "__version__",
        "install",
        "normalize_path",
    ],
    "otelcost.errors": [
        "BrokerUnreachableError",
        "BudgetConfigError",
        "CalibrationError",
        "DeadLetterError",
        "FenceOverlapError",
        "FocusError",
        "InvalidRecordError",
        "MissingExtraError",
        "OtelCostError",
        "PricingError",
        "PricingNotFoundError",
        "PricingStaleError",
        "RedisReplyError",
        "RetryLaterError",
        "SchemaError",
        "StoreUnavailableError",
    ],
    "otelcost.record": ["CostRecord", "MAX_RECORD_BYTES", "SCHEMA_VERSION"],
    "otelcost.money": ["DEFAULT_CURRENCY", "NANOS_PER_UNIT", "from_nanos", "to_nanos"],
    "otelcost.environment": [
        "BUDGETS",
        "CURRENCY",
        "Environ",
        "KAFKA_BOOTSTRAP",
        "KAFKA_CONFIG",
        "KAFKA_ENCODING",
        "KAFKA_SCHEMA",
        "KAFKA_TOPIC",
        "PRICING",
        "PURE_PYTHON",
        "QUIET",
        "REDIS_URL",
        "REGION",
        "VARIABLES",
        "choose",
        "flag",
        "read",
    ],
    "otelcost.pricing": [
        "DEFAULT_MAX_BYTES",
        "DEFAULT_MEMO_SIZE",
        "DictPricingSource",
        "FilePricingSource",
        "HttpPricingSource",
        "Price",
        "PricingCache",
        "PricingCacheStats",
        "PricingSource",
        "PricingTable",
    ],
    "otelcost.exporters": [
        "BudgetExporter",
        "ConsoleCostExporter",
        "CostExportResult",
        "CostExporter",
        "CostSum",
        "CostSumExporter",
        "CostSums",
        "InMemoryCostExporter",
        "KafkaCostExporter",
        "MetricsCostExporter",
        "RedisBudgetExporter",
    ],
    "otelcost.budget": [
        "BUDGETS_ENV",
        "Budget",
        "BudgetASGIMiddleware",
        "BudgetConfigError",
        "BudgetExporter",
        "BudgetGuard",
        "BudgetSet",
        "BudgetStatus",
        "BudgetUsage",
        "BudgetWSGIMiddleware",
        "Fence",
        "FenceOverlapError",
        "InMemoryBudgetStore",
        "MAX_DELTA_NANOS",
        "MAX_SERVICE_LEN",
        "PERIODS",
        "RedisBudgetStore",
        "RedisReplyError",
        "Throttle",
        "budget_exporter",
        "load_budgets",
    ],
    "otelcost.rollup": [
        "CostRow",
        "DAILY_VIEW",
        "DEFAULT_RETENTION_DAYS",
        "DEFAULT_ROLLUP_GROUP",
        "History",
        "MINUTE_TABLE",
        "OFFSETS_TABLE",
        "RepricedRow",
        "Repricing",
        "Rollup",
        "SCHEMA_VERSION",
        "SchemaError",
        "SchemaInfo",
        "StoreUnavailableError",
        "VersionHistory",
        "VersionRow",
        "apply_retention",
        "init_db",
        "read_history",
        "read_versions",
        "reprice_history",
    ],
    "otelcost.bill": [
        "Bill",
        "Calibration",
        "CalibrationError",
        "Comparison",
        "Factor",
        "FocusError",
        "ServiceComparison",
        "build_comparison",
        "calibrate",
        "compare",
        "read_focus",
        "read_mapping",
    ],
    "otelcost.stream.consumer": [
        "BrokerUnreachableError",
        "ConsumedBatch",
        "ConsumerOptions",
        "RetryLaterError",
        "StreamConsumer",
        "describe",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_the_exported_names_are_pinned(module: str) -> None:
    assert sorted(importlib.import_module(module).__all__) == PUBLIC[module]


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_exported_name_exists(module: str) -> None:
    imported = importlib.import_module(module)
    missing = [name for name in imported.__all__ if not hasattr(imported, name)]
    assert not missing


def _public_modules() -> list[str]:
    found = []
    for info in pkgutil.walk_packages(otelcost.__path__, "otelcost."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            found.append(info.name)
    return found


def test_every_public_module_says_what_it_exports() -> None:
    # Packages that only group modules (costing, stream) export nothing themselves.
    lacking = [
        name
        for name in _public_modules()
        if not hasattr(importlib.import_module(name), "__all__")
        and importlib.import_module(name).__dict__.get("__path__") is None
    ]
    assert not lacking


def test_every_exported_exception_is_in_the_one_hierarchy() -> None:
    for name in _public_modules():
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            value = getattr(module, attr)
            if isinstance(value, type) and issubclass(value, BaseException):
                assert issubclass(value, errors.OtelCostError), f"{name}.{attr}"
                assert getattr(errors, value.__name__, None) is value, f"{name}.{attr}"


def test_the_version_is_the_one_pyproject_declares() -> None:
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert otelcost.__version__ == project["project"]["version"]
