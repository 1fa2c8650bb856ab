"""docs/pricing.md "What a price applies to": the worked example is what the rule charges."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from otelcost.money import to_nanos
from otelcost.pricing import PricingTable

SECTION = "## What a price applies to"
TEXT = (Path(__file__).resolve().parents[1] / "docs" / "pricing.md").read_text(encoding="utf-8")
BODY = TEXT[TEXT.index(SECTION) :].split("\n## ", 1)[0]
END_MS = 1_780_000_000_000


def table() -> PricingTable:
    (block,) = re.findall(r"^```json\n(.*?)^```", BODY, re.S | re.M)
    return PricingTable.parse(json.loads(block))


def rows() -> list[list[str]]:
    lines = [line for line in BODY.splitlines() if line.startswith("| `")]
    return [[cell.strip().strip("`") for cell in line.strip("|").split("|")] for line in lines]


@pytest.mark.parametrize("row", rows(), ids=lambda r: r[0])
def test_each_row_is_what_the_rule_charges(row: list[str]) -> None:
    operation, entry, ms, usage, key, pays = row
    match = table().match("checkout", operation)
    assert match is not None and match.key == key
    tokens = int(usage.split()[0]) if usage else 0
    attributes = {"gen_ai.usage.input_tokens": tokens} if tokens else {}
    charge = match.charge(
        entry=entry == "yes", duration_ms=float(ms), attributes=attributes, end_ms=END_MS
    )
    if pays == "not billable":
        assert charge is None
    else:
        assert charge is not None and charge.nanos == to_nanos(float(pays))


def test_the_request_total_and_the_old_rule_are_as_the_text_says() -> None:
    prices = table()
    total = 0
    old_requests, old_ms = 0, 0.0
    for operation, entry, ms, usage, key, _ in rows():
        match = prices.match("checkout", operation)
        assert match is not None
        tokens = int(usage.split()[0]) if usage else 0
        attributes = {"gen_ai.usage.input_tokens": tokens} if tokens else {}
        charge = match.charge(
            entry=entry == "yes", duration_ms=float(ms), attributes=attributes, end_ms=END_MS
        )
        total += 0 if charge is None else charge.nanos
        if key == "checkout:*":  # the bare key used to charge every span it matched in full
            old_requests += 1
            old_ms += float(ms)
    assert total == to_nanos(0.00561)
    assert "The request costs 0.00281 + 0.0003 + 0.0025 = 0.00561" in BODY
    assert (old_requests, old_ms) == (5, 2_321.0)
    assert "five requests instead of one, 2,321 ms instead of 1,400" in " ".join(BODY.split())
