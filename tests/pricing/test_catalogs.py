"""GenAI spans priced from a catalog; usage tiers; GenAI usage read under every name."""

from __future__ import annotations

import contextvars
import decimal
import importlib.util
import os
import signal
from decimal import Decimal
from typing import Any

import pytest

from _genai_prices import calc_price_nanos
from otelcost.errors import PricingError, PricingNotFoundError
from otelcost.pricing import PricingTable
from otelcost.pricing._genai import GenAIUsage, read_usage
from otelcost.pricing.catalogs import decimal_to_nanos

END_MS = 1_780_000_000_000  # 2026-05-28
needs_genai_prices = pytest.mark.skipif(
    importlib.util.find_spec("genai_prices") is None, reason="genai-prices needs Python 3.11+"
)


def expected_nanos(model: str, provider: str | None, end_ms: int = END_MS, **usage: int) -> int:
    return calc_price_nanos(model, provider, end_ms, **usage)


CATALOG_DOC = {
    "version": "t1",
    "currency": "USD",
    "prices": {"*:chat *": {"catalog": "genai-prices"}, "*:*": {"per_ms": 1e-6}},
}


@pytest.fixture(scope="module")
def catalog_table() -> PricingTable:
    pytest.importorskip("genai_prices")  # not on Python 3.10 (genai-prices needs 3.11)
    return PricingTable.parse(CATALOG_DOC)


def charge(table: PricingTable, attrs: dict[str, Any], *, entry: bool = True) -> Any:
    op = f"chat {attrs.get('gen_ai.request.model', 'x')}"
    match = table.match("svc", op)
    assert match is not None
    return match.charge(entry=entry, duration_ms=120.0, attributes=attrs, end_ms=END_MS)


def span(model: str, provider: str = "openai", **usage: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "gen_ai.provider.name": provider,
    }
    attrs.update({f"gen_ai.usage.{k}": v for k, v in usage.items()})
    return attrs


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o-2024-08-06", "openai"),
        ("gpt-4o-mini", "openai"),
        ("claude-sonnet-4-5-20250929", "anthropic"),
        ("claude-sonnet-4-5", "anthropic"),
    ],
)
def test_catalog_price_is_calc_price_to_the_nano(
    model: str, provider: str, catalog_table: PricingTable
) -> None:
    attrs = span(model, provider, input_tokens=12_345, output_tokens=678)
    attrs["gen_ai.usage.cache_read.input_tokens"] = 2_000
    got = charge(catalog_table, attrs)
    want = expected_nanos(
        model, provider, input_tokens=12_345, output_tokens=678, cache_read_tokens=2_000
    )
    assert got.nanos == want > 0
    assert got.usage == {
        "gen_ai.usage.input_tokens": 12_345.0,
        "gen_ai.usage.output_tokens": 678.0,
        "gen_ai.usage.cache_read.input_tokens": 2_000.0,
    }


def test_catalog_prefers_the_response_model_and_tiers_above_200k(
    catalog_table: PricingTable,
) -> None:
    attrs = span("claude-sonnet-4-5", "anthropic", input_tokens=250_000, output_tokens=1_000)
    attrs["gen_ai.response.model"] = "claude-sonnet-4-5-20250929"
    got = charge(catalog_table, attrs)
    want = expected_nanos(
        "claude-sonnet-4-5-20250929", "anthropic", input_tokens=250_000, output_tokens=1_000
    )
    below = expected_nanos("claude-sonnet-4-5", "anthropic", input_tokens=200_000)
    assert got.nanos == want
    assert want > 250_000 * 3_000  # above the tier the whole call costs $6/MTok, not $3
    assert below == 200_000 * 3_000


def test_older_gen_ai_system_and_unknown_provider_fall_back_to_the_model(
    catalog_table: PricingTable,
) -> None:
    attrs = span("gpt-4o", "nonesuch", input_tokens=100, output_tokens=10)
    assert charge(catalog_table, attrs).nanos == expected_nanos(
        "gpt-4o", "openai", input_tokens=100, output_tokens=10
    )
    attrs = span("gpt-4o", input_tokens=100, output_tokens=10)
    del attrs["gen_ai.provider.name"]
    attrs["gen_ai.system"] = "openai"
    assert charge(catalog_table, attrs).nanos > 0


