"""The reference the LLM pricing tests compare to: what genai-prices' own ``calc_price``
charges for a usage, in nano-units."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from otelcost.pricing.catalogs import decimal_to_nanos


def calc_price_nanos(model: str, provider: str | None, end_ms: int, **usage: int) -> int:
    """``genai_prices.calc_price`` of ``usage`` for a call that ended at ``end_ms``; skips
    the test where genai-prices is not installed (it needs Python 3.11+)."""
    genai_prices = pytest.importorskip("genai_prices")
    calc = genai_prices.calc_price(
        genai_prices.Usage(**usage),
        model,
        provider_id=provider,
        genai_request_timestamp=datetime.fromtimestamp(end_ms / 1000, tz=timezone.utc),
    )
    return decimal_to_nanos(calc.total_price)
