"""GenAI usage as instrumentations really put it on spans, read into one meaning.

The semantic conventions say ``gen_ai.usage.input_tokens`` counts every input token, cache
reads and writes included, and ``gen_ai.usage.output_tokens`` every output token, reasoning
included. Instrumentations differ in names and, for input, in meaning:

- cache reads: ``gen_ai.usage.cache_read.input_tokens`` (conventions, OpenLLMetry, the
  anthropic SDK), ``gen_ai.usage.cache_read_input_tokens`` (older OpenLLMetry);
- cache writes: ``gen_ai.usage.cache_creation.input_tokens`` (conventions, OpenLLMetry),
  ``gen_ai.usage.cache_write.input_tokens`` (the anthropic SDK),
  ``gen_ai.usage.cache_creation_input_tokens`` (older OpenLLMetry);
- reasoning: ``gen_ai.usage.reasoning.output_tokens`` (conventions, the anthropic SDK),
  ``gen_ai.usage.reasoning_tokens`` (OpenLLMetry);
- input and output: ``gen_ai.usage.input_tokens``/``output_tokens``, older
  ``gen_ai.usage.prompt_tokens``/``completion_tokens``;
- input counting cache tokens or not: Anthropic's API reports input *without* cache reads
  and writes, OpenAI's *with* cache reads. An instrumentation that copies Anthropic's number
  shows it by a cache count larger than the input, by a ``gen_ai.usage.total_tokens``
  equal to input + output + cache, or is OpenLIT's (it sets ``gen_ai.client.token.usage``
  on its spans) for Anthropic: then the cache counts are added to the input.
  Otherwise the input is taken as the conventions define it (cache included).

What a span cannot tell: the official OpenAI instrumentation records no cached tokens, so
its cached input is charged at the full input rate (an upper bound); a span whose input
excludes cache tokens without one of the signs above is undercounted by its cache tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple

from otelcost.errors import PricingError

__all__ = [
    "CACHE_READ",
    "CACHE_WRITE",
    "CACHE_WRITE_1H",
    "INPUT",
    "OUTPUT",
    "PARTS",
    "REASONING",
    "USAGE_KEYS",
    "GenAIUsage",
    "model_of",
    "priced_parts",
    "provider_of",
    "read_usage",
    "require_usage",
    "usage_amounts",
]

# The conventions' names, which otelcost uses for the usage it records and prices.
INPUT: Final = "gen_ai.usage.input_tokens"
OUTPUT: Final = "gen_ai.usage.output_tokens"
CACHE_READ: Final = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE: Final = "gen_ai.usage.cache_creation.input_tokens"
REASONING: Final = "gen_ai.usage.reasoning.output_tokens"
CACHE_WRITE_1H: Final = "anthropic.usage.cache_creation.ephemeral_1h_input_tokens"
"""Anthropic's 1-hour cache writes, part of the cache writes (the anthropic SDK's spans)."""

PARTS: Final[Mapping[str, tuple[str, ...]]] = {
    INPUT: (CACHE_READ, CACHE_WRITE),
    CACHE_WRITE: (CACHE_WRITE_1H,),
    OUTPUT: (REASONING,),
}
"""Each total with the parts it includes: a price for a part takes those tokens out of the
total's price (as genai-prices does), a part without a price stays in the total."""


def priced_parts(total: str, priced: Mapping[str, object]) -> tuple[str, ...]:
    """The parts of ``total`` that ``priced`` prices, looking inside unpriced parts: each
    token is charged once, at the rate of the most specific priced count it is in."""
    found: list[str] = []
    for part in PARTS.get(total, ()):
        found.extend((part,) if part in priced else priced_parts(part, priced))
    return tuple(found)


_NAMES: Final[Mapping[str, tuple[str, ...]]] = {
    INPUT: (INPUT, "gen_ai.usage.prompt_tokens"),
    OUTPUT: (OUTPUT, "gen_ai.usage.completion_tokens"),
    CACHE_READ: (CACHE_READ, "gen_ai.usage.cache_read_input_tokens"),
    CACHE_WRITE: (
        CACHE_WRITE,
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
    ),
    REASONING: (REASONING, "gen_ai.usage.reasoning_tokens"),
    CACHE_WRITE_1H: (CACHE_WRITE_1H,),
}
_TOTAL: Final = "gen_ai.usage.total_tokens"
# OpenLIT puts this metric's name on its spans; for Anthropic it copies the API's input count.
_OPENLIT_TOTAL: Final = "gen_ai.client.token.usage"

