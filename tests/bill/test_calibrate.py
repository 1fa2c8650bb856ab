"""Calibration on a simulated month: a workload whose true cost is 1.37x the table's prices.
After calibrating on May's bill, June's attributed cost is within 1% of June's bill for
every service, although June's load differs. Real spans, processor, rollups, FOCUS files."""

from __future__ import annotations

import copy
import csv
import json
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from _billing import DAY, SERVICES, TABLE, daily_nanos, workload
from _postgres import reset_rollup_schema, roll_up
from otelcost import CostRecord
from otelcost.bill import Comparison, calibrate, compare, read_focus
from otelcost.cli import main
from otelcost.pricing import PricingTable
from otelcost.rollup import reprice_history

MAY_1 = 1_777_593_600_000  # 2026-05-01T00:00:00Z
JUNE_1 = MAY_1 + 31 * DAY
JULY_1 = JUNE_1 + 30 * DAY
TRUE_FACTOR = Fraction("1.37")
JUNE_LOAD = {"checkout": 1.5, "search": 0.8, "llm": 2.0}


def scaled(table: dict[str, Any], factor: Fraction) -> dict[str, Any]:
    """What the provider really charges: every price of ``table`` times ``factor``."""
    doc = copy.deepcopy(table)
    for entry in doc["prices"].values():
        for name in ("per_ms", "per_request"):
            if name in entry:
                entry[name] = float(Fraction(entry[name]) * factor)
        for attr, rate in entry.get("per_unit", {}).items():
            entry["per_unit"][attr] = float(Fraction(rate) * factor)
    return doc


TRUE_TABLE = scaled(TABLE, TRUE_FACTOR)


def focus_file(path: Path, records: Sequence[CostRecord], period: tuple[int, int]) -> Path:
    """The provider's FOCUS export of what ``records`` (priced at the true prices) cost:
    one usage charge per service and UTC day, tagged ``service``."""
    columns = [
        "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd",
        "ChargeCategory", "BilledCost", "EffectiveCost", "BillingCurrency", "ServiceName",
        "ResourceId", "Tags",
    ]  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for service, days in sorted(daily_nanos(records).items()):
            for day, nanos in sorted(days.items()):
                amount = str(Decimal(nanos).scaleb(-9))
                writer.writerow(
                    [_iso(period[0]), _iso(period[1]), _iso(day), _iso(day + DAY), "Usage",
                     amount, amount, "USD", "AWS Lambda", f"arn:aws:lambda:fn/{service}",
                     json.dumps({"service": service, "team": "shop"})]
                )  # fmt: skip
    return path