def test_a_known_provider_prices_only_its_models(catalog_table: PricingTable) -> None:
    # A Llama model served by vLLM behind the openai client: not some host's Llama price.
    with pytest.raises(
        PricingNotFoundError, match=r"'llama-3\.3-70b-versatile' \(provider 'openai'\)"
    ):
        charge(catalog_table, span("llama-3.3-70b-versatile", input_tokens=1, output_tokens=1))
    assert charge(catalog_table, span("llama-3.3-70b-versatile", "groq", input_tokens=1)).nanos


def test_unknown_model_is_not_found_naming_it(catalog_table: PricingTable) -> None:
    with pytest.raises(PricingNotFoundError, match=r"'my-finetune-7'.*genai-prices"):
        charge(catalog_table, span("my-finetune-7", input_tokens=1, output_tokens=1))


def test_no_usage_is_an_error_unless_the_call_failed(catalog_table: PricingTable) -> None:
    with pytest.raises(PricingError, match="include_usage"):
        charge(catalog_table, span("gpt-4o"))
    failed = {**span("gpt-4o"), "error.type": "APIConnectionError"}
    got = charge(catalog_table, failed)
    assert got.nanos == 120 * 1000 * 0  # per_ms of the catalog entry is 0
    assert got.usage == {}


@needs_genai_prices
def test_nested_span_without_usage_is_not_billable_under_a_bare_star_catalog() -> None:
    table = PricingTable.parse({"prices": {"*:*": {"catalog": "genai-prices"}}})
    match = table.match("svc", "GET /x")
    assert match is not None
    assert match.charge(entry=False, duration_ms=1.0, attributes={}, end_ms=END_MS) is None


@needs_genai_prices
def test_catalog_entry_with_per_request_and_dated_catalog() -> None:
    table = PricingTable.parse(
        {
            "prices": {
                "*:chat *": [
                    {"per_unit": {"gen_ai.usage.input_tokens": 1e-6}},
                    {"from": "2026-01-01T00:00:00Z", "catalog": "genai-prices",
                     "per_request": 0.001},
                ]
            }
        }
    )  # fmt: skip
    attrs = span("gpt-4o", input_tokens=1_000, output_tokens=100)
    got = charge(table, attrs)
    assert (
        got.nanos
        == expected_nanos("gpt-4o", "openai", input_tokens=1_000, output_tokens=100) + 1_000_000
    )
    match = table.match("svc", "chat gpt-4o")
    assert match is not None
    old = match.charge(entry=True, duration_ms=1.0, attributes=attrs, end_ms=1_700_000_000_000)
    assert old is not None and old.nanos == 1_000_000