USAGE_KEYS: Final = frozenset(_NAMES)


class GenAIUsage(NamedTuple):
    """Token counts of one call, in the conventions' meaning (totals include their parts)."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    reasoning: int
    cache_write_1h: int = 0

    def as_attributes(self) -> dict[str, float]:
        """The counts by the conventions' attribute names, zero counts left out."""
        pairs = (
            (INPUT, self.input),
            (OUTPUT, self.output),
            (CACHE_READ, self.cache_read),
            (CACHE_WRITE, self.cache_write),
            (REASONING, self.reasoning),
            (CACHE_WRITE_1H, self.cache_write_1h),
        )
        return {name: float(count) for name, count in pairs if count}


_MAX_COUNT: Final = 2**53  # counts are exact as floats (usage records) up to here


def _count(attributes: Mapping[str, object], names: tuple[str, ...]) -> int | None:
    """The first of ``names`` that holds a count (a whole number >= 0, not a boolean)."""
    for name in names:
        value = attributes.get(name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and 0 <= value <= _MAX_COUNT:
            return value
        if isinstance(value, float) and value.is_integer() and 0 <= value <= _MAX_COUNT:
            return int(value)
    return None


def read_usage(attributes: Mapping[str, object]) -> GenAIUsage | None:
    """The span's token usage, or None when it carries no input or output count."""
    counts = {key: _count(attributes, names) for key, names in _NAMES.items()}
    input_tokens, output_tokens = counts[INPUT], counts[OUTPUT]
    if input_tokens is None and output_tokens is None:
        return None
    input_tokens = input_tokens or 0
    output_tokens = output_tokens or 0
    cache_read, cache_write = counts[CACHE_READ] or 0, counts[CACHE_WRITE] or 0
    cached = cache_read + cache_write
    if cached and (
        cached > input_tokens
        or _count(attributes, (_TOTAL,)) == input_tokens + output_tokens + cached
        or (_OPENLIT_TOTAL in attributes and provider_of(attributes) == "anthropic")
    ):
        input_tokens += cached  # the input was reported without its cache tokens
    return GenAIUsage(
        input_tokens,
        output_tokens,
        cache_read,
        cache_write,
        counts[REASONING] or 0,
        counts[CACHE_WRITE_1H] or 0,
    )


def require_usage(attributes: Mapping[str, object]) -> GenAIUsage | None:
    """The usage of a GenAI call span; None for a call that failed (``error.type``) without
    usage, which costs nothing. Raises PricingError for a call span without usage, whose
    cost cannot be known (never a silent $0)."""
    usage = read_usage(attributes)
    if usage is None and attributes.get("error.type") is None:
        model = model_of(attributes)
        # Short: cost.error keeps 120 characters (docs/concepts.md).
        raise PricingError(
            f"no token usage on GenAI span (model {model!r}; streams: include_usage)"
        )
    return usage


def usage_amounts(attributes: Mapping[str, object], keys: frozenset[str]) -> dict[str, float]:
    """The conventions' usage ``keys`` of a span, read as :func:`read_usage` reads them."""
    usage = read_usage(attributes)
    if usage is None:
        return {}
    return {key: amount for key, amount in usage.as_attributes().items() if key in keys}


_MODEL: Final = ("gen_ai.response.model", "gen_ai.request.model")
_PROVIDER: Final = ("gen_ai.provider.name", "gen_ai.system")


def _text(attributes: Mapping[str, object], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = attributes.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def model_of(attributes: Mapping[str, object]) -> str | None:
    """The model that answered (``gen_ai.response.model``), else the one asked for."""
    return _text(attributes, _MODEL)


def provider_of(attributes: Mapping[str, object]) -> str | None:
    """``gen_ai.provider.name``, else the older ``gen_ai.system``."""
    return _text(attributes, _PROVIDER)
