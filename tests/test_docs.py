"""Numbers in the docs that come from the code are recomputed, so the docs cannot drift."""

from __future__ import annotations

import importlib.util
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


# --- docs/pricing.md: usage tiers, GenAI usage and catalogs ------------------------------


def _pricing_json_blocks(first_section: str) -> list[dict[str, object]]:
    import json

    text = (DOCS / "pricing.md").read_text(encoding="utf-8")
    text = text[text.index(first_section) :]
    return [json.loads(b) for b in re.findall(r"^```json\n(.*?)^```", text, re.S | re.M)]


def test_the_tier_and_catalog_tables_of_the_docs_load() -> None:
    from otelcost.pricing import PricingTable

    tiers, catalog = _pricing_json_blocks("## Usage tiers")
    match = PricingTable.parse(tiers).match("chat-api", "chat claude-sonnet-4-5-20250929")
    assert match is not None and match.key == "*:chat claude-sonnet-4-5*"
    if importlib.util.find_spec("genai_prices") is not None:  # Python 3.11+
        assert len(PricingTable.parse(catalog)) == 3


def test_the_docs_catalog_entry_prices_like_calc_price() -> None:
    from datetime import datetime, timezone

    from otelcost.pricing import PricingTable
    from otelcost.pricing.catalogs import decimal_to_nanos

    genai_prices = pytest.importorskip("genai_prices")
    _, catalog = _pricing_json_blocks("## Usage tiers")
    match = PricingTable.parse(catalog).match("chat-api", "chat gpt-4o")
    assert match is not None
    end_ms = 1_780_000_000_000
    span = {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 80,
        "gen_ai.usage.cache_read.input_tokens": 300,
    }
    charge = match.charge(entry=False, duration_ms=700.0, attributes=span, end_ms=end_ms)
    when = datetime.fromtimestamp(end_ms / 1000, tz=timezone.utc)
    usage = genai_prices.Usage(input_tokens=1200, output_tokens=80, cache_read_tokens=300)
    calc = genai_prices.calc_price(usage, "gpt-4o-2024-08-06", genai_request_timestamp=when)
    assert charge is not None and charge.nanos == decimal_to_nanos(calc.total_price)
    # The error the docs quote is the one a span gets (the docs' text wraps lines).
    unknown = {**span, "gen_ai.response.model": "my-finetune"}
    with pytest.raises(LookupError) as error:
        match.charge(entry=False, duration_ms=1.0, attributes=unknown, end_ms=end_ms)
    text = " ".join((DOCS / "pricing.md").read_text(encoding="utf-8").split())
    assert f'"pricing_not_found: {error.value}"' in text


# --- docs/pricing.md: dated prices ------------------------------------------------------------


def test_the_dated_table_of_the_docs_checks_as_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from otelcost.cli import main

    text = (DOCS / "pricing.md").read_text(encoding="utf-8")
    section = text[text.index("## Dated prices") : text.index("## Matching")]
    (table,) = re.findall(r"^```json\n(.*?)^```", section, re.S | re.M)
    (console,) = re.findall(r"^```console\n(.*?)^```", section, re.S | re.M)
    command, *shown = console.splitlines()
    assert command == "$ otelcost pricing check prices.json"
    (tmp_path / "prices.json").write_text(table)
    assert main(["pricing", "check", str(tmp_path / "prices.json")]) == 0
    assert capsys.readouterr().out.splitlines() == shown