@needs_genai_prices
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"catalog": "litellm-live"}, r"catalog: must be one of genai-prices"),
        ({"catalog": 3}, r"catalog: must be one of"),
        ({"catalog": "genai-prices", "per_unit": {"a": 1}}, r"catalog: .*per_unit cannot"),
    ],
)
def test_bad_catalog_entries(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(PricingError, match=r"prices\['\*:chat \*'\]\." + message):
        PricingTable.parse({"prices": {"*:chat *": entry}})


# --- usage tiers ------------------------------------------------------------------------


def tiered_entry() -> dict[str, Any]:
    tier = [{"above": 200_000, "rate": 6e-6}]
    by = "gen_ai.usage.input_tokens"
    return {
        "per_request": 0.0,
        "per_unit": {
            "gen_ai.usage.input_tokens": {"rate": 3e-6, "tiers": tier},
            "gen_ai.usage.output_tokens": {"rate": 1.5e-5, "by": by,
                                           "tiers": [{"above": 200_000, "rate": 2.25e-5}]},
            "gen_ai.usage.cache_read.input_tokens": {"rate": 3e-7, "by": by,
                                                      "tiers": [{"above": 200_000, "rate": 6e-7}]},
        },
    }  # fmt: skip


@pytest.mark.parametrize("input_tokens", [199_999, 200_000, 200_001, 1_000_000])
def test_tiers_price_the_whole_call_like_genai_prices(input_tokens: int) -> None:
    table = PricingTable.parse({"prices": {"*:chat *": tiered_entry()}})
    attrs = span("claude-sonnet-4-5", "anthropic", input_tokens=input_tokens, output_tokens=500)
    attrs["gen_ai.usage.cache_read.input_tokens"] = 10_000
    got = charge(table, attrs)
    want = expected_nanos(
        "claude-sonnet-4-5", "anthropic",
        input_tokens=input_tokens, output_tokens=500, cache_read_tokens=10_000,
    )  # fmt: skip
    assert got.nanos == want


def test_volume_tiers_on_their_own_attribute() -> None:
    table = PricingTable.parse(
        {"prices": {"*:*": {"per_unit": {"bytes": {"rate": 1e-9, "tiers": [
            {"above": 1000, "rate": 5e-10}, {"above": 10_000, "rate": 1e-10}]}}}}}
    )  # fmt: skip
    match = table.match("s", "op")
    assert match is not None
    costs = [
        match.charge(entry=True, duration_ms=0, attributes={"bytes": n}, end_ms=END_MS).nanos  # type: ignore[union-attr]
        for n in (1000, 1001, 20_000)
    ]
    assert costs == [1000, 500, 2000]  # 500.5 rounds half to even


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        ({"rate": 1, "tiers": []}, r"tiers: must be a non-empty array"),
        ({"tiers": [{"above": 1, "rate": 1}]}, r"\.rate: missing"),
        ({"rate": 1, "tiers": [{"above": 5, "rate": 1}, {"above": 5, "rate": 2}]},
         r"tiers\[1\]\.above: tiers must be in increasing order"),
        ({"rate": 1, "tiers": [{"above": -1, "rate": 1}]}, r"tiers\[0\]\.above: must be a finite"),
        ({"rate": 1, "tiers": [{"above": 1, "rate": "x"}]}, r"tiers\[0\]\.rate: must be a number"),
        ({"rate": 1, "tiers": [{"above": 1}]}, r"tiers\[0\]: must be \{'above'"),
        ({"rate": 1, "tiers": [{"above": 1, "rate": 1}], "by": "other"},
         r"by: 'other' must be priced in per_unit too"),
        ({"rate": 1, "tiers": [{"above": 1, "rate": 1}], "over": 3}, r"unknown field 'over'"),
    ],
)  # fmt: skip
def test_bad_tiers_name_the_key_and_field(rate: dict[str, Any], message: str) -> None:
    with pytest.raises(PricingError, match=r"prices\['s:op'\]\.per_unit\[.*" + message):
        PricingTable.parse({"prices": {"s:op": {"per_unit": {"units": rate}}}})


def test_a_price_part_above_its_total_is_a_pricing_error() -> None:
    table = PricingTable.parse({"prices": {"*:chat *": tiered_entry()}})
    attrs = span("m", input_tokens=10, output_tokens=1)
    attrs["gen_ai.usage.cache_read_input_tokens"] = 500  # read as cache on top of the input
    assert charge(table, attrs).usage["gen_ai.usage.input_tokens"] == 510
    attrs = {**span("m", output_tokens=1), "gen_ai.usage.reasoning_tokens": 5}
    rates = {"gen_ai.usage.output_tokens": 1e-6, "gen_ai.usage.reasoning.output_tokens": 2e-6}
    reasoning = PricingTable.parse({"prices": {"*:*": {"per_unit": rates}}})
    with pytest.raises(PricingError, match="exceed"):
        charge(reasoning, attrs)


