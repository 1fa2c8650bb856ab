"""Cost exporters: where priced records go."""

from __future__ import annotations

# otelcost.budget re-exports BudgetExporter from otelcost.exporters.budget, which is built on
# otelcost.budget's stores: load that package first, so that whichever of the two packages
# is imported first, otelcost.exporters.budget runs only once otelcost.budget is importable.
import otelcost.budget  # noqa: F401
from otelcost.exporters.base import (
    CostExporter,
    CostExportResult,
    CostSum,
    CostSumExporter,
    CostSums,
)
from otelcost.exporters.budget import BudgetExporter, RedisBudgetExporter
from otelcost.exporters.console import ConsoleCostExporter
from otelcost.exporters.kafka import KafkaCostExporter
from otelcost.exporters.memory import InMemoryCostExporter
from otelcost.exporters.metrics import MetricsCostExporter

__all__ = [
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
]
