"""Numbers in the docs that come from the code are recomputed, so the docs cannot drift."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from otelcost.budget.model import Budget
from otelcost.budget.policy import BudgetState, evaluate

DOCS = Path(__file__).resolve().parents[1] / "docs"
_HOUR_MS = 3_600_000
_T0 = 1_764_234_000_000 - 1_764_234_000_000 % _HOUR_MS  # on a bucket and window boundary


def budget(window: int = 60, alpha: float = 0.1, consecutive: int = 3, **kw: float) -> Budget:
    return Budget(
        "svc", 500.0, period="24h", window=window, ema_alpha=alpha,
        consecutive=consecutive, hard_cap=False, **kw,
    )  # fmt: skip


def simulate(b: Budget, k: float, spend_s: int, total_s: int, step: int) -> Iterator[bool]:
    """Throttle decisions, one per evaluation every ``step`` s, for k x the budget's rate
    during the first ``spend_s`` seconds and nothing after."""
    states = [BudgetState()]
    per_step = round(k * b.limit_nanos * step * 1000 / b.spec.ms)
    for t in range(step, total_s + 1, step):
        yield evaluate([b], states, _T0 + t * 1000, per_step if t <= spend_s else 0).throttled


def reaction_seconds(k: float, *, window: int, alpha: float, consecutive: int) -> int:
    """Seconds from the start of a sustained k x overspend until the EMA throttles."""
    decisions = simulate(budget(window, alpha, consecutive), k, 24 * 3600, 24 * 3600, 1)
    return next(i for i, throttled in enumerate(decisions, start=1) if throttled)


def shown(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"


def reaction_rows() -> list[list[str]]:
    text = (DOCS / "budgets.md").read_text(encoding="utf-8")
    header = "| window | ema_alpha | consecutive | 1.5\u00d7 | 2\u00d7 | 5\u00d7 | 10\u00d7 |"
    table = text[text.index(header) :].split("\n\n", 1)[0].splitlines()[2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in table]


@pytest.mark.parametrize("row", reaction_rows(), ids=lambda r: "/".join(r[:3]))
def test_budget_reaction_table_matches_the_policy(row: list[str]) -> None:
    window = int(row[0].removesuffix(" s"))
    alpha = float(row[1])
    consecutive = int(re.match(r"\d+", row[2]).group())  # type: ignore[union-attr]
    computed = [
        shown(reaction_seconds(k, window=window, alpha=alpha, consecutive=consecutive))
        for k in (1.5, 2, 5, 10)
    ]
    assert row[3:] == computed


def table(title: str) -> list[list[str]]:
    """The rows of the first Markdown table after the line containing ``title``."""
    text = (DOCS / "budgets.md").read_text(encoding="utf-8")
    after = text[text.index(title) :].split("\n|", 1)[1]
    lines = ("|" + after).split("\n\n", 1)[0].splitlines()[2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in lines]


@pytest.mark.parametrize(
    "row", table("**Bursts** the EMA tolerates"), ids=lambda r: "/".join(r[:2])
)
def test_budget_burst_table_matches_the_policy(row: list[str]) -> None:
    b = budget(alpha=float(row[0]), consecutive=int(row[1]))
    tolerated = []
    for k in (2, 5, 10):
        minutes = 0
        while not any(simulate(b, k, (minutes + 1) * 60, (minutes + 61) * 60, 5)):
            minutes += 1
        tolerated.append(f"{minutes} min" if minutes else "none")
    assert row[2:] == tolerated


@pytest.mark.parametrize(
    "row", table("**Release** after 30 minutes"), ids=lambda r: "/".join(r[:3])
)
def test_budget_release_table_matches_the_policy(row: list[str]) -> None:
    b = budget(alpha=float(row[0]), release_windows=int(row[1]), release_ratio=float(row[2]))
    released = []
    for k in (2, 5, 10):
        decisions = list(simulate(b, k, 1800, 4 * 3600, 5))
        last = len(decisions) - decisions[::-1].index(True)  # evaluations until released
        released.append(f"{(last * 5 + 5 - 1800) // 60} min")
    assert row[3:] == released
