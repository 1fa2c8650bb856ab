"""Cost exporters: where priced records go."""

from __future__ import annotations

from otelcost.exporters.base import CostExporter, CostExportResult
from otelcost.exporters.console import ConsoleCostExporter
from otelcost.exporters.memory import InMemoryCostExporter
from otelcost.exporters.metrics import MetricsCostExporter

__all__ = [
    "ConsoleCostExporter",
    "CostExportResult",
    "CostExporter",
    "InMemoryCostExporter",
    "MetricsCostExporter",
]
