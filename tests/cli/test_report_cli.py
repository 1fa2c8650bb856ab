"""``otelcost report`` against a real redis-server: JSON shape, table, filters, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from _servers import free_port
from otelcost.budget import Budget, RedisBudgetStore
from otelcost.cli import main

UNIT = 1_000_000_000


@pytest.fixture
def state(redis_client: redis.Redis) -> None:
    store = RedisBudgetStore(
        redis_client,
        [Budget("payment-svc", 500, "24h"), Budget("payment-svc", 10, "1h"), Budget("search", 1)],
    )
    store.apply("payment-svc", 12_500_000_000)
    store.apply("search", 2 * UNIT)


def test_json_shape(state: None, redis_server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--redis-url", redis_server.url, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    payment, search = doc["services"]
    assert payment["service"] == "payment-svc"
    assert payment["throttled"] is True
    # hard cap of the 1h budget: released when the current 5-minute bucket leaves the hour
    assert 55 * 60 - 5 < payment["throttle_ttl"] <= 60 * 60
    assert [b["period"] for b in payment["budgets"]] == ["1h", "24h"]
    day = payment["budgets"][1]
    assert {k: day[k] for k in ("period", "limit", "spend", "utilization", "consecutive_over")} == {
        "period": "24h",
        "limit": 500.0,
        "spend": 12.5,
        "utilization": 0.025,
        "consecutive_over": 0,
    }
    assert day["ema_rate"] == 0.0
    assert payment["budgets"][0]["throttling"] == "hard_cap"
    assert search["throttled"] is True


def test_service_filter_and_env_url(
    state: None,
    redis_server: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTELCOST_REDIS_URL", redis_server.url)
    assert main(["report", "--json", "--service", "search"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["service"] for s in doc["services"]] == ["search"]
    assert doc["services"][0]["budgets"][0]["spend"] == 2.0


def test_table(state: None, redis_server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--redis-url", redis_server.url]) == 0
    out = capsys.readouterr().out
    assert "payment-svc" in out
    assert "search" in out
    assert "YES" in out
    assert "[hard_cap]" in out  # reasons are text, not rich markup
    assert "12.5" in out


def test_a_budget_that_does_not_throttle_names_the_one_that_does(
    state: None, redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--redis-url", redis_server.url, "--service", "payment-svc"]) == 0
    rows = {line.split("│")[2].strip(): line for line in capsys.readouterr().out.splitlines()
            if "payment-svc" in line}  # fmt: skip
    assert "[hard_cap]" in rows["1h"]
    assert "by the 1h budget" in rows["24h"] and "[" not in rows["24h"]
    # No evaluation window has closed yet: the burn rate is not "0.00" (not spending).
    assert all("pending (first window)" in row for row in rows.values())


def test_empty(
    redis_client: redis.Redis, redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--redis-url", redis_server.url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"services": []}


def test_unreachable_redis_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    assert main(["report", "--redis-url", url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(
        "otelcost report: cannot read budgets from redis://***@127.0.0.1"
    )
    assert "s3cret" not in captured.err
    assert "Traceback" not in captured.err


def test_missing_url(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTELCOST_REDIS_URL", raising=False)
    assert (
        main(
            [
                "report",
            ]
        )
        == 1
    )
    assert "--redis-url" in capsys.readouterr().err
