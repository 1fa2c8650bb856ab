"""The PostgreSQL Grafana dashboard: every query runs against a real rollup schema.

Grafana's SQL macros are expanded the way its PostgreSQL data source does (for the
macros the dashboard uses; any other ``$`` left over fails the test), then each panel
and variable query is executed in the test database, which holds a few rollup rows.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from _postgres import reset_rollup_schema, roll_up
from _records import cost_record
from otelcost.money import from_nanos

DASHBOARD = (
    Path(__file__).resolve().parents[2]
    / "examples"
    / "grafana"
    / "otelcost-postgres-dashboard.json"
)
_RANGE = "'2000-01-01T00:00:00Z' AND now()"


def _expand(sql: str) -> str:
    """``sql`` with Grafana's macros and this dashboard's variables filled in."""
    sql = re.sub(
        r"\$__timeGroupAlias\((\w+),\s*\$__interval\)",
        r'to_timestamp(floor(extract(epoch FROM \1) / 3600) * 3600) AS "time"',
        sql,
    )
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN {_RANGE}", sql)
    sql = sql.replace("'$currency'", "'USD'").replace("($service)", "('checkout', 'search')")
    assert "$" not in sql, f"unexpanded Grafana macro or variable in: {sql}"
    return sql


def _queries(dashboard: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Title -> (format, SQL) of every panel target and variable query."""
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queries[f"{panel['title']} [{target['refId']}]"] = (target["format"], target["rawSql"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries[f"${variable['name']}"] = ("table", variable["query"])
    return queries


@pytest.fixture
def dsn(postgres_dsn: str) -> str:
    reset_rollup_schema(postgres_dsn)
    now = int(time.time() * 1000) - 120_000
    rows = [("checkout", 2_000_000_000, None), ("search", 500_000_000, None), ("search", 0, "E")]
    records = [
        cost_record(
            i + 1,
            service=service,
            operation="GET /x",
            cost_amount=from_nanos(nanos),
            duration_ms=12.0,
            timestamp=now - i * 86_400_000,
            error=error,
        )
        for i, (service, nanos, error) in enumerate(rows)
    ]
    roll_up(postgres_dsn, records)
    return postgres_dsn


def test_dashboard_shape() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for wanted in ("cost per service per day", "top operations", "unpriced share"):
        assert wanted in titles
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["format"] in ("table", "time_series")
            assert re.search(r"\botelcost\.cost_(minute|daily)\b", target["rawSql"])


def test_every_query_runs_against_the_rollup_schema(dsn: str) -> None:
    queries = _queries(json.loads(DASHBOARD.read_text()))
    results = {}
    with psycopg.connect(dsn) as conn:
        for name, (fmt, sql) in queries.items():
            cursor = conn.execute(_expand(sql))
            columns = [column.name for column in cursor.description or ()]
            results[name] = (columns, cursor.fetchall())
            if fmt == "time_series":
                assert columns == ["time", "metric", "value"], name
    columns, rows = results["Cost per service per day ($currency) [A]"]
    assert sorted((metric, float(value)) for _, metric, value in rows) == [
        ("checkout", 2.0),  # today
        ("search", 0.0),  # two days ago: unpriced only
        ("search", 0.5),  # yesterday
    ]
    columns, rows = results["Top operations by cost ($currency) [A]"]
    assert [row[:3] for row in rows] == [("checkout", "GET /x", 2), ("search", "GET /x", 0.5)]
    assert float(rows[1][columns.index("unpriced_pct")]) == 50.0
    [(unpriced,)] = results["Unpriced share of spans [A]"][1]
    assert float(unpriced) == pytest.approx(100 / 3)
    assert sorted(results["$service"][1]) == [("checkout",), ("search",)]


@pytest.fixture
def deploys(postgres_dsn: str) -> str:
    """Two deploys of three services; v2 of checkout takes twice as long per request."""
    from _billing import DAY, SERVICES, TABLE, workload
    from _postgres import roll_up

    reset_rollup_schema(postgres_dsn)
    now = int(time.time() * 1000)
    start = now - now % DAY - 2 * DAY
    offset = 0
    for day, version, load in ((0, "v1", {}), (1, "v2", {"checkout": 2.0})):
        deploy = {"service.version": version, "deployment.environment.name": "prod"}
        records = workload(
            TABLE, start + day * DAY, 1, per_day=6, load=load,
            resources=dict.fromkeys(SERVICES, deploy),
        )  # fmt: skip
        roll_up(postgres_dsn, records, first_offset=offset)
        offset += len(records)
    return postgres_dsn


def test_the_deploy_panels_show_the_version_that_made_requests_more_expensive(
    deploys: str,
) -> None:
    queries = _queries(json.loads(DASHBOARD.read_text()))
    with psycopg.connect(deploys) as conn:
        series = conn.execute(_expand(queries["Cost per request by version ($currency) [A]"][1]))
        by_metric: dict[str, list[float]] = {}
        for _, metric, value in series.fetchall():
            by_metric.setdefault(metric, []).append(float(value))
        cursor = conn.execute(_expand(queries["Cost per request per deploy ($currency) [A]"][1]))
        columns = [column.name for column in cursor.description or ()]
        table = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    assert set(by_metric) == {"checkout v1", "checkout v2", "search v1", "search v2"}
    assert min(by_metric["checkout v2"]) > max(by_metric["checkout v1"]) * 1.2
    change = {(row["service"], row["version"]): row["change_pct"] for row in table}
    assert change[("checkout", "v1")] is None  # the first deploy seen
    assert float(change[("checkout", "v2")]) > 20
    assert float(change[("search", "v2")]) == 0
    assert [row["requests"] for row in table if row["service"] == "checkout"] == [6, 6]
