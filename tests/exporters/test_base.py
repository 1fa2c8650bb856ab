"""The exporter interfaces: sums of records, and a sum exporter fed records."""

from __future__ import annotations

from collections.abc import Sequence

from _records import cost_record
from otelcost import CostRecord
from otelcost.exporters import CostExportResult, CostSum, CostSumExporter, CostSums


def rec(
    service: str = "svc",
    operation: str = "op",
    cost: float = 0.0,
    *,
    error: str | None = None,
    span_count: int = 1,
    currency: str = "USD",
) -> CostRecord:
    return cost_record(
        span_id=f"{2:016x}",
        service=service,
        operation=operation,
        cost_amount=cost,
        currency=currency,
        error=error,
        aggregate=span_count != 1,
        span_count=span_count,
    )


def test_sums_of_records_add_nanos_and_spans_per_key_and_unpriced_per_reason() -> None:
    sums = CostSums.from_records(
        [
            rec(cost=0.1),
            rec(cost=0.2),
            rec(operation="other", cost=1e-9, span_count=40),
            rec(currency="EUR", cost=0.5),
            rec(error="pricing_stale: table 'v1' is stale"),
            rec(error="pricing_stale: again", span_count=7),
            rec("b", error="no colon"),
        ]
    )
    assert sums.costs == {
        ("svc", "op", "USD"): CostSum(300_000_000, 2),
        ("svc", "other", "USD"): CostSum(1, 40),
        ("svc", "op", "EUR"): CostSum(500_000_000, 1),
    }
    assert sums.unpriced == {("svc", "pricing_stale"): 8, ("b", "no colon"): 1}
    assert sums and not CostSums()


class Keep(CostSumExporter):
    def __init__(self) -> None:
        self.got: list[CostSums] = []

    def export_sums(self, sums: CostSums) -> CostExportResult:
        self.got.append(sums)
        return CostExportResult.SUCCESS


def test_a_sum_exporter_fed_records_gets_their_sums() -> None:
    keep = Keep()
    records: Sequence[CostRecord] = [rec(cost=0.25), rec(cost=0.5)]
    assert keep.export(records) is CostExportResult.SUCCESS
    (sums,) = keep.got
    assert sums.costs == {("svc", "op", "USD"): CostSum(750_000_000, 2)}