def _iso(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def off_by(comparison: Comparison, service: str) -> float:
    row = comparison.service(service)
    return abs(row.attributed_nanos - row.billed_nanos) / row.billed_nanos


@pytest.fixture(scope="module")
def dsn(postgres_dsn: str) -> str:
    reset_rollup_schema(postgres_dsn)
    return postgres_dsn


def test_calibrated_prices_track_the_next_months_bill(dsn: str, tmp_path: Path) -> None:
    # May: priced live under the table, billed at the true prices.
    may = workload(TABLE, MAY_1, 31, per_day=8)
    roll_up(dsn, may)
    may_bill = focus_file(
        tmp_path / "may.csv", workload(TRUE_TABLE, MAY_1, 31, per_day=8), (MAY_1, JUNE_1)
    )
    may_comparison = compare(read_focus(may_bill), dsn)
    for service in SERVICES:
        factor = may_comparison.service(service).factor
        assert factor is not None and float(factor) == pytest.approx(1.37, abs=0.001)

    calibration = calibrate(may_comparison, TABLE)
    assert calibration.effective_from == JUNE_1  # the next period
    factors = {f.service: round(float(f.factor), 3) for f in calibration.factors}
    assert factors == dict.fromkeys(SERVICES, 1.37)
    assert calibration.skipped == {}
    calibrated = calibration.table()
    assert calibrated["version"] == "2026-05.1+calibrated-2026-06-01"
    assert calibrated["prices"]["*:*"] == TABLE["prices"]["*:*"]  # shared: untouched
    search = calibrated["prices"]["search:*"]
    assert search[0] == TABLE["prices"]["search:*"]
    assert search[1]["from"] == "2026-06-01T00:00:00Z"
    assert search[1]["per_ms"] == pytest.approx(2e-6 * 1.37, rel=1e-3)

    # June: another load, priced live under the calibrated table, billed at the true prices.
    june = workload(calibrated, JUNE_1, 30, per_day=12, load=JUNE_LOAD)
    roll_up(dsn, june, first_offset=len(may))
    june_bill = focus_file(
        tmp_path / "june.csv",
        workload(TRUE_TABLE, JUNE_1, 30, per_day=12, load=JUNE_LOAD),
        (JUNE_1, JULY_1),
    )
    june_comparison = compare(read_focus(june_bill), dsn)
    for service in SERVICES:
        assert off_by(june_comparison, service) < 0.01, service
        assert june_comparison.service(service).billed_nanos > 0
    assert june_comparison.coverage == 1

    # What May would have cost under the calibrated prices: re-price it with them in force
    # from May 1 (report --reprice TABLE does the same).
    from_may = calibrate(may_comparison, TABLE, effective_from=MAY_1).table()
    repriced = reprice_history(dsn, PricingTable.parse(from_may), since_ms=MAY_1, until_ms=JUNE_1)
    for row in repriced.rows:
        billed = may_comparison.service(row.service).billed_nanos
        assert abs(row.repriced_nanos - billed) / billed < 0.01, row.service
    # Under the written table (in force from June 1), May keeps its recorded cost.
    written = PricingTable.parse(calibrated)
    unchanged = reprice_history(dsn, written, since_ms=MAY_1, until_ms=JUNE_1)
    assert all(row.repriced_nanos == row.recorded_nanos for row in unchanged.rows)


def test_the_command_writes_the_table_and_explains_what_it_left(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = workload(TABLE, MAY_1, 31, per_day=2)
    bill = focus_file(tmp_path / "may.csv", [r for r in records if r.service != "llm"],
                      (MAY_1, JUNE_1))  # fmt: skip
    table = copy.deepcopy(TABLE)
    table["prices"]["search:*"] = [
        {"per_ms": 1e-6},
        {"from": "2026-05-15T00:00:00Z", "per_ms": 2e-6, "per_request": 5e-5},
        {"from": "2026-07-01T00:00:00Z", "per_ms": 3e-6},
    ]
    table_path = tmp_path / "table.json"
    table_path.write_text(json.dumps(table))
    out = tmp_path / "calibrated.json"
    argv = [str(bill), "--dsn", dsn, "--table", str(table_path), "--write-table", str(out)]
    assert main(["bill", "calibrate", *argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["effective_from"] == "2026-06-01T00:00:00Z"
    assert doc["skipped"] == {"llm": "attributed, but not billed: check the tag or mapping"}
    written = json.loads(out.read_text())
    PricingTable.parse(written)  # a valid table
    search = written["prices"]["search:*"]
    assert [item.get("from") for item in search] == [
        None, "2026-05-15T00:00:00Z", "2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z",
    ]  # fmt: skip
    factor = next(f["factor"] for f in doc["factors"] if f["service"] == "search")
    assert search[2]["per_ms"] == pytest.approx(2e-6 * factor)
    assert search[3]["per_ms"] == pytest.approx(3e-6 * factor)  # later prices scale too
    assert search[1] == table["prices"]["search:*"][1]
    assert main(["bill", "calibrate", *argv]) == 0
    text = capsys.readouterr().out
    assert "not calibrated: llm" in text and f"wrote {out}" in text
    assert main(["bill", "calibrate", *argv[:-4], "--table", str(tmp_path / "none.json")]) == 2
    assert "--table: cannot read" in capsys.readouterr().err
