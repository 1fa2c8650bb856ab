"""Calibration: per-service factors (billed ÷ attributed) turned into dated prices.

``calibrate(comparison, table)`` proposes, for each service both billed and attributed,
the factor billed ÷ attributed over the compared period. ``Calibration.table()`` writes a
new pricing document in which every entry keyed by such a service (``svc:...``) becomes a
dated entry: its prices as they were, then from ``effective_from`` (by default the end of
the billed period: the next period) the same prices multiplied by the factor. Spans that
end from then on are priced to track the bill; history before it keeps its prices, and
``otelcost report --reprice`` under the new table shows what any window would have cost.

What is not scaled, and why (``Calibration.skipped``):

- services billed but not attributed (no factor) or attributed but not billed (a factor
  of 0 would make them free: more likely a tag or mapping is wrong);
- services without an entry of their own: their spans are priced by shared ``*:...``
  entries, which other services use too (add a ``svc:*`` entry to calibrate them);
- entries priced from a catalog (their rates are the catalog's) and free entries.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from otelcost.bill.compare import Comparison
from otelcost.errors import CalibrationError, OtelCostError
from otelcost.money import DEFAULT_CURRENCY
from otelcost.pricing.table import ALWAYS, PricingTable, format_instant

__all__ = ["Calibration", "CalibrationError", "Factor", "calibrate"]

_RATES = ("per_ms", "cost_per_ms", "per_request")
_FROM = "from"


@dataclass(frozen=True)
class Factor:
    """One service's factor and the table keys it scales."""

    service: str
    factor: Fraction
    billed_nanos: int
    attributed_nanos: int
    keys: tuple[str, ...]

    def rounded(self, places: int = 6) -> Decimal:
        """The factor as a decimal with ``places`` decimals (what tables and JSON show)."""
        value = Decimal(self.factor.numerator) / Decimal(self.factor.denominator)
        return value.quantize(Decimal(1).scaleb(-places))

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "factor": float(self.factor),
            "billed_nanos": self.billed_nanos,
            "attributed_nanos": self.attributed_nanos,
            "keys": list(self.keys),
        }


@dataclass(frozen=True)
class Calibration:
    """Factors proposed from ``comparison``, effective from ``effective_from`` (UTC ms)."""

    comparison: Comparison
    document: Mapping[str, Any]
    effective_from: int
    factors: tuple[Factor, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)
    starts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def table(self) -> dict[str, Any]:
        """The new pricing document: scaled services' entries dated from ``effective_from``."""
        doc = copy.deepcopy(dict(self.document))
        prices = doc.get("prices", doc)
        since = format_instant(self.effective_from)
        for factor in self.factors:
            for key in factor.keys:
                prices[key] = _dated(
                    prices[key], self.starts[key], factor.factor, self.effective_from, since
                )
        if "prices" in doc:
            old = doc.get("version")
            doc["version"] = f"{old}+calibrated-{since[:10]}" if old else f"calibrated-{since[:10]}"
            doc["calibration"] = (
                f"scaled by billed / attributed of {self.comparison.bill.source} "
                f"({format_instant(self.comparison.bill.since)[:10]} to "
                f"{format_instant(self.comparison.bill.until)[:10]}), from {since}: "
                + ", ".join(f"{f.service} x{f.rounded()}" for f in self.factors)
            )
        return doc

    def to_dict(self) -> dict[str, Any]:
        """The ``otelcost bill calibrate --json`` document."""
        return {
            "currency": self.comparison.currency,
            "since": self.comparison.bill.since,
            "until": self.comparison.bill.until,
            "effective_from": format_instant(self.effective_from),
            "factors": [factor.to_dict() for factor in self.factors],
            "skipped": dict(self.skipped),
        }


