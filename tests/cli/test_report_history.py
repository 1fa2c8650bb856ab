"""``otelcost report --dsn``: cost history from the rollup tables on the machine's PostgreSQL."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

import pytest

from _postgres import drop_rollup_schema, reset_rollup_schema, roll_up
from otelcost.cli import main
from otelcost.cli._history import parse_since, sparkline
from otelcost.money import from_nanos
from otelcost.record import CostRecord

_DAY = 86_400_000
_NOW = int(time.time() * 1000)
_TODAY = _NOW - _NOW % _DAY


def _record(i: int, service: str, operation: str, nanos: int, ts: int, **kw: Any) -> CostRecord:
    return CostRecord(
        trace_id=f"{i + 1:032x}",
        span_id=f"{i + 1:016x}",
        service=service,
        operation=operation,
        cost_amount=from_nanos(nanos),
        currency=kw.pop("currency", "USD"),
        duration_ms=10.0,
        timestamp=ts,
        **kw,
    )


# (service, operation, nanos, age in days, extra fields)
_HISTORY: list[tuple[str, str, int, int, dict[str, Any]]] = [
    ("checkout", "POST /orders", 3_000_000_000, 0, {}),
    ("checkout", "POST /orders", 1_000_000_000, 2, {}),
    ("checkout", "GET /cart", 500_000_000, 2, {}),
    ("checkout", "GET /cart", 0, 1, {"error": "PricingNotFoundError"}),
    ("search", "GET /q", 250_000_000, 6, {}),
    ("search", "GET /q", 1_000, 12, {}),  # outside a 7-day window
    ("llm-gateway", "chat", 7_000_000_000, 1, {"currency": "EUR"}),
]


@pytest.fixture
def dsn(postgres_dsn: str) -> str:
    reset_rollup_schema(postgres_dsn)
    records = [
        _record(i, service, operation, nanos, ts, **extra)
        for i, (service, operation, nanos, age, extra) in enumerate(_HISTORY)
        for ts in [_NOW - 60_000 if age == 0 else _TODAY - age * _DAY + 3_600_000]
    ]
    roll_up(postgres_dsn, records)
    return postgres_dsn


def test_by_service_json_totals_and_daily_series(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--dsn", dsn, "--since", "7d", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["by"] == "service"
    assert len(doc["days"]) == 8  # a window of 7 x 24 h touches 8 UTC days
    rows = {(r["service"], r["currency"]): r for r in doc["rows"]}
    assert [(r["service"], r["currency"]) for r in doc["rows"]] == [
        ("llm-gateway", "EUR"),
        ("checkout", "USD"),
        ("search", "USD"),
    ]
    checkout = rows[("checkout", "USD")]
    assert checkout["cost_nanos"] == 4_500_000_000
    assert checkout["cost"] == 4.5
    assert (checkout["spans"], checkout["unpriced_spans"]) == (4, 1)
    assert checkout["unpriced_share"] == 0.25
    assert checkout["daily_cost"][-1] == 3.0  # today
    assert checkout["daily_cost"][-3] == 1.5  # two days ago
    assert rows[("search", "USD")]["cost_nanos"] == 250_000_000  # 12 days ago is out


def test_by_operation_and_by_day(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["report", "--dsn", dsn, "--by", "operation", "--service", "checkout", "--json"]) == 0
    )
    operations = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["operation"], r["cost_nanos"]) for r in operations] == [
        ("POST /orders", 4_000_000_000),
        ("GET /cart", 500_000_000),
    ]
    assert main(["report", "--dsn", dsn, "--by", "operation", "--limit", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["rows"]) == 1

    assert main(["report", "--dsn", dsn, "--by", "day", "--since", "30d", "--json"]) == 0
    days = json.loads(capsys.readouterr().out)["rows"]
    usd = {r["day"]: r["cost_nanos"] for r in days if r["currency"] == "USD"}
    assert usd[_TODAY - 2 * _DAY] == 1_500_000_000
    assert usd[_TODAY - 12 * _DAY] == 1_000
    assert sum(usd.values()) == 4_750_001_000
    assert sorted(usd) == list(usd)


def test_table_with_a_sparkline_per_service(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--dsn", dsn]) == 0
    out = capsys.readouterr().out
    assert "cost by service" in out
    checkout = next(line for line in out.splitlines() if "checkout" in line)
    assert "4.50" in checkout and "25.0%" in checkout
    # 8 UTC days; 2 days ago 1.50, yesterday nothing priced (0), today 3.00
    assert checkout.rstrip(" │").endswith("·····▄·█")
    assert main(["report", "--dsn", dsn, "--by", "day", "--since", "3d"]) == 0
    assert "█" * 24 in capsys.readouterr().out


def test_plain_output_without_rich(
    dsn: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("rich", "rich.console", "rich.table", "rich.text"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["report", "--dsn", dsn, "--by", "operation"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == lines[0].strip() and lines[0].startswith("top operations by cost")
    assert re.split(r"\s{2,}", lines[1].strip()) == [
        "service", "operation", "currency", "cost", "spans", "per span", "avg ms", "unpriced"
    ]  # fmt: skip
    assert lines[2].split()[:2] == ["llm-gateway", "chat"]


def test_empty_window(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--dsn", dsn, "--service", "nobody"]) == 0
    assert capsys.readouterr().out == "no cost history in the last 7d\n"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--dsn", "x", "--redis-url", "redis://x"], 2, "not both"),
        (["--since", "7d", "--redis-url", "redis://x"], 2, "need --dsn"),
        (["--dsn", "x", "--since", "7 days"], 2, "--since expects"),
    ],
)
def test_option_errors(
    argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", *argv]) == code
    assert message in capsys.readouterr().err


def test_unreachable_or_empty_database_is_one_line_and_exit_1(
    postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--dsn", "postgresql://u:s3cret@127.0.0.1:9/db"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "s3cret" not in err
    assert err.startswith("otelcost report: cannot read cost history from ")
    drop_rollup_schema(postgres_dsn)
    assert main(["report", "--dsn", postgres_dsn]) == 1
    assert "otelcost rollup --init-db" in capsys.readouterr().err


def test_parse_since_and_sparkline() -> None:
    assert parse_since("30m") == 1_800_000
    assert parse_since("2w") == 14 * _DAY
    for bad in ("0d", "7", "1y", "-1d"):
        with pytest.raises(ValueError, match="--since"):
            parse_since(bad)
    assert sparkline([0, 1, 4, 8]) == "·▁▄█"
    assert sparkline([0, 0]) == "··"
    assert sparkline([1] * 90) == "█" * 30  # 3 days per character
