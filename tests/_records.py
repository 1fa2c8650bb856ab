"""CostRecords for tests: one factory, valid by default, every field replaceable."""

from __future__ import annotations

from typing import Any

from otelcost.record import CostRecord

T0 = 1_764_236_400_000  # 2025-11-27T09:40:00Z, in ms


def cost_record(n: int = 1, **fields: Any) -> CostRecord:
    """A priced-at-zero record of service ``svc``, operation ``op`` at ``T0``, whose trace
    and span ids are ``n`` in hex; ``fields`` replace any of that."""
    defaults: dict[str, Any] = {
        "trace_id": f"{n:032x}",
        "span_id": f"{n:016x}",
        "service": "svc",
        "operation": "op",
        "cost_amount": 0.0,
        "currency": "USD",
        "duration_ms": 1.0,
        "timestamp": T0,
    }
    return CostRecord(**{**defaults, **fields})