def calibrate(
    comparison: Comparison, document: Mapping[str, Any], *, effective_from: int | None = None
) -> Calibration:
    """Propose factors from ``comparison`` for the pricing ``document`` (a decoded JSON
    table, document or flat form); ``effective_from`` defaults to the end of the bill.

    Raises CalibrationError when ``document`` is not a valid pricing table, or its currency
    is not the bill's.
    """
    try:
        table = PricingTable.parse(document)
    except OtelCostError as exc:
        raise CalibrationError(f"pricing table: {exc}") from None
    currency = table.currency or DEFAULT_CURRENCY
    if currency != comparison.currency:
        raise CalibrationError(
            f"the pricing table is in {currency}, the bill in {comparison.currency}: "
            "currencies are never mixed"
        )
    prices: Mapping[str, Any] = document.get("prices", document)
    keys_of: dict[str, list[str]] = {}
    catalog: dict[str, list[str]] = {}
    for key, entry in prices.items():
        service = key.split(":", 1)[0]
        if any(isinstance(item, Mapping) and "catalog" in item for item in _items(entry)):
            catalog.setdefault(service, []).append(key)
        elif entry is not None:
            keys_of.setdefault(service, []).append(key)
    factors: list[Factor] = []
    skipped: dict[str, str] = {}
    for row in comparison.services:
        if row.factor is None:
            skipped[row.service] = "billed, but no cost attributed: no factor"
        elif row.billed_nanos <= 0:
            skipped[row.service] = "attributed, but not billed: check the tag or mapping"
        elif row.service not in keys_of:
            reason = "priced only by shared '*:' entries: add a '%s:*' entry to calibrate it"
            if row.service in catalog:
                reason = "priced from a catalog: its rates are the catalog's"
            skipped[row.service] = reason.replace("%s", row.service)
        else:
            factors.append(
                Factor(
                    row.service,
                    row.factor,
                    row.billed_nanos,
                    row.attributed_nanos,
                    tuple(keys_of[row.service]),
                )
            )
    start = comparison.bill.until if effective_from is None else effective_from
    starts = {
        match.key: match.schedule.starts if match.schedule is not None else (ALWAYS,)
        for match in table
    }
    return Calibration(comparison, document, start, tuple(factors), skipped, starts)


def _items(entry: object) -> list[object]:
    return list(entry) if isinstance(entry, list) else [entry]


def _dated(
    entry: object, starts: tuple[int, ...], factor: Fraction, start: int, since: str
) -> list[Any]:
    """``entry`` (a price object or dated array whose prices start at ``starts``) with the
    prices in force from ``start`` scaled."""
    items = [dict(item) for item in _items(entry) if isinstance(item, Mapping)]
    kept = [item for item, at in zip(items, starts, strict=True) if at < start]
    in_force = kept[-1] if kept else None
    later = [_scaled(item, factor) for item, at in zip(items, starts, strict=True) if at > start]
    same = [item for item, at in zip(items, starts, strict=True) if at == start]
    base = same[0] if same else in_force
    if base is None:  # every price starts after ``start``: they are all scaled
        return kept + later
    scaled = _scaled(base, factor)
    head = {_FROM: since, **{name: value for name, value in scaled.items() if name != _FROM}}
    if not kept:  # the first price of a dated entry may omit "from" (in force always)
        return [head, *later]
    return [*kept, head, *later]


def _scaled(item: Mapping[str, Any], factor: Fraction) -> dict[str, Any]:
    scaled = dict(item)
    for name in _RATES:
        if isinstance(scaled.get(name), int | float):
            scaled[name] = _times(scaled[name], factor)
    units = scaled.get("per_unit")
    if isinstance(units, Mapping):
        scaled["per_unit"] = {attr: _scaled_rate(rate, factor) for attr, rate in units.items()}
    return scaled


def _scaled_rate(rate: object, factor: Fraction) -> object:
    if isinstance(rate, int | float):
        return _times(rate, factor)
    if isinstance(rate, Mapping):  # a tiered rate: the rates scale, the thresholds do not
        tiered = dict(rate)
        tiered["rate"] = _scaled_rate(tiered.get("rate"), factor)
        if isinstance(tiered.get("tiers"), list):
            tiered["tiers"] = [
                {**step, "rate": _scaled_rate(step.get("rate"), factor)}
                if isinstance(step, Mapping)
                else step
                for step in tiered["tiers"]
            ]
        return tiered
    return rate


def _times(rate: float, factor: Fraction) -> float:
    return float(Fraction(rate) * factor)
