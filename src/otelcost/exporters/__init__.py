"""Cost exporters: where priced records go.

Each exporter is imported on first use (PEP 562 ``__getattr__``): ``import otelcost``
loads only what pricing spans needs, not Kafka's, Redis's or the budgets' modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from otelcost._lazy import lazy_names

if TYPE_CHECKING:
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

# Exported name -> the module defining it, imported when the name is first looked up.
_LAZY = {
    "BudgetExporter": "otelcost.exporters.budget",
    "ConsoleCostExporter": "otelcost.exporters.console",
    "CostExportResult": "otelcost.exporters.base",
    "CostExporter": "otelcost.exporters.base",
    "CostSum": "otelcost.exporters.base",
    "CostSumExporter": "otelcost.exporters.base",
    "CostSums": "otelcost.exporters.base",
    "InMemoryCostExporter": "otelcost.exporters.memory",
    "KafkaCostExporter": "otelcost.exporters.kafka",
    "MetricsCostExporter": "otelcost.exporters.metrics",
    "RedisBudgetExporter": "otelcost.exporters.budget",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
