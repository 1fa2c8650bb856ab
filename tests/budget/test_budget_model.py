"""Budget definitions, budgets files and OTELCOST_BUDGETS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otelcost.budget import PERIODS, Budget, BudgetConfigError, BudgetSet, load_budgets
from otelcost.budget.model import parse_duration


def _write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "budgets.json"
    path.write_text(json.dumps(doc))
    return path


def test_defaults_and_exact_limit() -> None:
    budget = Budget("payment-svc", 500)
    assert (budget.period, budget.window_ms, budget.ema_alpha) == ("24h", 60_000, 0.1)
    assert (budget.consecutive, budget.release_ratio, budget.release_windows) == (3, 0.8, 5)
    assert budget.hard_cap is True
    assert budget.limit_nanos == 500_000_000_000
    assert Budget("s", 0.1).limit_nanos == 100_000_000


def test_periods_and_their_buckets() -> None:
    assert {name: p.buckets for name, p in PERIODS.items()} == {
        "1h": 12,
        "24h": 24,
        "7d": 28,
        "30d": 30,
    }
    for period in PERIODS.values():
        assert period.ms % period.bucket_ms == 0


@pytest.mark.parametrize(
    ("value", "ms"), [(60, 60_000), (0.5, 500), ("30s", 30_000), ("5m", 300_000), ("1h", 3_600_000)]
)
def test_durations(value: str | float, ms: int) -> None:
    assert parse_duration(value) == ms


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"limit": -5}, "limit must be a number > 0"),
        ({"limit": 0}, "limit must be a number > 0"),
        ({"limit": float("nan")}, "limit must be a number > 0"),
        ({"limit": "500"}, "limit must be a number, got '500'"),
        ({"limit": True}, "limit must be a number"),
        ({"limit": 1e13}, "<= 1e+12"),
        ({"period": "1d"}, "unknown period '1d' (expected one of 1h, 24h, 7d, 30d)"),
        ({"window": "soon"}, "window: not a duration"),
        ({"window": 0.5}, "window must be between 1s and the period"),
        ({"period": "1h", "window": "2h"}, "window must be between 1s and the period"),
        ({"ema_alpha": 0}, "ema_alpha must be in [0.001, 1]"),
        ({"ema_alpha": 1.5}, "ema_alpha must be in [0.001, 1]"),
        ({"release_ratio": 0}, "release_ratio must be in (0.0, 1]"),
        ({"consecutive": 0}, "consecutive must be an integer"),
        ({"release_windows": 2.5}, "release_windows must be an integer"),
        ({"hard_cap": "yes"}, "hard_cap must be true or false"),
    ],
)
def test_invalid_budget_names_service_and_field(fields: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"service": "payment-svc", "limit": 500, **fields}
    with pytest.raises(BudgetConfigError) as info:
        Budget(**args)  # type: ignore[arg-type]
    assert "payment-svc" in str(info.value)
    assert message in str(info.value)


def test_budgets_file_round_trip(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "budgets": [
                {"service": "payment-svc", "limit": 500, "period": "24h"},
                {"service": "*", "limit": 50.5, "period": "1h", "window": "30s"},
            ]
        },
    )
    budgets = load_budgets(path)
    assert [b.service for b in budgets.budgets] == ["payment-svc", "*"]
    assert budgets.budgets[1].window_ms == 30_000
    assert load_budgets(str(path)).budgets == budgets.budgets


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"service": "payment-svc", "limit": -5}, "budgets[0] (service 'payment-svc'): limit"),
        ({"service": "payment-svc", "limit": 5, "period": "1w"}, "unknown period '1w'"),
        ({"service": "payment-svc", "limit": "lots"}, "limit must be a number, got 'lots'"),
        ({"service": "payment-svc", "limit": None}, "limit must be a number, got None"),
        ({"service": "payment-svc", "limit": 5, "burst": 2}, "unknown key 'burst'"),
        ({"limit": 5}, "budgets[0]: missing 'service'"),
        ({"service": "payment-svc"}, "missing 'limit'"),
        ("payment-svc", "expected an object"),
    ],
)
def test_invalid_budgets_file_is_rejected_naming_the_entry(
    tmp_path: Path, entry: object, message: str
) -> None:
    path = _write(tmp_path, {"budgets": [entry]})
    with pytest.raises(BudgetConfigError) as info:
        load_budgets(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"budget": []}', "unknown key 'budget'"),
        ('{"budgets": {}}', "'budgets' must be a list"),
        ("[]", "expected an object"),
    ],
)
def test_malformed_budgets_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "budgets.json"
    path.write_text(content)
    with pytest.raises(BudgetConfigError, match="budgets file") as info:
        load_budgets(path)
    assert message in str(info.value)


def test_missing_file_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(BudgetConfigError, match="No such file"):
        load_budgets(tmp_path / "absent.json")
    path = _write(
        tmp_path,
        {"budgets": [{"service": "a", "limit": 1}, {"service": "a", "limit": 2}]},
    )
    with pytest.raises(BudgetConfigError, match="two budgets for service 'a' and period '24h'"):
        load_budgets(path)


def test_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTELCOST_BUDGETS", raising=False)
    assert not load_budgets(None)
    path = _write(tmp_path, {"budgets": [{"service": "a", "limit": 1}]})
    monkeypatch.setenv("OTELCOST_BUDGETS", str(path))
    assert [b.service for b in load_budgets(None).budgets] == ["a"]


def test_specific_budget_overrides_wildcard_per_period() -> None:
    budgets = BudgetSet(
        [
            Budget("*", 100, "24h"),
            Budget("*", 10, "1h"),
            Budget("payment-svc", 500, "24h"),
        ]
    )
    assert [(b.service, b.period) for b in budgets.for_service("payment-svc")] == [
        ("*", "1h"),
        ("payment-svc", "24h"),
    ]
    assert [(b.service, b.period) for b in budgets.for_service("other")] == [
        ("*", "1h"),
        ("*", "24h"),
    ]
    assert budgets.smallest_limit_nanos("payment-svc") == 10_000_000_000
    assert BudgetSet([Budget("a", 1)]).for_service("b") == ()
    assert BudgetSet().smallest_limit_nanos("a") is None
