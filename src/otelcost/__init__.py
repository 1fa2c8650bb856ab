"""otelcost: cloud cost as a first-class OpenTelemetry signal."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from otelcost._version import __version__
from otelcost.costing.install import install
from otelcost.costing.normalize import PathNormalizer, normalize_path
from otelcost.costing.processor import CostSpanProcessor
from otelcost.errors import (
    BudgetConfigError,
    InvalidRecordError,
    OtelCostError,
    PricingError,
    PricingNotFoundError,
    PricingStaleError,
)
from otelcost.pricing import Price, PricingCache, PricingSource, PricingTable
from otelcost.record import CostRecord

if TYPE_CHECKING:
    from otelcost import budget as budget
    from otelcost import exporters as exporters
    from otelcost import stream as stream

__all__ = [
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
]

# Subpackages that ``import otelcost`` used to load as a side effect: ``otelcost.budget.Budget``
# after a bare ``import otelcost`` keeps working, the package imported on first use.
_SUBPACKAGES = frozenset({"budget", "exporters", "stream"})


def __getattr__(name: str) -> object:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
