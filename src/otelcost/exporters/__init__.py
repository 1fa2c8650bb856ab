"""Cost exporters: where priced records go."""

from __future__ import annotations

from otelcost.exporters.base import (
    CostExporter,
    CostExportResult,
    CostSum,
    CostSumExporter,
    CostSums,
)
from otelcost.exporters.console import ConsoleCostExporter
from otelcost.exporters.kafka import KafkaCostExporter
from otelcost.exporters.memory import InMemoryCostExporter
from otelcost.exporters.metrics import MetricsCostExporter

__all__ = [
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
]


def __getattr__(name: str) -> object:
    # Lazy: otelcost.exporters.redis imports otelcost.budget, which imports this package.
    if name == "RedisBudgetExporter":
        from otelcost.exporters.redis import RedisBudgetExporter

        return RedisBudgetExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
