"""Comparison and calibration rules on sums held in memory (no database)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from otelcost.bill import CalibrationError, build_comparison, calibrate, read_focus

MAY_1 = 1_777_593_600_000
HEADER = (
    "ChargePeriodStart,ChargePeriodEnd,ChargeCategory,BilledCost,BillingCurrency,ServiceName,Tags\n"
)


def bill_file(tmp_path: Path, *rows: tuple[str, str]) -> Path:
    lines = [
        f"2026-05-01T00:00:00Z,2026-05-02T00:00:00Z,Usage,{amount},USD,Svc,"
        f'"{json.dumps({"service": service}).replace(chr(34), chr(34) * 2)}"\n'
        for service, amount in rows
    ]
    path = tmp_path / "focus.csv"
    path.write_text(HEADER + "".join(lines))
    return path


def test_other_currencies_are_reported_never_added(tmp_path: Path) -> None:
    bill = read_focus(bill_file(tmp_path, ("checkout", "2")))
    attributed = {("checkout", "USD"): (1_000_000_000,), ("checkout", "EUR"): (5,)}
    comparison = build_comparison(bill, (MAY_1,), attributed)
    assert comparison.service("checkout").attributed_nanos == 1_000_000_000
    assert comparison.other_currencies == {"EUR": 5}
    assert comparison.coverage == 1


def test_calibration_skips_what_it_cannot_scale(tmp_path: Path) -> None:
    bill = read_focus(bill_file(tmp_path, ("checkout", "2"), ("shared", "3"), ("llm", "1")))
    attributed = {(s, "USD"): (1_000_000_000,) for s in ("checkout", "shared", "llm")}
    comparison = build_comparison(bill, (MAY_1,), attributed)
    table: dict[str, Any] = {
        "currency": "USD",
        "prices": {
            "checkout:*": {"per_ms": 1e-6, "per_unit": {"bytes": {"rate": 1e-9, "tiers": [
                {"above": 1000, "rate": 5e-10}], "by": "bytes"}}},
            "checkout:GET /health": None,
            "*:*": {"per_ms": 1e-7},
        },
    }  # fmt: skip
    calibration = calibrate(comparison, table)
    assert [f.service for f in calibration.factors] == ["checkout"]
    assert calibration.factors[0].keys == ("checkout:*",)  # a free entry stays free
    assert "add a 'shared:*' entry" in calibration.skipped["shared"]
    written = calibration.table()
    assert written["prices"]["checkout:GET /health"] is None
    scaled = written["prices"]["checkout:*"][1]
    assert scaled["per_ms"] == pytest.approx(2e-6)
    assert scaled["per_unit"]["bytes"] == {
        "rate": pytest.approx(2e-9), "tiers": [{"above": 1000, "rate": pytest.approx(1e-9)}],
        "by": "bytes",
    }  # fmt: skip
    assert written["version"].startswith("calibrated-2026-05-02")
    with pytest.raises(CalibrationError, match="currencies are never mixed"):
        calibrate(comparison, {**table, "currency": "EUR"})
    with pytest.raises(CalibrationError, match="pricing table"):
        calibrate(comparison, {"prices": {"bad key": {}}})
