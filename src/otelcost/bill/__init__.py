"""The cloud bill next to otelcost's attribution (``otelcost bill``).

- ``read_focus``: a FOCUS export (CSV, or Parquet with the ``parquet`` extra), validated,
  summed exactly per service and UTC day (``focus``);
- ``compare``: billed vs attributed per service and day from the PostgreSQL rollups,
  coverage, spend with no service tag, services priced but never billed (``compare``);
- ``calibrate``: per-service factors billed ÷ attributed, written as dated prices
  (``calibrate``).

See docs/bill.md.
"""

from __future__ import annotations

from otelcost.bill.calibrate import Calibration, CalibrationError, Factor, calibrate
from otelcost.bill.compare import Comparison, ServiceComparison, build_comparison, compare
from otelcost.bill.focus import Bill, FocusError, read_focus, read_mapping

__all__ = [
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
]
