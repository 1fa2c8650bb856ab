"""Conversions between currency units (floats on spans and records) and integer nano-units (stores).

Stores and totals use integers so that sums reconcile exactly; a float amount is always
derived from its nano-unit integer, so ``to_nanos(from_nanos(n)) == n`` for every n < 2**53.
"""

from __future__ import annotations

__all__ = ["NANOS_PER_UNIT", "from_nanos", "to_nanos"]

NANOS_PER_UNIT = 1_000_000_000


def to_nanos(amount: float) -> int:
    """Round a currency amount to whole nano-units (half to even)."""
    return round(amount * NANOS_PER_UNIT)


def from_nanos(nanos: int) -> float:
    """The currency amount of ``nanos`` nano-units."""
    return nanos / NANOS_PER_UNIT