def test_exact_at_half_nano_ties() -> None:
    # 0.15 $/MTok x 10 tokens = 1.5 nano-units: the decimal sum rounds half to even (2).
    table = PricingTable.parse({"prices": {"*:*": {"per_unit": {"t": 1.5e-7}}}})
    match = table.match("s", "o")
    assert match is not None
    for tokens in (10, 30, 50, 70):
        got = match.charge(entry=True, duration_ms=0, attributes={"t": tokens}, end_ms=END_MS)
        assert got is not None
        assert got.nanos == decimal_to_nanos(Decimal("1.5E-7") * tokens)


def _priced_in_a_fresh_context(precision: int | None) -> tuple[list[int], bool]:
    """Exact ties and a catalog price, computed in a context of their own (as in a new
    thread or task), with the application's decimal precision set to ``precision``
    first; the nanos, and whether pricing left a decimal context among the context's
    variables."""
    if precision is not None:
        decimal.getcontext().prec = precision
    table = PricingTable.parse({"prices": {"*:*": {"per_unit": {"t": 1.5e-10}}}})
    match = table.match("s", "o")
    assert match is not None
    nanos = []
    for tokens in (10, 30, 123_456_789):
        got = match.charge(entry=True, duration_ms=0, attributes={"t": tokens}, end_ms=END_MS)
        assert got is not None
        nanos.append(got.nanos)
    if importlib.util.find_spec("genai_prices") is not None:
        attrs = span("gpt-4o-mini", "openai", input_tokens=12_345, output_tokens=678)
        nanos.append(charge(PricingTable.parse(CATALOG_DOC), attrs).nanos)
    left = any(var.name == "decimal_context" for var in contextvars.copy_context())
    return nanos, left


def test_pricing_leaves_the_callers_decimal_context_alone() -> None:
    """Pricing runs on the application's threads: its decimals use a context of its own,
    so it creates none among the caller's context variables (each would slow every later
    lookup, OpenTelemetry's current context included) and an application's decimal
    settings do not change a price."""
    nanos, left = contextvars.Context().run(_priced_in_a_fresh_context, None)
    assert not left
    assert nanos[:3] == [2, 4, 18_518_518]  # 1.5 and 4.5 (exact ties, to even), 18,518,518.35
    low_precision, _ = contextvars.Context().run(_priced_in_a_fresh_context, 3)
    assert low_precision == nanos


# --- reading GenAI usage ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "usage"),
    [
        # official OpenAI instrumentation: no cache count at all
        ({"gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 80},
         GenAIUsage(1200, 80, 0, 0, 0)),
        # OpenLLMetry (input includes cache, conventions' names)
        ({"gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 80,
          "gen_ai.usage.cache_read.input_tokens": 300,
          "gen_ai.usage.cache_creation.input_tokens": 50, "gen_ai.usage.reasoning_tokens": 20,
          "gen_ai.usage.total_tokens": 1280},
         GenAIUsage(1200, 80, 300, 50, 20)),
        # anthropic SDK names
        ({"gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 80,
          "gen_ai.usage.cache_read.input_tokens": 300,
          "gen_ai.usage.cache_write.input_tokens": 50,
          "gen_ai.usage.reasoning.output_tokens": 20},
         GenAIUsage(1200, 80, 300, 50, 20)),
        # Anthropic's own input count (without cache), shown by the total
        ({"gen_ai.usage.input_tokens": 850, "gen_ai.usage.output_tokens": 80,
          "gen_ai.usage.cache_read_input_tokens": 300,
          "gen_ai.usage.cache_creation_input_tokens": 50, "gen_ai.usage.total_tokens": 1280},
         GenAIUsage(1200, 80, 300, 50, 0)),
        # ... or by being OpenLIT's Anthropic span
        ({"gen_ai.system": "anthropic", "gen_ai.client.token.usage": 930,
          "gen_ai.usage.input_tokens": 850, "gen_ai.usage.output_tokens": 80,
          "gen_ai.usage.cache_read.input_tokens": 300,
          "gen_ai.usage.cache_creation.input_tokens": 50},
         GenAIUsage(1200, 80, 300, 50, 0)),
        # (OpenLIT's OpenAI spans count cached tokens in the input, as OpenAI does)
        ({"gen_ai.system": "openai", "gen_ai.client.token.usage": 1280,
          "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 80,
          "gen_ai.usage.cache_read.input_tokens": 300},
         GenAIUsage(1200, 80, 300, 0, 0)),
        # ... or by a cache count above the input
        ({"gen_ai.usage.prompt_tokens": 100, "gen_ai.usage.completion_tokens": 5,
          "gen_ai.usage.cache_read.input_tokens": 3000},
         GenAIUsage(3100, 5, 3000, 0, 0)),
        ({"gen_ai.usage.input_tokens": True, "gen_ai.usage.output_tokens": -3}, None),
        ({"gen_ai.usage.input_tokens": 7.0}, GenAIUsage(7, 0, 0, 0, 0)),
        ({"gen_ai.usage.input_tokens": 10**400, "gen_ai.usage.output_tokens": float("nan")}, None),
    ],
)  # fmt: skip
def test_usage_is_read_under_every_name(attrs: dict[str, Any], usage: GenAIUsage | None) -> None:
    assert read_usage(attrs) == usage


