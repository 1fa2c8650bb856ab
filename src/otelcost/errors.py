"""The exception hierarchy. Everything otelcost raises on purpose derives from OtelCostError."""

from __future__ import annotations

__all__ = [
    "BudgetConfigError",
    "FenceOverlapError",
    "InvalidRecordError",
    "OtelCostError",
    "PricingError",
    "PricingNotFoundError",
    "PricingStaleError",
]


class OtelCostError(Exception):
    """Base class of every error otelcost raises deliberately."""


class PricingError(OtelCostError):
    """A pricing table could not be fetched or is invalid; the previous table stays in use."""


class PricingStaleError(PricingError):
    """The pricing table is older than its TTL, so no price is trusted."""


class PricingNotFoundError(PricingError, LookupError):
    """No pricing entry matches the service and operation (not even ``*:*``)."""


class InvalidRecordError(OtelCostError, ValueError):
    """A cost record does not conform to schema v1; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class BudgetConfigError(OtelCostError, ValueError):
    """A budget definition or budgets file is invalid; the message names the entry."""


class FenceOverlapError(OtelCostError):
    """A budget flush partly overlaps one already applied; nothing was applied.

    ``last_seq`` is the highest sequence already applied for the producer: re-aggregate
    the items after it and apply them again.
    """

    def __init__(self, service: str, producer: str, last_seq: int) -> None:
        super().__init__(
            f"fence overlap for service {service!r}, producer {producer!r}: "
            f"seq {last_seq} was already applied"
        )
        self.service = service
        self.producer = producer
        self.last_seq = last_seq
