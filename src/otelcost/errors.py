"""The exception hierarchy. Everything otelcost raises on purpose derives from OtelCostError.

::

    OtelCostError
    ├── PricingError                  a pricing table cannot be fetched or is invalid
    │   ├── PricingStaleError         the table is older than its TTL
    │   └── PricingNotFoundError      no key prices the operation (also a LookupError)
    ├── InvalidRecordError            a cost record breaks its schema (also a ValueError)
    ├── BudgetConfigError             a budget or budgets file is invalid (also a ValueError)
    ├── FenceOverlapError             a budget flush partly overlaps an applied one
    ├── SchemaError                   the rollup database has no or an unknown schema
    ├── StoreUnavailableError         PostgreSQL failed a rollup transaction (retried)
    ├── BrokerUnreachableError        no Kafka broker answered within the connect timeout
    ├── RedisReplyError               Redis answered otelcost's own client with an error
    ├── RetryLaterError               a consumer's batch cannot complete now (kept pending)
    ├── DeadLetterError               the dead-letter topic did not take every letter
    ├── FocusError                    a FOCUS bill cannot be used (row and column named)
    ├── CalibrationError              a pricing table cannot be calibrated from a bill
    └── MissingExtraError             a feature needs an extra not installed (also an ImportError)

Each module that raises one re-exports it where users meet it (``otelcost.budget``,
``otelcost.rollup``, ``otelcost.bill``), so either import path works.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnreachableError",
    "BudgetConfigError",
    "CalibrationError",
    "DeadLetterError",
    "FenceOverlapError",
    "FocusError",
    "InvalidRecordError",
    "MissingExtraError",
    "OtelCostError",
    "PricingError",
    "PricingNotFoundError",
    "PricingStaleError",
    "RedisReplyError",
    "RetryLaterError",
    "SchemaError",
    "StoreUnavailableError",
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


class SchemaError(OtelCostError, RuntimeError):
    """The database has no rollup schema, or one this code does not know."""


class StoreUnavailableError(OtelCostError):
    """PostgreSQL could not be reached or the transaction failed; nothing was committed."""


class BrokerUnreachableError(OtelCostError):
    """No Kafka broker answered within the connect timeout; the message names the address."""


class RedisReplyError(OtelCostError):
    """Redis answered a command of otelcost's own client (plain ``redis://`` and ``unix://``
    URLs in the budget store) with an error; the message is the server's (``WRONGPASS
    ...``, ``NOPERM ...``). Connection failures raise ``ConnectionError``/``TimeoutError``."""


class RetryLaterError(OtelCostError):
    """A consumer's batch could not be completed now (store or dead-letter topic down): its
    partitions are paused and the batch is retried, never committed half-done."""


class DeadLetterError(OtelCostError):
    """The dead-letter topic did not take or acknowledge every dead letter (retried later)."""


class FocusError(OtelCostError, ValueError):
    """A FOCUS export cannot be used; the message names the file, row and column."""

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.column = column


class CalibrationError(OtelCostError, ValueError):
    """The pricing table cannot be calibrated (not a valid table, or nothing to scale)."""


class MissingExtraError(OtelCostError, ImportError):
    """A feature needs a package of an optional extra that is not installed; the message
    says which ``pip install`` adds it (``extra`` names the extra)."""

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(f"{feature} needs {package}: pip install 'otelcost[{extra}]'")
        self.extra = extra
