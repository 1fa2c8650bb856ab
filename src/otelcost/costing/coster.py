"""Pricing one ended span: service, operation, usage, cost, and what to record about it.

Runs on background threads only (never on the thread that ends the span). A ``SpanCost``
is the single result both outputs are built from: the CostRecord and the ``cost.*``
attributes of the enriched span, so their amounts are equal by construction.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import format_span_id, format_trace_id
from opentelemetry.util.types import AttributeValue

from otelcost.costing.normalize import normalize_path
from otelcost.costing.operation import CardinalityGuard, derive_operation, service_name
from otelcost.errors import PricingError, PricingNotFoundError, PricingStaleError
from otelcost.money import from_nanos
from otelcost.pricing import PricingCache, PricingTable
from otelcost.record import _MAX_TS_MS, _MIN_TS_MS, CostRecord

__all__ = ["Coster", "PricingSnapshot", "SpanCost"]

_logger = logging.getLogger(__name__)

_MAX_ERROR_LEN: Final = 240
# Without a price we do not know which attributes are usage; GenAI token counts are the
# usage inputs that matter for re-pricing, so an unpriced record keeps those.
_FALLBACK_USAGE_PREFIX: Final = "gen_ai.usage."
_EMPTY: Final[Mapping[str, float]] = MappingProxyType({})

# Error reasons: the text before ":" in CostRecord.error and the cost.error attribute.
STALE: Final = "pricing_stale"
NOT_FOUND: Final = "pricing_not_found"
CURRENCY_MISMATCH: Final = "currency_mismatch"
PRICING_ERROR: Final = "pricing_error"
INVALID_SPAN: Final = "invalid_span"


def _error(reason: str, detail: object) -> str:
    text = f"{reason}: {detail}"
    return text if len(text) <= _MAX_ERROR_LEN else text[: _MAX_ERROR_LEN - 3] + "..."


class SpanCost:
    """The priced facts of one span. Holds plain values only, never the span."""

    __slots__ = (
        "amount",
        "currency",
        "duration_ms",
        "error",
        "nanos",
        "operation",
        "pricing_version",
        "region",
        "service",
        "timestamp_ms",
        "usage",
    )

    def __init__(
        self,
        *,
        service: str,
        operation: str,
        nanos: int,
        currency: str,
        duration_ms: float,
        timestamp_ms: int,
        region: str | None,
        pricing_version: str | None,
        usage: Mapping[str, float],
        error: str | None,
    ) -> None:
        self.service = service
        self.operation = operation
        self.nanos = nanos
        self.amount = from_nanos(nanos)
        self.currency = currency
        self.duration_ms = duration_ms
        self.timestamp_ms = timestamp_ms
        self.region = region
        self.pricing_version = pricing_version
        self.usage = usage
        self.error = error

    @property
    def reason(self) -> str | None:
        """The machine reason of ``error`` (its text before ":"), or None when priced."""
        return None if self.error is None else self.error.split(":", 1)[0]

    def record(self, trace_id: int, span_id: int) -> CostRecord:
        """The CostRecord of this span (schema v1)."""
        return CostRecord(
            trace_id=format_trace_id(trace_id),
            span_id=format_span_id(span_id),
            service=self.service,
            operation=self.operation,
            cost_amount=self.amount,
            currency=self.currency,
            duration_ms=self.duration_ms,
            timestamp=self.timestamp_ms,
            region=self.region,
            pricing_version=self.pricing_version,
            usage=self.usage,
            error=self.error,
        )

    def attributes(self) -> dict[str, AttributeValue]:
        """The ``cost.*`` span attributes of DESIGN §5: an amount, or an error and no amount."""
        attrs: dict[str, AttributeValue] = {
            "cost.currency": self.currency,
            "cost.duration_ms": self.duration_ms,
            "cost.source": "otelcost",
        }
        if self.error is None:
            attrs["cost.amount"] = self.amount
        else:
            attrs["cost.error"] = self.error
        if self.region is not None:
            attrs["cost.pricing_region"] = self.region
        if self.pricing_version is not None:
            attrs["cost.pricing_version"] = self.pricing_version
        return attrs


class PricingSnapshot:
    """One pricing table (or the reason there is none) used for a whole batch of spans."""

    __slots__ = ("currency", "error", "region", "table", "version")

    def __init__(
        self,
        table: PricingTable | None,
        currency: str,
        region: str | None,
        version: str | None,
        error: str | None,
    ) -> None:
        self.table = table
        self.currency = currency
        self.region = region
        self.version = version
        self.error = error


class Coster:
    """Derives, guards and prices spans against the current table of a PricingCache.

    ``currency`` is the currency the caller accounts in. The record's currency is the
    table's; a table in another currency is a pricing failure (``currency_mismatch``), so
    amounts in two currencies are never added up in one budget. ``region`` overrides the
    table's region when given.
    """

    def __init__(
        self,
        pricing: PricingCache,
        *,
        currency: str,
        region: str | None,
        max_operations_per_service: int,
        normalizer: Callable[[str], str] | None,
    ) -> None:
        self._pricing = pricing
        self._currency = currency
        self._region = region
        self._normalize = normalizer or normalize_path
        self._max_operations = max_operations_per_service
        self.guard = CardinalityGuard(limit=max_operations_per_service)
        self._mismatch_warned: set[tuple[str | None, str | None]] = set()

    @property
    def currency(self) -> str:
        return self._currency

    def reset_guard(self) -> None:
        """Start a new cardinality guard (a forked child: the old one's lock may be held)."""
        self.guard = CardinalityGuard(limit=self._max_operations)

    def snapshot(self) -> PricingSnapshot:
        """The table to price the next batch with, or the reason every span of it fails."""
        try:
            table = self._pricing.current()
        except PricingStaleError as exc:
            return PricingSnapshot(None, self._currency, self._region, None, _error(STALE, exc))
        except Exception as exc:  # a broken cache must not stop the pipeline
            return PricingSnapshot(
                None, self._currency, self._region, None, _error(PRICING_ERROR, exc)
            )
        region = self._region if self._region is not None else table.region
        if table.currency is not None and table.currency != self._currency:
            self._warn_mismatch(table)
            detail = f"table {table.version!r} is in {table.currency}, expected {self._currency}"
            return PricingSnapshot(
                None, self._currency, region, table.version, _error(CURRENCY_MISMATCH, detail)
            )
        return PricingSnapshot(table, self._currency, region, table.version, None)

    def _warn_mismatch(self, table: PricingTable) -> None:
        key = (table.version, table.currency)
        if key not in self._mismatch_warned:
            self._mismatch_warned.add(key)
            _logger.error(
                "otelcost: pricing table %r is in %s but costs are accounted in %s; "
                "spans get cost.error=currency_mismatch until the two agree "
                "(pass currency=%r or set OTELCOST_CURRENCY)",
                table.version,
                table.currency,
                self._currency,
                table.currency,
            )

    def cost(self, span: ReadableSpan, snap: PricingSnapshot) -> SpanCost:
        """Price one ended span. Never raises for bad span data or pricing failures."""
        attributes = _plain_attributes(span)
        resource_attributes = span.resource.attributes
        service = service_name(resource_attributes, attributes)
        operation = self.guard.admit(
            service, derive_operation(span.name, attributes, normalize=self._normalize)
        )
        start, end = span.start_time or 0, span.end_time or 0
        error = snap.error
        timestamp_ms = end // 1_000_000
        if end < start or not _MIN_TS_MS < timestamp_ms < _MAX_TS_MS:
            # Not an epoch time in nanoseconds (zero, seconds, a clock decades off): the
            # span is not priced, and its record gets the time of pricing instead, so that
            # it still passes CostRecord validation wherever it is consumed.
            duration_ms = 0.0
            error = _error(INVALID_SPAN, f"start_time={start} end_time={end}")
            timestamp_ms = time.time_ns() // 1_000_000
        else:
            duration_ms = (end - start) / 1e6
        nanos = 0
        usage: Mapping[str, float] = _EMPTY
        table = snap.table
        if error is None and table is not None:
            try:
                price = table.resolve(service, operation)
                usage = price.usage_from(attributes) or _EMPTY
                nanos = price.cost_nanos(duration_ms, usage)
            except PricingNotFoundError as exc:
                error = _error(NOT_FOUND, exc)
            except PricingError as exc:
                error = _error(PRICING_ERROR, exc)
        if error is not None:
            nanos = 0
            if usage is _EMPTY:
                usage = _fallback_usage(attributes)
        return SpanCost(
            service=service,
            operation=operation,
            nanos=nanos,
            currency=snap.currency,
            duration_ms=duration_ms,
            timestamp_ms=timestamp_ms,
            region=snap.region,
            pricing_version=snap.version,
            usage=usage,
            error=error,
        )


def _plain_attributes(span: ReadableSpan) -> Mapping[str, object]:
    """The span's attributes as the plain dict inside the SDK's BoundedAttributes.

    An ended span's attributes are immutable, and reading the dict directly avoids a
    Python-level ``__getitem__`` (and a KeyError for every absent key) per lookup: about
    7 µs per span of the worker's CPU. Any other SDK layout falls back to the public view.
    """
    inner = getattr(getattr(span, "_attributes", None), "_dict", None)
    if type(inner) is dict:
        return inner
    return span.attributes or _EMPTY


def _fallback_usage(attributes: Mapping[str, object]) -> Mapping[str, float]:
    usage: dict[str, float] = {}
    for key, value in attributes.items():
        if (
            key.startswith(_FALLBACK_USAGE_PREFIX)
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and value >= 0
        ):
            try:
                amount = float(value)
            except OverflowError:  # an int beyond a double: not a usage anyone can price
                continue
            if math.isfinite(amount):
                usage[key] = amount
    return MappingProxyType(usage) if usage else _EMPTY