def test_describe_and_document_show_tiers_and_catalog() -> None:
    table = PricingTable.parse({"prices": {"*:chat *": tiered_entry()}})
    price = table.resolve("s", "chat x")
    assert price.describe().startswith(
        "per_unit[gen_ai.usage.input_tokens]=3e-06 (above 200000: 6e-06) "
        "per_unit[gen_ai.usage.output_tokens]=1.5e-05 (above 200000: 2.25e-05 by "
        "gen_ai.usage.input_tokens)"
    )
    assert PricingTable.parse({"prices": {"*:*": price.document()}}).resolve("s", "o") == price


@needs_genai_prices
def test_describe_a_catalog_entry() -> None:
    doc = {"catalog": "genai-prices", "per_request": 0.001}
    price = PricingTable.parse({"prices": {"*:*": doc}}).resolve("s", "o")
    assert price.describe() == "catalog=genai-prices per_request=0.001"
    assert price.document() == doc


@needs_genai_prices
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_while_the_catalog_lock_is_held_still_prices(
    catalog_table: PricingTable,
) -> None:
    from otelcost.pricing.catalogs import GenAIPricesCatalog, catalog

    loaded = catalog("genai-prices")
    assert isinstance(loaded, GenAIPricesCatalog)
    with loaded._lock:  # as if the parent's pricing thread were in a lookup
        pid = os.fork()
        if pid == 0:  # the child: a lookup must not wait for the parent's lock
            signal.alarm(20)  # a hang ends the child with SIGALRM, not the test run
            code = 1
            try:
                charge(catalog_table, span("gpt-4o-mini", input_tokens=5, output_tokens=5))
                code = 0
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize(
    ("rates", "nanos"),
    [
        # writes priced, 1-hour writes priced: 30 input, 30 writes, 20 1-hour writes
        ({"input": 1e-6, "write": 2e-6, "write_1h": 4e-6}, 30 * 1000 + 30 * 2000 + 20 * 4000),
        # 1-hour writes priced, other writes not: those stay in the input
        ({"input": 1e-6, "write_1h": 4e-6}, 60 * 1000 + 20 * 4000),
        # only the input priced: every input token at its rate
        ({"input": 1e-6}, 80 * 1000),
    ],
)
def test_each_token_is_charged_once_at_its_most_specific_rate(
    rates: dict[str, float], nanos: int
) -> None:
    names = {
        "input": "gen_ai.usage.input_tokens",
        "write": "gen_ai.usage.cache_creation.input_tokens",
        "write_1h": "anthropic.usage.cache_creation.ephemeral_1h_input_tokens",
    }
    table = PricingTable.parse(
        {"prices": {"*:*": {"per_unit": {names[k]: r for k, r in rates.items()}}}}
    )
    attrs = {
        "gen_ai.usage.input_tokens": 80,
        "gen_ai.usage.cache_write.input_tokens": 50,
        "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": 20,
    }
    assert charge(table, attrs).nanos == nanos
