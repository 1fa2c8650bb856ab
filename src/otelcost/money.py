"""Conversions between currency units (floats on spans and records) and integer nano-units (stores).

Stores and totals use integers so that sums reconcile exactly; a float amount is always
derived from its nano-unit integer, so ``to_nanos(from_nanos(n)) == n`` for every
|n| < 2**51 (2.25 million currency units): the division and the multiplication each err by
at most half an ulp, under half a nano-unit below 2**51. Above it the round trip can be off
by one nano-unit, so exact paths carry the integer itself (the per-span sums, Kafka's
``cost_nanos``).
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_CURRENCY", "NANOS_PER_UNIT", "from_nanos", "to_nanos"]

NANOS_PER_UNIT = 1_000_000_000

NANOS_BOUND: Final = 2**53
"""Every cost of one record is below this many nano-units (about 9.007 million currency
units): pricing refuses more, and both record schemas reject it. Beyond it a float amount
no longer holds every integer, and a sum of such costs nears the stores' int64 counters."""

ROUND_TRIP_BOUND: Final = 2**51
"""``to_nanos(from_nanos(n)) == n`` for every |n| below this (about 2.25 million currency
units): a record whose only exact form is its float amount (an overflow aggregate) stays
below it."""

DEFAULT_CURRENCY: Final = "USD"
"""The currency of a pricing table that declares none (the flat form never does), and the
one a service accounts in unless ``currency=`` or ``OTELCOST_CURRENCY`` says otherwise."""


def to_nanos(amount: float) -> int:
    """Round a currency amount to whole nano-units (half to even)."""
    return round(amount * NANOS_PER_UNIT)


def from_nanos(nanos: int) -> float:
    """The currency amount of ``nanos`` nano-units."""
    return nanos / NANOS_PER_UNIT
