"""otelcost: cloud cost as a first-class OpenTelemetry signal."""

from __future__ import annotations

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
