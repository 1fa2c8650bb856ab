"""otelcost: cloud cost as a first-class OpenTelemetry signal."""

from __future__ import annotations

from otelcost.errors import (
    BudgetConfigError,
    InvalidRecordError,
    OtelCostError,
    PricingError,
    PricingNotFoundError,
    PricingStaleError,
)
from otelcost.normalize import PathNormalizer, normalize_path
from otelcost.pricing import Price, PricingCache, PricingSource, PricingTable
from otelcost.record import CostRecord

__version__ = "0.1.0"

__all__ = [
    "BudgetConfigError",
    "CostRecord",
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
    "normalize_path",
]
