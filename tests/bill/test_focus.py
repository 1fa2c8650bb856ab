"""Reading FOCUS exports: exact sums per service and UTC day, and clear errors naming the
row and column of anything unusable."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from otelcost.bill import FocusError, read_focus, read_mapping

DAY = 86_400_000
MAY_1 = 1_777_593_600_000  # 2026-05-01T00:00:00Z
COLUMNS = [
    "BilledCost",
    "EffectiveCost",
    "BillingCurrency",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ServiceName",
    "ResourceId",
    "Tags",
]


def charge(**kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "BilledCost": "1.5",
        "EffectiveCost": "1.25",
        "BillingCurrency": "USD",
        "ChargePeriodStart": "2026-05-01T00:00:00Z",
        "ChargePeriodEnd": "2026-05-01T01:00:00Z",
        "ChargeCategory": "Usage",
        "ChargeClass": "",
        "ServiceName": "AmazonEC2",
        "ResourceId": "i-1",
        "Tags": json.dumps({"service": "checkout"}),
    }
    row.update(kw)
    return row


def write(tmp_path: Path, rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> Path:
    path = tmp_path / "focus.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_sums_are_exact_per_service_and_utc_day_rounded_once(tmp_path: Path) -> None:
    rows = [
        charge(BilledCost="0.0000000004"),  # 0.4 nano: rounds away alone, counts in a sum
        charge(BilledCost="0.0000000004"),
        charge(BilledCost="0.0000000004"),
        charge(
            BilledCost="10.123456789",
            ChargePeriodStart="2026-05-02T23:59:59.9999999Z",
            ChargePeriodEnd="2026-05-03T00:00:00Z",
        ),
        charge(BilledCost="2", Tags=json.dumps({"service": "search"})),
        charge(BilledCost="3", Tags="{}", ServiceName="AWSCloudTrail", ResourceId=""),
        charge(BilledCost="-4", ChargeCategory="Credit"),
    ]
    bill = read_focus(write(tmp_path, rows))
    assert bill.currency == "USD"
    assert (bill.since, bill.until) == (MAY_1, MAY_1 + 2 * DAY)
    assert bill.billed == {
        "checkout": {MAY_1: 1, MAY_1 + DAY: 10_123_456_789},
        "search": {MAY_1: 2_000_000_000},
    }
    assert bill.untagged == {"AWSCloudTrail": {MAY_1: 3_000_000_000}}
    assert bill.credits == {"checkout": -4_000_000_000}
    assert bill.total_nanos == 1 + 10_123_456_789 + 2_000_000_000 + 3_000_000_000
    assert bill.rows == 7
    effective = read_focus(write(tmp_path, [charge()]), cost_column="EffectiveCost")
    assert effective.billed == {"checkout": {MAY_1: 1_250_000_000}}


def test_services_from_another_tag_a_mapping_or_the_resource(tmp_path: Path) -> None:
    rows = [
        charge(Tags=json.dumps({"Owner": "team-payments", "n": 500})),
        charge(Tags=json.dumps({"Owner": "team-data"})),
        charge(Tags="", ResourceId="arn:aws:lambda:fn/search"),
        charge(Tags="", ResourceId="arn:other"),
    ]
    mapping_file = tmp_path / "map.json"
    mapping_file.write_text(
        json.dumps({"team-payments": "payments", "arn:aws:lambda:fn/search": "search"})
    )
    bill = read_focus(write(tmp_path, rows), tag="Owner", mapping=read_mapping(mapping_file))
    assert set(bill.billed) == {"payments", "team-data", "search"}  # unmapped values stay
    assert bill.untagged == {"AmazonEC2": {MAY_1: 1_500_000_000}}


@pytest.mark.parametrize(
    ("row", "column", "words"),
    [
        (charge(ChargePeriodStart="05/01/2026"), "ChargePeriodStart", "ISO 8601"),
        (charge(ChargePeriodEnd="2026-05-01T25:00:00Z"), "ChargePeriodEnd", "hour"),
        (charge(ChargePeriodEnd="2026-04-30T00:00:00Z"), "ChargePeriodEnd", "before"),
        (charge(BilledCost="1,5"), "BilledCost", "not a decimal"),
        (charge(BilledCost="NaN"), "BilledCost", "finite"),
        (charge(BilledCost="-1"), "BilledCost", "negative amount -1 on a Usage"),
        (charge(BilledCost="1", ChargeCategory="Credit"), "BilledCost", "Credit must not"),
        (charge(Tags="{not json"), "Tags", "JSON"),
        (charge(Tags="[1, 2]"), "Tags", "JSON object"),
        (charge(BillingCurrency="usd"), "BillingCurrency", "ISO 4217"),
        (charge(BillingCurrency="EUR"), "BillingCurrency", "EUR after USD (row 2)"),
    ],
)
def test_a_bad_row_is_named_by_row_and_column(
    tmp_path: Path, row: dict[str, Any], column: str, words: str
) -> None:
    with pytest.raises(FocusError) as caught:
        read_focus(write(tmp_path, [charge(), row]))
    assert caught.value.row == 3
    assert caught.value.column == column
    assert f"row 3, column {column}: " in str(caught.value)
    assert words in str(caught.value)


def test_negative_corrections_and_adjustments_count_with_the_charges(tmp_path: Path) -> None:
    rows = [
        charge(BilledCost="5"),
        charge(BilledCost="-1", ChargeClass="Correction"),
        charge(BilledCost="-0.5", ChargeCategory="Adjustment"),
    ]
    assert read_focus(write(tmp_path, rows)).billed == {"checkout": {MAY_1: 3_500_000_000}}


def test_missing_columns_are_all_named(tmp_path: Path) -> None:
    columns = [c for c in COLUMNS if c not in ("Tags", "ChargePeriodEnd")]
    with pytest.raises(
        FocusError,
        match=r"row 1 \(header\): missing FOCUS column\(s\) "
        r"ChargePeriodEnd, Tags",
    ) as caught:
        read_focus(write(tmp_path, [charge()], columns))
    assert caught.value.column == "ChargePeriodEnd"
    with pytest.raises(FocusError, match=r"missing FOCUS column.*EffectiveCost"):
        read_focus(
            write(tmp_path, [charge()], [c for c in COLUMNS if c != "EffectiveCost"]),
            cost_column="EffectiveCost",
        )


def test_dates_as_the_clouds_write_them(tmp_path: Path) -> None:
    forms = [
        "2026-05-01T10:00:00Z",
        "2026-05-01T10:00:00.0000000Z",  # Azure
        "2026-05-01 10:00:00 UTC",  # BigQuery
        "2026-05-01T12:00:00+02:00",
        "2026-05-01T08:00:00-0200",
        "2026-05-01T10:00Z",
    ]
    rows = [charge(ChargePeriodStart=f, ChargePeriodEnd="2026-05-02T00:00:00Z") for f in forms]
    assert read_focus(write(tmp_path, rows)).billed == {"checkout": {MAY_1: 9_000_000_000}}


def test_an_empty_window_or_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FocusError, match="no charges"):
        read_focus(write(tmp_path, []))
    with pytest.raises(FocusError, match="no charges"):
        read_focus(write(tmp_path, [charge()]), since_ms=MAY_1 + DAY)


def test_parquet_reads_as_csv_does(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from decimal import Decimal

    rows = [charge(), charge(BilledCost="0.000000001", Tags=json.dumps({"service": "search"}))]
    columns = {name: [row[name] for row in rows] for name in COLUMNS}
    columns["BilledCost"] = [Decimal(row["BilledCost"]) for row in rows]
    pq.write_table(pa.table(columns), tmp_path / "focus.parquet")
    bill = read_focus(tmp_path / "focus.parquet")
    assert bill.billed == read_focus(write(tmp_path, rows)).billed
    pq.write_table(pa.table({"BilledCost": [1.0]}), tmp_path / "bad.parquet")
    with pytest.raises(FocusError, match="missing FOCUS column"):
        read_focus(tmp_path / "bad.parquet")


def test_a_bad_mapping_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text('{"a": 1}')
    with pytest.raises(FocusError, match="mapping file"):
        read_mapping(path)


def test_the_title_of_a_narrow_table_stays_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from otelcost.cli import main

    assert main(["bill", "check", str(write(tmp_path, [charge()]))]) == 0
    lines = capsys.readouterr().out.splitlines()
    (title,) = [line for line in lines if "otelcost BilledCost" in line]
    assert title.strip().endswith("2026-05-01 to 2026-05-01 UTC"), lines
