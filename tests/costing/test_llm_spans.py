"""GenAI spans as instrumentations really emit them, priced through the real processor.

The real ``openai`` and ``anthropic`` clients call a local mock API (``tests/costing/_llm_api.py``,
plain and streamed responses, cached tokens, dated model ids, a call above 200K input
tokens) under the official OpenAI instrumentation, OpenLLMetry's OpenAI and Anthropic
instrumentations and the anthropic SDK's own tracing. Every call's charge must equal
``genai_prices.calc_price`` of its usage to the nano-unit, once per call, whether the table
uses the catalog or was imported from it (genai-prices or LiteLLM's format).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _llm_api import LLMApi, Usage
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from _genai_prices import calc_price_nanos
from otelcost import CostRecord, CostSpanProcessor
from otelcost.exporters import InMemoryCostExporter
from otelcost.pricing.imports import from_genai_prices, from_litellm

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("genai_prices") is None, reason="genai-prices needs Python 3.11+"
)

LITELLM = Path(__file__).resolve().parents[1] / "data" / "litellm_model_prices.json"
CACHED = Usage(
    input=1200, output=80, cache_read=300, cache_write=50, reasoning=20, cache_write_1h=20
)
LONG = Usage(input=250_000, output=2_000, cache_read=10_000)  # above the 200K tier


def table(path: str) -> dict[str, Any]:
    if path == "catalog":
        return {"version": "catalog", "currency": "USD",
                "prices": {"*:chat *": {"catalog": "genai-prices"}}}  # fmt: skip
    if path == "genai-prices":
        return from_genai_prices(providers=["openai", "anthropic"]).document
    import json

    return from_litellm(json.loads(LITELLM.read_text())).document


class Run:
    """A TracerProvider whose spans go through CostSpanProcessor into memory."""

    def __init__(self, pricing: dict[str, Any]) -> None:
        self.costs = InMemoryCostExporter(max_records=None)
        self.processor = CostSpanProcessor(pricing, [self.costs])
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "llm-app"}), shutdown_on_exit=False
        )
        self.provider.add_span_processor(self.processor)
        self._seen = 0

    def new_records(self) -> list[CostRecord]:
        assert self.processor.force_flush(30_000)
        records = self.costs.records
        new, self._seen = records[self._seen :], len(records)
        return new

    def close(self) -> None:
        self.provider.shutdown()


def expected(record: CostRecord, model: str, provider: str, **usage: int) -> int:
    return calc_price_nanos(model, provider, record.timestamp, **usage)


def charged(records: list[CostRecord]) -> list[CostRecord]:
    """The records that carry a charge (duplicates of a call are not billable)."""
    return [r for r in records if r.error is None and r.cost_amount > 0]


@pytest.fixture(scope="module")
def api() -> Iterator[LLMApi]:
    with LLMApi() as server:
        yield server


PATHS = ["catalog", "genai-prices", "litellm"]


def _messages(usage: Usage) -> list[dict[str, str]]:
    return [{"role": "user", "content": usage.prompt()}]


# --- OpenAI ------------------------------------------------------------------------------


@pytest.fixture(params=["openai-v2", "openllmetry"])
def openai_run(request: pytest.FixtureRequest) -> Iterator[tuple[str, Run, Any]]:
    yield from _instrumented(request, "openai")


def _instrumented(request: pytest.FixtureRequest, which: str) -> Iterator[tuple[str, Run, Any]]:
    flavour = request.param
    path = request.node.callspec.params["path"]
    run = Run(table(path))
    if which == "openai" and flavour == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as V2

        instrumentor: Any = V2()
    elif which == "openai":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        instrumentor = OpenAIInstrumentor()
    else:
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

        instrumentor = AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=run.provider)
    try:
        yield flavour, run, instrumentor
    finally:
        instrumentor.uninstrument()
        run.close()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_openai_chat_is_charged_what_calc_price_says(
    api: LLMApi, openai_run: tuple[str, Run, Any], path: str, stream: bool
) -> None:
    import openai

    flavour, run, _ = openai_run
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key="test", max_retries=0)
    for model, usage in (("gpt-4o", CACHED), ("gpt-4o-mini", LONG)):
        if stream:
            chunks = client.chat.completions.create(
                model=model, messages=_messages(usage), stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True},
            )  # fmt: skip
            for _ in chunks:
                pass
        else:
            client.chat.completions.create(model=model, messages=_messages(usage))  # type: ignore[arg-type]
        (record,) = run.new_records()
        assert record.error is None, record.error
        assert record.operation == f"chat {model}"
        # The official instrumentation records no cached tokens: charged as plain input.
        # OpenLLMetry records them (and reasoning tokens, outside streams).
        known_cache = flavour == "openllmetry"
        assert record.cost_nanos == expected(
            record,
            f"{model}-2024-08-06" if model == "gpt-4o" else f"{model}-2024-07-18",
            "openai",
            input_tokens=usage.input,
            output_tokens=usage.output,
            cache_read_tokens=usage.cache_read if known_cache else 0,
        )
        assert record.cost_nanos > 0


@pytest.mark.parametrize("path", PATHS)
def test_openai_stream_without_usage_and_unknown_model_are_unpriced_with_a_reason(
    api: LLMApi, openai_run: tuple[str, Run, Any], path: str
) -> None:
    import openai

    _, run, _ = openai_run
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key="test", max_retries=0)
    for _ in client.chat.completions.create(
        model="gpt-4o",
        messages=_messages(CACHED),
        stream=True,  # type: ignore[arg-type]
    ):
        pass
    (record,) = run.new_records()
    assert record.error is not None and "include_usage" in record.error
    assert record.cost_amount == 0
    client.chat.completions.create(model="unknown-model-7", messages=_messages(CACHED))  # type: ignore[arg-type]
    (record,) = run.new_records()
    assert record.error is not None and record.error.startswith("pricing_not_found")
    assert "unknown-model-7" in record.error


# --- Anthropic ---------------------------------------------------------------------------


@pytest.fixture(params=["sdk", "sdk+openllmetry"])
def anthropic_run(request: pytest.FixtureRequest) -> Iterator[tuple[str, Run, Any]]:
    flavour = request.param
    path = request.node.callspec.params["path"]
    run = Run(table(path))
    instrumentor: Any = None
    if flavour == "sdk+openllmetry":
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

        instrumentor = AnthropicInstrumentor()
        instrumentor.instrument(tracer_provider=run.provider)
    try:
        yield flavour, run, instrumentor
    finally:
        if instrumentor is not None:
            instrumentor.uninstrument()
        run.close()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("how", ["plain", "stream", "stream-helper"])
def test_anthropic_messages_are_charged_once_what_calc_price_says(
    api: LLMApi, anthropic_run: tuple[str, Run, Any], path: str, how: str
) -> None:
    import anthropic

    flavour, run, _ = anthropic_run
    # The SDK's own tracing, to the same provider: with OpenLLMetry, two root spans per call.
    client = anthropic.Anthropic(
        base_url=api.url, api_key="test", max_retries=0,
        open_telemetry={"tracer_provider": run.provider},
    )  # fmt: skip
    for model, usage in (("claude-sonnet-4-5", CACHED), ("claude-sonnet-4-5", LONG)):
        kwargs: dict[str, Any] = {"model": model, "max_tokens": 64, "messages": _messages(usage)}
        if how == "plain":
            client.messages.create(**kwargs)
        elif how == "stream":
            for _ in client.messages.create(stream=True, **kwargs):
                pass
        else:
            with client.messages.stream(**kwargs) as events:
                events.get_final_message()
        records = run.new_records()
        assert len(records) == (2 if flavour == "sdk+openllmetry" else 1)
        assert all(r.error is None for r in records), [r.error for r in records]
        (record,) = charged(records)  # one call, one charge
        assert record.operation == f"chat {model}"
        assert record.cost_nanos == expected(
            record,
            "claude-sonnet-4-5-20250929",
            "anthropic",
            input_tokens=usage.input,
            output_tokens=usage.output,
            cache_read_tokens=usage.cache_read,
            cache_write_tokens=usage.cache_write,
            # The charged span is the SDK's (it ends first), which has the 1-hour writes.
            cache_write_1h_tokens=usage.cache_write_1h,
        )
    if flavour == "sdk+openllmetry":
        assert run.processor.stats()["genai_duplicates"] == 2
