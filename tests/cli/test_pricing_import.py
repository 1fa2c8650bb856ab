"""``otelcost pricing import``: static tables from genai-prices and LiteLLM's JSON format,
charging what the catalog charges, and passing ``otelcost pricing check``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from _genai_prices import calc_price_nanos
from otelcost.cli import main
from otelcost.pricing import PricingTable

LITELLM = Path(__file__).resolve().parents[1] / "data" / "litellm_model_prices.json"
OPENLIT = Path(__file__).resolve().parents[1] / "data" / "openlit_pricing.json"
END_MS = 1_780_000_000_000


def run_import(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "imported.json"
    assert main(["pricing", "import", *args, "--out", str(out)]) == 0
    assert main(["pricing", "check", str(out)]) == 0
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def cost(table: PricingTable, model: str, attrs: dict[str, Any]) -> int:
    match = table.match("svc", f"chat {model}")
    assert match is not None, model
    charge = match.charge(entry=False, duration_ms=5.0, attributes=attrs, end_ms=END_MS)
    assert charge is not None
    return charge.nanos


def usage_attrs(u: dict[str, int]) -> dict[str, int]:
    names = {
        "input_tokens": "gen_ai.usage.input_tokens",
        "output_tokens": "gen_ai.usage.output_tokens",
        "cache_read_tokens": "gen_ai.usage.cache_read.input_tokens",
        "cache_write_tokens": "gen_ai.usage.cache_creation.input_tokens",
    }
    return {names[k]: v for k, v in u.items()}


CALLS = [
    ("gpt-4o", "openai", {"input_tokens": 1200, "output_tokens": 80, "cache_read_tokens": 300}),
    ("gpt-4o-2024-08-06", "openai", {"input_tokens": 7, "output_tokens": 3}),
    ("gpt-4o-mini", "openai", {"input_tokens": 10_001, "output_tokens": 999}),
    ("claude-sonnet-4-5", "anthropic",
     {"input_tokens": 1200, "output_tokens": 80, "cache_read_tokens": 300,
      "cache_write_tokens": 50}),
    ("claude-sonnet-4-5-20250929", "anthropic",
     {"input_tokens": 250_000, "output_tokens": 2_000, "cache_read_tokens": 40_000}),
]  # fmt: skip


def expected(model: str, provider: str, usage: dict[str, int]) -> int:
    return calc_price_nanos(model, provider, END_MS, **usage)


@pytest.mark.parametrize(("model", "provider", "usage"), CALLS)
def test_genai_prices_import_charges_what_calc_price_charges(
    tmp_path: Path, model: str, provider: str, usage: dict[str, int]
) -> None:
    pytest.importorskip("genai_prices")
    doc = run_import(tmp_path, "--from", "genai-prices", "--provider", "openai",
                     "--provider", "anthropic")  # fmt: skip
    assert doc["currency"] == "USD" and doc["version"].startswith("genai-prices-")
    table = PricingTable.parse(doc)
    assert cost(table, model, usage_attrs(usage)) == expected(model, provider, usage)


@pytest.mark.parametrize(("model", "provider", "usage"), CALLS)
def test_litellm_import_charges_what_calc_price_charges(
    tmp_path: Path, model: str, provider: str, usage: dict[str, int]
) -> None:
    doc = run_import(tmp_path, "--from", "litellm", str(LITELLM), "--version", "litellm-2026-12")
    assert doc["version"] == "litellm-2026-12"
    table = PricingTable.parse(doc)
    assert cost(table, model, usage_attrs(usage)) == expected(model, provider, usage)


OPENLIT_CALLS = [c for c in CALLS if c[2]["input_tokens"] <= 200_000]  # OpenLIT has no tiers


@pytest.mark.parametrize(("model", "provider", "usage"), OPENLIT_CALLS)
def test_openlit_import_charges_what_calc_price_charges(
    tmp_path: Path, model: str, provider: str, usage: dict[str, int]
) -> None:
    doc = run_import(tmp_path, "--from", "openlit", str(OPENLIT))
    table = PricingTable.parse(doc)
    assert cost(table, model, usage_attrs(usage)) == expected(model, provider, usage)
    assert "*:embeddings text-embedding-3-small" in doc["prices"]


def test_litellm_import_keys_modes_and_tiers(tmp_path: Path) -> None:
    doc = run_import(tmp_path, "--from", "litellm", str(LITELLM))
    prices = doc["prices"]
    assert "*:embeddings text-embedding-3-small" in prices
    assert not any("dall-e" in key for key in prices)  # images are not token prices
    tiered = prices["*:chat claude-sonnet-4-5"]["per_unit"]["gen_ai.usage.output_tokens"]
    assert tiered == {
        "rate": 1.5e-05,
        "tiers": [{"above": 200000, "rate": 2.25e-05}],
        "by": "gen_ai.usage.input_tokens",
    }
    only = run_import(tmp_path, "--from", "litellm", str(LITELLM), "--provider", "bedrock")
    assert list(only["prices"]) == ["*:chat bedrock/anthropic.claude-3-5-haiku-20241022-v1:0"]


def test_genai_prices_dated_prices_become_a_schedule(tmp_path: Path) -> None:
    pytest.importorskip("genai_prices")
    doc = run_import(tmp_path, "--from", "genai-prices")
    dated = [v for v in doc["prices"].values() if isinstance(v, list)]
    assert dated and all("from" in item for entry in dated for item in entry[1:])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "litellm"], "--from litellm needs its JSON FILE"),
        (["--from", "openlit", "{empty}", "--provider", "x"], "has no providers"),
        (["--from", "openlit", "{empty}"], "must have a 'chat' object"),
        (["--from", "genai-prices", "x.json"], "reads the installed catalog, not a FILE"),
        (["--from", "genai-prices", "--provider", "nonesuch"], "unknown provider(s) nonesuch"),
        (["--from", "litellm", "{missing}"], "No such file"),
        (["--from", "litellm", "{empty}"], "no model with a token price"),
    ],
)
def test_import_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    pytest.importorskip("genai_prices")
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    args = [a.format(missing=tmp_path / "nope.json", empty=empty) for a in args]
    assert main(["pricing", "import", *args]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
