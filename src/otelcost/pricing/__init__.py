"""Where prices come from: tables (:mod:`.table`), their sources (:mod:`.sources`) and the
refreshed, thread-safe snapshot every span is priced from (:mod:`.cache`)."""

from __future__ import annotations

from otelcost.pricing.cache import PricingCache, PricingCacheStats
from otelcost.pricing.sources import (
    DEFAULT_MAX_BYTES,
    DictPricingSource,
    FilePricingSource,
    HttpPricingSource,
    PricingSource,
)
from otelcost.pricing.table import DEFAULT_MEMO_SIZE, Price, PricingTable

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MEMO_SIZE",
    "DictPricingSource",
    "FilePricingSource",
    "HttpPricingSource",
    "Price",
    "PricingCache",
    "PricingCacheStats",
    "PricingSource",
    "PricingTable",
]
