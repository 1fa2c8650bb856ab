"""Prices and immutable pricing tables: validation of pricing documents and key matching.

A table is built once (by :meth:`PricingTable.parse` or the constructor) and never changes;
refreshing pricing means building a new table and swapping it in whole.
"""

from __future__ import annotations

import enum
import math
import os
import re
import threading
import time
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Final, NamedTuple

from cachetools import FIFOCache

from otelcost.errors import PricingError, PricingNotFoundError
from otelcost.money import NANOS_BOUND, NANOS_PER_UNIT
from otelcost.pricing import _genai
from otelcost.pricing.catalogs import CATALOGS, EXACT, Catalog, catalog, decimal_to_nanos

# One lock serialises memo inserts of every table. It is module-level so that a forked
# child can replace it: a child that inherited it held by the parent's worker would hang.
_memo_lock = threading.Lock()


def _reset_memo_lock() -> None:
    global _memo_lock  # noqa: PLW0603 - the point is to replace the shared lock
    _memo_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_memo_lock)

__all__ = [
    "ALWAYS",
    "DEFAULT_MEMO_SIZE",
    "Charge",
    "Price",
    "PriceMatch",
    "PriceSchedule",
    "PricingTable",
    "Tiers",
]

DEFAULT_MEMO_SIZE: Final = 16_384
"""Resolved (service, operation) pairs remembered per table (bounded; FIFO eviction)."""

# Largest cost of one span: its record is valid in both schemas (money.NANOS_BOUND) rather
# than priced here and refused downstream.
_MAX_NANOS: Final = NANOS_BOUND - 1
_MAX_AMOUNT: Final = _MAX_NANOS / NANOS_PER_UNIT
_WILDCARD: Final = "*"
_GENAI_OPERATION: Final = "gen_ai.operation.name"
_CURRENCY: Final = re.compile(r"[A-Z]{3}")
_MAX_LABEL: Final = 128
_MAX_KEY_IN_MESSAGE: Final = 120
_EMPTY_UNITS: Final[Mapping[str, float]] = MappingProxyType({})
_new_tuple: Final = tuple.__new__
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS: Final = timedelta(milliseconds=1)

ALWAYS: Final = -(2**63)
"""The start of the first price of a :class:`PriceSchedule` that has no ``from``."""


_EMPTY_TIERS: Final[Mapping[str, Tiers]] = MappingProxyType({})
_NO_KEYS: Final[frozenset[str]] = frozenset()


def _empty_units() -> Mapping[str, float]:
    return _EMPTY_UNITS


def _empty_tiers() -> Mapping[str, Tiers]:
    return _EMPTY_TIERS


def _check_rate(value: object, where: str) -> float:
    """A price component as a finite float >= 0; None (free) is 0.0.

    Raises ValueError with a message starting with ``where``.
    """
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: must be a number >= 0 or null, got {_describe(value)}")
    try:
        rate = float(value)
    except OverflowError:
        raise ValueError(f"{where}: must be a finite number, got an integer too large") from None
    if not math.isfinite(rate) or rate < 0.0:
        raise ValueError(f"{where}: must be a finite number >= 0, got {rate!r}")
    return rate + 0.0  # -0.0 becomes 0.0


def _describe(value: object) -> str:
    if isinstance(value, str):
        return f"a string ({_short(value)})"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _short(text: str) -> str:
    shown = repr(text)
    if len(shown) > _MAX_KEY_IN_MESSAGE:
        shown = shown[: _MAX_KEY_IN_MESSAGE - 4] + "...'"
    return shown


@dataclass(frozen=True, slots=True)
class Tiers:
    """Usage tiers of one ``per_unit`` rate: the whole amount at the rate of the highest tier
    whose ``above`` the amount of attribute ``by`` exceeds (``by`` None: the priced attribute).

    ``steps`` are ``(above, rate)`` pairs with strictly increasing ``above``. This is the
    "cliff" of LLM prices (above 200K input tokens the whole call costs more) and of volume
    tiers; it is genai-prices' rule: a tier applies when the amount is strictly above it.
    """

    steps: tuple[tuple[float, float], ...]
    by: str | None = None

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("tiers: give at least one {'above': N, 'rate': R}")
        previous = -1.0
        steps: list[tuple[float, float]] = []
        for i, (above, rate) in enumerate(self.steps):
            where = f"tiers[{i}]"
            threshold = _check_rate(above, f"{where}.above")
            if threshold <= previous:
                raise ValueError(f"{where}.above: tiers must be in increasing order of 'above'")
            previous = threshold
            steps.append((threshold, _check_rate(rate, f"{where}.rate")))
        object.__setattr__(self, "steps", tuple(steps))
        if self.by is not None and (not isinstance(self.by, str) or not self.by):
            raise ValueError(f"by: must be an attribute name, got {_describe(self.by)}")

    def rate(self, base: float, amount: float) -> float:
        """The rate in force for a ``by`` amount of ``amount`` (``base`` below every tier)."""
        for above, rate in reversed(self.steps):
            if amount > above:
                return rate
        return base


@dataclass(frozen=True, slots=True)
class Price:
    """The price of one matched (service, operation).

    cost = per_request + per_ms * duration_ms + sum(per_unit[attr] * span.attributes[attr]).
    Every component is a finite float >= 0 in currency units; ``Price()`` is free.
    ``per_unit`` is copied into a read-only mapping, so a Price never changes. ``tiers``
    gives some ``per_unit`` attributes usage tiers (:class:`Tiers`); ``catalog`` names a
    model-price catalog (:mod:`otelcost.pricing.catalogs`) that prices the span's GenAI
    usage instead of ``per_unit``.

    GenAI token counts (``gen_ai.usage.*``) are read as :mod:`otelcost.pricing._genai`
    reads them, whatever the instrumentation's names, with totals including their parts;
    a priced part (cache reads or writes, reasoning) is taken out of its total's price.
    """

    per_ms: float = 0.0
    per_request: float = 0.0
    per_unit: Mapping[str, float] = field(default_factory=_empty_units)
    tiers: Mapping[str, Tiers] = field(default_factory=_empty_tiers)
    catalog: str | None = None
    _terms: tuple[tuple[str, float, tuple[str, ...], Tiers | None], ...] = field(
        init=False, repr=False, compare=False, default=()
    )
    _genai_keys: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())
    _catalog: Catalog | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_ms", _check_rate(self.per_ms, "per_ms"))
        object.__setattr__(self, "per_request", _check_rate(self.per_request, "per_request"))
        if not isinstance(self.per_unit, Mapping):
            raise TypeError(f"per_unit must be a mapping, got {type(self.per_unit).__name__}")
        units: dict[str, float] = {}
        for attr, rate in self.per_unit.items():
            if not isinstance(attr, str) or not attr:
                raise ValueError(f"per_unit: attribute names must be non-empty strings: {attr!r}")
            units[attr] = _check_rate(rate, f"per_unit[{_short(attr)}]")
        object.__setattr__(self, "per_unit", MappingProxyType(units) if units else _EMPTY_UNITS)
        tiers = dict(self.tiers)
        for attr, tier in tiers.items():
            where = f"per_unit[{_short(str(attr))}]"
            if attr not in units:
                raise ValueError(f"{where}: has tiers but no rate")
            if not isinstance(tier, Tiers):
                raise TypeError(f"{where}: tiers must be a Tiers, got {type(tier).__name__}")
            if tier.by is not None and tier.by not in units:
                raise ValueError(
                    f"{where}.by: {_short(tier.by)} must be priced in per_unit too "
                    "(tiers follow an amount the span's usage carries)"
                )
        object.__setattr__(self, "tiers", MappingProxyType(tiers) if tiers else _EMPTY_TIERS)
        terms = tuple(
            (attr, rate, _parts(attr, units), tiers.get(attr)) for attr, rate in units.items()
        )
        object.__setattr__(self, "_terms", terms)
        object.__setattr__(self, "_genai_keys", _genai.USAGE_KEYS.intersection(units))
        if self.catalog is not None:
            if units:
                raise ValueError(
                    "catalog: the catalog prices the usage; per_unit cannot be given too"
                )
            object.__setattr__(self, "_catalog", _load_catalog(self.catalog))

    @classmethod
    def _validated(cls, per_ms: float, per_request: float, units: dict[str, float]) -> Price:
        """A Price of rates ``_parse_plain`` has already checked (finite floats >= 0, ``units``
        keyed by non-empty strings; no tiers, no catalog): what ``__post_init__`` would
        build from them, without checking them a second time. The parser's fast path."""
        price = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(price, "per_ms", per_ms)
        setattr_(price, "per_request", per_request)
        setattr_(price, "tiers", _EMPTY_TIERS)
        setattr_(price, "catalog", None)
        setattr_(price, "_catalog", None)
        if units:
            setattr_(price, "per_unit", MappingProxyType(units))
            terms = tuple((attr, rate, _parts(attr, units), None) for attr, rate in units.items())
            setattr_(price, "_terms", terms)
            setattr_(price, "_genai_keys", _genai.USAGE_KEYS.intersection(units))
        else:
            setattr_(price, "per_unit", _EMPTY_UNITS)
            setattr_(price, "_terms", ())
            setattr_(price, "_genai_keys", _NO_KEYS)
        return price

    def __hash__(self) -> int:
        # per_unit is a read-only mapping, which is not hashable itself.
        return hash(
            (
                self.per_ms,
                self.per_request,
                frozenset(self.per_unit.items()),
                frozenset(self.tiers.items()),
                self.catalog,
            )
        )

    def __repr__(self) -> str:
        extra = f", tiers={dict(self.tiers)!r}" if self.tiers else ""
        if self.catalog is not None:
            extra += f", catalog={self.catalog!r}"
        return (
            f"Price(per_ms={self.per_ms!r}, per_request={self.per_request!r}, "
            f"per_unit={dict(self.per_unit)!r}{extra})"
        )

    def describe(self) -> str:
        """The price on one line, as the CLI shows it: ``per_request=0.001 per_ms=2e-06
        per_unit[tokens]=1e-06 (above 200000: 2e-06)`` or ``catalog=genai-prices``;
        ``free`` when nothing is charged."""
        parts = [f"catalog={self.catalog}"] if self.catalog is not None else []
        if self.per_request:
            parts.append(f"per_request={self.per_request!r}")
        if self.per_ms:
            parts.append(f"per_ms={self.per_ms!r}")
        for attr, rate in self.per_unit.items():
            tiers = self.tiers.get(attr)
            if rate or tiers is not None:
                part = f"per_unit[{attr}]={rate!r}"
                if tiers is not None:
                    steps = ", ".join(f"above {above:g}: {r!r}" for above, r in tiers.steps)
                    by = f" by {tiers.by}" if tiers.by not in (None, attr) else ""
                    part += f" ({steps}{by})"
                parts.append(part)
        return " ".join(parts) or "free"

    def document(self) -> dict[str, object]:
        """The price's non-zero components as a pricing document writes them."""
        doc: dict[str, object] = {}
        if self.catalog is not None:
            doc["catalog"] = self.catalog
        if self.per_ms:
            doc["per_ms"] = self.per_ms
        if self.per_request:
            doc["per_request"] = self.per_request
        units: dict[str, object] = {}
        for attr, rate in self.per_unit.items():
            tiers = self.tiers.get(attr)
            if tiers is None:
                units[attr] = rate
                continue
            steps = [{"above": above, "rate": r} for above, r in tiers.steps]
            units[attr] = {"rate": rate, "tiers": steps, **({"by": tiers.by} if tiers.by else {})}
        if units:
            doc["per_unit"] = units
        return doc

    def usage_from(self, attributes: Mapping[str, object]) -> dict[str, float]:
        """The usage this price charges for, read from span attributes.

        Only attributes named in ``per_unit`` are read; values that are not finite numbers
        >= 0 (strings, booleans, NaN, negatives, sequences) are left out, so they cost nothing
        and are not reported as usage. GenAI token counts are read under any of their names.
        """
        usage: dict[str, float] = {}
        genai = self._genai_keys
        for attr in self.per_unit:
            if attr in genai:
                continue
            value = attributes.get(attr)
            if isinstance(value, int | float) and not isinstance(value, bool):
                try:
                    amount = float(value)
                except OverflowError:
                    continue
                if math.isfinite(amount) and amount >= 0.0:
                    usage[attr] = amount
        if genai:
            usage.update(_genai.usage_amounts(attributes, genai))
        return usage

    def cost_nanos(
        self, duration_ms: float, usage: Mapping[str, float], *, usage_only: bool = False
    ) -> int:
        """The cost in integer nano-units of a span of ``duration_ms`` with ``usage``.

        ``usage`` is normally :meth:`usage_from`'s result; attributes missing from it count 0.
        ``usage_only`` leaves out ``per_request`` and ``per_ms`` (a nested span that the key
        does not target pays only for the usage it carries, docs/pricing.md).
        Raises PricingError when the result is negative, NaN or above about 9.2e9 units
        (a negative or NaN duration, or absurd prices times absurd usage), or when a GenAI
        part (cache reads, reasoning) exceeds its total: such a span must be recorded as a
        pricing error, never as a silent or wrapped-around amount.
        """
        if self._catalog is not None:
            # A catalog prices the call from its attributes and end time, which only
            # PriceMatch.charge() has: pricing without them would be a silent $0.
            raise PricingError(
                "a catalog price is charged by PriceMatch.charge(), not cost_nanos()"
            )
        base = 0.0 if usage_only else self.per_request + self.per_ms * duration_ms
        total = base
        for attr, rate, parts, tiers in self._terms:
            amount = usage.get(attr)
            if amount:
                if parts:
                    amount = _net(attr, amount, parts, usage)
                if tiers is not None:
                    rate = tiers.rate(rate, usage.get(tiers.by or attr, 0.0))  # noqa: PLW2901
                total += rate * amount
        if not 0.0 <= total <= _MAX_AMOUNT:
            raise PricingError(
                f"cost out of range ({total!r}) for duration_ms={duration_ms!r}, usage={usage!r}"
            )
        scaled = total * NANOS_PER_UNIT
        nanos = round(scaled)
        off_half = abs(abs(scaled - nanos) - 0.5)
        if off_half < 1e-6 or off_half < scaled * 1e-13:
            # Close to a half nano-unit, where float error could round the other way:
            # the exact decimal sum of the prices as written decides.
            nanos = self._exact_nanos(base, usage)
        if nanos > _MAX_NANOS:  # a total at _MAX_AMOUNT can round up to 2**53
            raise PricingError(
                f"cost out of range ({nanos} nano-units) for duration_ms={duration_ms!r}, "
                f"usage={usage!r}"
            )
        return nanos

    def flat_nanos(self, duration_ms: float) -> int:
        """``cost_nanos(duration_ms, {})`` for a price of duration and requests only (no
        ``per_unit``, no catalog), in the fewest steps: this runs for most spans.

        The same float operations as ``cost_nanos``; an amount of 0.01 or more, one
        within float error of half a nano-unit, or one out of range (it raises) is left
        to ``cost_nanos`` itself, so both always agree.
        """
        scaled = (self.per_request + self.per_ms * duration_ms) * NANOS_PER_UNIT
        if 0.0 <= scaled < 1e7:  # below it, cost_nanos' relative tolerance is under 1e-6
            nanos = round(scaled)
            if -0.499998 < scaled - nanos < 0.499998:
                return nanos
        return self.cost_nanos(duration_ms, _EMPTY_UNITS)

    def _exact_nanos(self, base: float, usage: Mapping[str, float]) -> int:
        total = Decimal(repr(base), EXACT)
        for attr, rate, parts, tiers in self._terms:
            amount = usage.get(attr)
            if amount:
                if tiers is not None:
                    rate = tiers.rate(rate, usage.get(tiers.by or attr, 0.0))  # noqa: PLW2901
                net = _net(attr, amount, parts, usage)
                total = EXACT.add(
                    total, EXACT.multiply(Decimal(repr(rate), EXACT), Decimal(repr(net), EXACT))
                )
        return decimal_to_nanos(total)

    def catalog_charge(
        self, attributes: Mapping[str, object], end_ms: int
    ) -> tuple[int, Mapping[str, float]]:
        """The catalog's price of the span's usage (:class:`otelcost.pricing.catalogs.Catalog`)."""
        assert self._catalog is not None, "catalog_charge needs a catalog price"
        return self._catalog.charge(attributes, end_ms)


def _parts(attr: str, units: Mapping[str, float]) -> tuple[str, ...]:
    """``_genai.priced_parts``, skipping the walk for an attribute that has no parts."""
    return _genai.priced_parts(attr, units) if attr in _genai.PARTS else ()


def _net(attr: str, amount: float, parts: tuple[str, ...], usage: Mapping[str, float]) -> float:
    """A GenAI total less its priced parts (which their own rates charge)."""
    for part in parts:
        amount -= usage.get(part, 0.0)
    if amount < 0.0:
        raise PricingError(f"{attr}: its parts {', '.join(parts)} exceed it in {dict(usage)!r}")
    return amount


def _load_catalog(name: object) -> Catalog:
    if not isinstance(name, str) or name not in CATALOGS:
        raise ValueError(f"catalog: must be one of {', '.join(CATALOGS)}, got {_describe(name)}")
    try:
        return catalog(name)
    except PricingError as exc:
        raise ValueError(f"catalog: {exc}") from None


class Charge(NamedTuple):
    """What one span pays: integer nano-units and the usage (by attribute) they cover."""

    nanos: int
    usage: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class PriceSchedule:
    """The prices of one entry over time (docs/pricing.md): ``prices[i]`` is in force from
    ``starts[i]`` (UTC epoch milliseconds, inclusive) until ``starts[i + 1]``.

    ``starts`` is strictly increasing; the first may be :data:`ALWAYS` (no start). Before
    the first start no price is in force: :meth:`at` raises PricingNotFoundError.
    """

    starts: tuple[int, ...]
    prices: tuple[Price, ...]

    def __post_init__(self) -> None:
        if not self.prices or len(self.starts) != len(self.prices):
            raise ValueError("a schedule needs one start per price and at least one price")
        if any(not isinstance(price, Price) for price in self.prices):
            raise TypeError("a schedule's prices must be Price objects")
        if any(a >= b for a, b in zip(self.starts, self.starts[1:], strict=False)):
            raise ValueError(f"schedule starts must be strictly increasing, got {self.starts}")

    def at(self, end_ms: int) -> Price:
        """The price in force at ``end_ms`` (UTC epoch ms): a bisect of the starts."""
        index = bisect_right(self.starts, end_ms) - 1
        if index < 0:
            raise PricingNotFoundError(
                f"no price in force at {format_instant(end_ms)}: "
                f"the first starts {format_instant(self.starts[0])}"
            )
        return self.prices[index]


def format_instant(ms: int) -> str:
    """``ms`` (UTC epoch milliseconds) as ISO 8601 UTC text, or ``always`` for :data:`ALWAYS`."""
    if ms == ALWAYS:
        return "always"
    instant = _EPOCH + ms * _ONE_MS
    text = instant.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}"
    return text + "Z"


@dataclass(frozen=True, slots=True)
class PriceMatch:
    """Which table entry prices an operation: the entry's ``key`` as written, its ``price``,
    and whether the key names the operation (``targeted``: an exact key or a glob other than
    a bare ``*``). Entry spans pay any match; nested spans a targeted one (docs/pricing.md).

    A dated entry also has a ``schedule``; its ``price`` is then the schedule's latest price
    and :meth:`price_at` gives the one in force at a given instant.
    """

    key: str
    price: Price
    targeted: bool
    schedule: PriceSchedule | None = None
    # A price of duration and requests only (no schedule, catalog or per_unit): charge()
    # then reads no attribute, which is most spans' case, so it is decided here once.
    _flat: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        price = self.price
        flat = self.schedule is None and price.catalog is None and not price.per_unit
        object.__setattr__(self, "_flat", flat)

    @property
    def flat_price(self) -> Price | None:
        """The price when it is flat (duration and requests only: no schedule, catalog or
        ``per_unit``), else None. A span that pays a flat price whole is charged
        ``flat_price.flat_nanos(duration_ms)``, whatever its attributes and end time."""
        return self.price if self._flat else None

    def price_at(self, end_ms: int) -> Price:
        """The price in force at ``end_ms`` (UTC epoch ms); PricingNotFoundError before a
        dated entry's first start."""
        schedule = self.schedule
        if schedule is None:
            return self.price
        try:
            return schedule.at(end_ms)
        except PricingNotFoundError as exc:
            raise PricingNotFoundError(f"{_short(self.key)}: {exc}") from None

    def charge(
        self,
        *,
        entry: bool,
        duration_ms: float,
        attributes: Mapping[str, object],
        end_ms: int,
    ) -> Charge | None:
        """What a span ending at ``end_ms`` (UTC epoch ms) pays under this entry (docs/pricing.md).

        An entry span, or a nested span the key targets, pays the whole price; a nested span
        the key does not target pays only the usage it carries, and None (not billable) when
        it carries none. A dated entry charges the price in force at ``end_ms``. Live pricing
        calls this and re-pricing of history its sum, :meth:`charge_sums`, so the two follow
        one rule. Raises PricingNotFoundError when a dated entry has no price in force at
        ``end_ms``, and PricingError for an amount out of range.
        """
        if self._flat:
            if entry or self.targeted:
                # tuple.__new__: NamedTuple's generated __new__ is one more Python frame.
                return _new_tuple(Charge, (self.price.flat_nanos(duration_ms), _EMPTY_UNITS))
            return None
        price = self.price if self.schedule is None else self.price_at(end_ms)
        if price.catalog is not None:
            return self._catalog_charge(price, entry, duration_ms, attributes, end_ms)
        usage = price.usage_from(attributes) if price.per_unit else _EMPTY_UNITS
        if not usage and price._genai_keys and _GENAI_OPERATION in attributes:
            _genai.require_usage(attributes)  # a GenAI call without usage is not $0
        if entry or self.targeted:
            return Charge(price.cost_nanos(duration_ms, usage), usage)
        if not usage:
            return None
        return Charge(price.cost_nanos(duration_ms, usage, usage_only=True), usage)

    def charge_sums(
        self,
        *,
        entry: bool,
        spans: int,
        duration_ms: float,
        usage: Mapping[str, float | Decimal],
        end_ms: int,
    ) -> int:
        """The nano-units :meth:`charge` would charge ``spans`` spans, all entry spans or all
        nested ones, ending at ``end_ms``, whose durations add up to ``duration_ms`` and
        usage to ``usage`` (units by attribute).

        Cost is linear in its inputs (requests, ms, units), so the sum of the charges is the
        charge of the sums: computed exactly (rationals) and rounded to the nano-unit once,
        where live pricing rounded once per span (at most half a nano-unit each).
        """
        price = self.price if self.schedule is None else self.price_at(end_ms)
        if price.catalog is not None or price.tiers:
            # Each call's price depends on that call alone (its model, its tier): sums of
            # many calls cannot be priced by it.
            what = "a catalog" if price.catalog is not None else "usage tiers"
            raise PricingError(f"{_short(self.key)}: {what} prices each call, not sums of calls")
        total = Fraction()
        if entry or self.targeted:
            total += Fraction(price.per_request) * spans
            total += Fraction(price.per_ms) * Fraction(duration_ms)
        for attr, rate, parts, _ in price._terms:
            units = usage.get(attr)
            if rate and units:
                net = Fraction(units) - sum((Fraction(usage.get(p, 0)) for p in parts), Fraction())
                total += Fraction(rate) * net
        return round(total * NANOS_PER_UNIT)

    def _catalog_charge(
        self,
        price: Price,
        entry: bool,
        duration_ms: float,
        attributes: Mapping[str, object],
        end_ms: int,
    ) -> Charge | None:
        whole = entry or self.targeted
        if not whole and _genai.read_usage(attributes) is None:
            return None
        nanos, usage = price.catalog_charge(attributes, end_ms)
        if whole and (price.per_request or price.per_ms):
            base = price.per_request + price.per_ms * duration_ms
            if not 0.0 <= base <= _MAX_AMOUNT:
                raise PricingError(f"cost out of range ({base!r}) for duration_ms={duration_ms!r}")
            nanos += round(base * NANOS_PER_UNIT)
        if nanos > _MAX_NANOS:
            raise PricingError(f"cost out of range ({nanos} nano-units) for usage={usage!r}")
        return Charge(nanos, usage)


class _Glob:
    """An operation pattern where ``*`` matches any run of characters (nothing else is special).

    Matching splits the pattern on ``*`` and finds the literal parts left to right, which is
    exact for such patterns and linear in practice (no regex backtracking).
    """

    __slots__ = ("_first", "_last", "_middle", "_min_len", "match", "pattern", "rank")

    def __init__(self, pattern: str, match: PriceMatch) -> None:
        parts = pattern.split(_WILDCARD)
        self.pattern = pattern
        self.match = match
        self._first, self._last = parts[0], parts[-1]
        self._middle = tuple(parts[1:-1])
        literal = sum(len(part) for part in parts)
        self._min_len = literal
        # Most specific first: more literal characters, then fewer wildcards, then the longer
        # literal prefix, then the pattern text so that the order never depends on the document.
        self.rank = (-literal, len(parts) - 1, -len(self._first), pattern)

    def matches(self, text: str) -> bool:
        if len(text) < self._min_len:
            return False
        if not text.startswith(self._first) or not text.endswith(self._last):
            return False
        pos, end = len(self._first), len(text) - len(self._last)
        for part in self._middle:
            found = text.find(part, pos, end)
            if found < 0:
                return False
            pos = found + len(part)
        return True


def _try_split(key: str) -> tuple[str, str] | None:
    """``_split_key`` for a valid key; None for any key it rejects (it says why)."""
    service, sep, operation = key.partition(":")
    if (
        not sep
        or not service
        or not operation
        or service != service.strip()
        or operation != operation.strip()
        or (_WILDCARD in service and service != _WILDCARD)
    ):
        return None
    while "**" in operation:
        operation = operation.replace("**", _WILDCARD)
    return service, operation


def _split_key(key: str, where: str) -> tuple[str, str]:
    """``service:operation`` split at the first colon, with ``*`` runs in the operation collapsed.

    Raises ValueError whose message starts with ``where``.
    """
    split = _try_split(key)
    if split is not None:
        return split
    service, sep, operation = key.partition(":")
    if not sep or not service or not operation:
        hint = ""
        if key in {"version", "currency", "region"}:
            hint = "; metadata needs the document form with a 'prices' object"
        raise ValueError(f"{where}: key must be 'service:operation' (either part may be '*'){hint}")
    for label, part in (("service", service), ("operation", operation)):
        if part != part.strip():
            raise ValueError(f"{where}: {label} has leading or trailing whitespace")
    if _WILDCARD in service and service != _WILDCARD:
        raise ValueError(f"{where}: the service is either a name or '*' (no partial globs)")
    while "**" in operation:
        operation = operation.replace("**", _WILDCARD)
    return service, operation


class PricingTable:
    """An immutable pricing snapshot: prices by ``service:operation`` key plus metadata.

    Keys are ``service:operation`` split at the first colon. The service is a name or ``*``;
    the operation is a name, ``*``, or a glob where ``*`` matches any characters (runs of
    ``*`` count as one). :meth:`resolve` picks the first match in this order:

    1. exact ``service:operation`` (an operation equal to a glob key verbatim, such as a
       normalized ``GET /users/*``, matches it here);
    2. ``service:<glob>``, most specific first: more literal characters, then fewer ``*``,
       then the longer literal prefix, then the pattern text;
    3. ``service:*``;
    4. ``*:operation``, then ``*:<glob>`` in the same order as 2;
    5. ``*:*``.

    Resolutions, including "no match", are memoized per table in a bounded cachetools FIFO
    cache. Lookups read it without a lock, which is safe because FIFO reads never reorder
    the cache; inserts and evictions are serialised by a lock.
    """

    __slots__ = (
        "_any",
        "_currency",
        "_entries",
        "_exact",
        "_globs",
        "_len",
        "_memo",
        "_region",
        "_version",
    )

    def __init__(
        self,
        prices: Mapping[str, Price | PriceSchedule | None],
        *,
        version: str | None = None,
        currency: str | None = None,
        region: str | None = None,
        memo_size: int = DEFAULT_MEMO_SIZE,
    ) -> None:
        """Build a table from ``{"service:operation": Price, PriceSchedule or None}`` (None
        means free). ``currency`` is an ISO 4217 code in upper case (``USD``).

        Raises PricingError naming the key for a malformed or duplicate key, or an empty table.
        """
        self._build(
            prices, None, version=version, currency=currency, region=region, memo_size=memo_size
        )

    @classmethod
    def _parsed(
        cls,
        prices: Mapping[str, Price | PriceSchedule | None],
        keys: Mapping[str, tuple[str, str]],
        *,
        version: str | None = None,
        currency: str | None = None,
        region: str | None = None,
        memo_size: int = DEFAULT_MEMO_SIZE,
    ) -> PricingTable:
        """The constructor for ``_parse_entries``' result: ``keys`` holds every key split
        (and so validated) by it, which is not done a second time."""
        table = cls.__new__(cls)
        table._build(
            prices, keys, version=version, currency=currency, region=region, memo_size=memo_size
        )
        return table

    def _build(
        self,
        prices: Mapping[str, Price | PriceSchedule | None],
        keys: Mapping[str, tuple[str, str]] | None,
        *,
        version: str | None,
        currency: str | None,
        region: str | None,
        memo_size: int,
    ) -> None:
        if memo_size < 1:
            raise ValueError(f"memo_size must be >= 1, got {memo_size}")
        if currency is not None and not _CURRENCY.fullmatch(currency):
            # Costs are accounted in upper-case codes: "usd" would leave every span
            # unpriced with currency_mismatch at run time, so it fails here, at load.
            hint = f" (write {currency.upper()!r})" if _CURRENCY.fullmatch(currency.upper()) else ""
            raise PricingError(
                f"currency: must be an ISO 4217 code in upper case such as 'USD', "
                f"got {_short(currency)}{hint}"
            )
        exact: dict[tuple[str, str], PriceMatch] = {}
        globs: dict[str, list[_Glob]] = {}
        wildcard: dict[str, PriceMatch] = {}
        seen: dict[tuple[str, str], str] = {}
        entries: list[PriceMatch] = []
        for key, maybe_price in prices.items():
            if not isinstance(key, str):
                raise TypeError(f"{key!r}: keys must be strings")
            schedule = maybe_price if isinstance(maybe_price, PriceSchedule) else None
            if schedule is not None:
                price = schedule.prices[-1]
            elif maybe_price is None:
                price = Price()
            elif isinstance(maybe_price, Price):
                price = maybe_price
            else:
                raise TypeError(
                    f"{key!r}: expected a Price, PriceSchedule or None, got {type(maybe_price)}"
                )
            if keys is not None:
                service, operation = keys[key]
            else:
                try:
                    service, operation = _split_key(key, _short(key))
                except ValueError as exc:
                    raise PricingError(str(exc)) from None
            if (service, operation) in seen:
                raise PricingError(
                    f"{_short(key)}: duplicates the entry {_short(seen[service, operation])}"
                )
            seen[service, operation] = key
            if operation == _WILDCARD:
                match = PriceMatch(key, price, targeted=False, schedule=schedule)
                wildcard[service] = match
            else:
                match = PriceMatch(key, price, targeted=True, schedule=schedule)
                exact[service, operation] = match
                if _WILDCARD in operation:
                    globs.setdefault(service, []).append(_Glob(operation, match))
            entries.append(match)
        if not seen:
            raise PricingError("prices: the table has no entries (every span would be unpriced)")
        self._exact = exact
        self._globs = {
            service: tuple(sorted(patterns, key=lambda g: g.rank))
            for service, patterns in globs.items()
        }
        self._any = wildcard
        self._len = len(seen)
        self._entries = tuple(entries)
        self._version = version
        self._currency = currency
        self._region = region
        # None memoizes "no entry matches", so unpriced operations do not rescan the globs.
        self._memo = _Memo(memo_size)

    @classmethod
    def parse(cls, doc: object, *, memo_size: int = DEFAULT_MEMO_SIZE) -> PricingTable:
        """Validate a decoded JSON pricing document, in the document or the flat seed form.

        Document form: ``{"version", "currency", "region", "prices": {key: entry}}``;
        flat form: ``{key: entry}``. An entry is null (free), an object with ``per_ms``,
        ``per_request`` (numbers or null) and ``per_unit`` (``{attribute: number or null}``),
        or a dated entry: an array of such objects, each with ``from`` (an ISO 8601 UTC
        instant, e.g. ``"2027-01-01T00:00:00Z"``) except possibly the first, in increasing
        order. ``cost_per_ms`` is accepted for ``per_ms`` (the flat seed form). Fields other
        than these may be added only as string annotations. A document built in Python may
        use :class:`Price` and :class:`PriceSchedule` objects as entries. Any invalid value
        fails the whole
        document with a PricingError whose message starts with the offending key.
        """
        if not isinstance(doc, Mapping):
            raise PricingError(f"document: must be a JSON object, got {_describe(doc)}")
        try:
            if "prices" in doc:
                return cls._parse_document(doc, memo_size)
            return cls._parsed(*_parse_entries(doc, ""), memo_size=memo_size)
        except ValueError as exc:
            raise PricingError(str(exc)) from None

    @classmethod
    def _parse_document(cls, doc: Mapping[object, object], memo_size: int) -> PricingTable:
        prices = doc["prices"]
        if not isinstance(prices, Mapping):
            raise ValueError(f"prices: must be an object, got {_describe(prices)}")
        metadata: dict[str, str | None] = {"version": None, "currency": None, "region": None}
        for name, value in doc.items():
            if name == "prices":
                continue
            if name in metadata:
                metadata[name] = _check_label(value, str(name))
            elif not isinstance(value, str):
                raise ValueError(
                    f"{_short(str(name))}: unknown field; only string annotations may be "
                    f"added, got {_describe(value)}"
                )
        return cls._parsed(
            *_parse_entries(prices, "prices"),
            version=metadata["version"],
            currency=metadata["currency"],
            region=metadata["region"],
            memo_size=memo_size,
        )

    @property
    def version(self) -> str | None:
        """The document's ``version`` (None in the flat form)."""
        return self._version

    @property
    def currency(self) -> str | None:
        """The currency the document declares; None when it declares none (the flat form)."""
        return self._currency

    @property
    def region(self) -> str | None:
        """The document's ``region``, if any."""
        return self._region

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[PriceMatch]:
        """Every entry, in the order of the document."""
        return iter(self._entries)

    def __repr__(self) -> str:
        return (
            f"PricingTable(version={self._version!r}, currency={self._currency!r}, "
            f"region={self._region!r}, entries={self._len})"
        )

    def resolve(self, service: str, operation: str, *, at_ms: int | None = None) -> Price:
        """The price of ``operation`` of ``service`` in force at ``at_ms`` (UTC epoch ms;
        None: now). PricingNotFoundError if nothing matches or a dated entry has no price
        in force then."""
        found = self.match(service, operation)
        if found is None:
            raise PricingNotFoundError(
                f"no price for service {service!r} operation {operation!r} "
                f"(table version {self._version!r} has no matching key, not even '*:*')"
            )
        if found.schedule is None:
            return found.price
        return found.price_at(time.time_ns() // 1_000_000 if at_ms is None else at_ms)

    def match(self, service: str, operation: str, *, nested: bool = False) -> PriceMatch | None:
        """The entry that prices ``operation`` of ``service`` (memoized), or None.

        ``nested``: the entry for a nested span, which pays only a key that names it. A key
        of ``*`` that names the operation (``*:redis *``) then comes before the service's
        bare ``svc:*``, which would only charge the span's usage; without such a key the
        answer is the same as for an entry span.
        """
        key = (service, operation)
        found = self._memo[key]
        if found is _MISSING:
            found = self._match(service, operation)
            with _memo_lock:
                self._memo[key] = found
        if nested and found is not None and not found.targeted and service != _WILDCARD:
            # The service's own exact keys and globs were tried before its bare "*".
            return self._targeted(_WILDCARD, operation) or found
        return found

    def _targeted(self, service: str, operation: str) -> PriceMatch | None:
        match = self._exact.get((service, operation))
        if match is not None:
            return match
        for glob in self._globs.get(service, ()):
            if glob.matches(operation):
                return glob.match
        return None

    def _match(self, service: str, operation: str) -> PriceMatch | None:
        for svc in (service, _WILDCARD):
            match = self._targeted(svc, operation) or self._any.get(svc)
            if match is not None:
                return match
        return None


class _Missing(enum.Enum):
    """The memo's answer for a key it does not hold."""

    MISSING = enum.auto()


_MISSING: Final = _Missing.MISSING


class _Memo(FIFOCache[tuple[str, str], "PriceMatch | None | _Missing"]):
    """A FIFO cache that answers a miss with _MISSING instead of raising KeyError (cheaper)."""

    def __missing__(self, key: tuple[str, str]) -> _Missing:
        return _MISSING


def _check_label(value: object, name: str) -> str | None:
    """A metadata string (version, currency, region); null means absent."""
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not value
        or len(value) > _MAX_LABEL
        or not value.isprintable()
    ):
        raise ValueError(
            f"{name}: must be a non-empty printable string of at most {_MAX_LABEL} characters, "
            f"got {_describe(value) if not isinstance(value, str) else _short(value)}"
        )
    return value


def _parse_entries(
    entries: Mapping[object, object], parent: str
) -> tuple[dict[str, Price | PriceSchedule | None], dict[str, tuple[str, str]]]:
    """The entries validated, and every key split into (service, operation).

    A plain key and entry (``_try_split``, ``_parse_plain``) take a path that builds no
    message; anything else, valid or not, takes the full one, whose error names the key.
    """
    prices: dict[str, Price | PriceSchedule | None] = {}
    keys: dict[str, tuple[str, str]] = {}
    for key, entry in entries.items():
        if type(key) is str:
            split = _try_split(key)
            if split is not None:
                if entry is None:
                    prices[key] = None
                    keys[key] = split
                    continue
                if type(entry) is dict:
                    price = _parse_plain(entry)
                    if price is not None:
                        prices[key] = price
                        keys[key] = split
                        continue
        where = f"{parent}[{_short(str(key))}]" if parent else _short(str(key))
        if not isinstance(key, str):
            raise ValueError(f"{where}: keys must be strings")
        keys[key] = _split_key(key, where)  # a malformed key before the entry's contents
        if entry is None or isinstance(entry, PriceSchedule):
            prices[key] = entry
        elif isinstance(entry, Sequence) and not isinstance(entry, str | bytes):
            prices[key] = _parse_schedule(entry, where)
        else:
            prices[key] = _parse_entry(entry, where)
    return prices, keys


# A rate the fast path takes as it is: a float (finite, >= 0) or an int below this.
_PLAIN_INT_LIMIT: Final = 2**63
_INF: Final = math.inf


def _plain_rate(value: object) -> float | None:
    """``_check_rate(value)`` for a valid rate of the usual kinds; None otherwise."""
    if type(value) is float:
        return value + 0.0 if 0.0 <= value < _INF else None  # NaN fails both comparisons
    if value is None:
        return 0.0
    if type(value) is int and 0 <= value < _PLAIN_INT_LIMIT:
        return float(value)
    return None


def _parse_plain(entry: dict[object, object]) -> Price | None:
    """``_parse_entry`` for a plain, valid price object: rates that ``_plain_rate`` takes
    (``per_ms`` or ``cost_per_ms``, ``per_request``), ``per_unit`` as a dict of them (or
    null) and string annotations, checked without building a message.

    None for anything else (a catalog, tiers, ``from``, a bad or repeated value): the full
    parser then decides, and raises the error it always has.
    """
    per_ms = per_request = 0.0
    has_ms = has_request = False
    units: dict[str, float] = {}
    for name, value in entry.items():
        if type(name) is not str:
            return None
        if name in {"per_ms", "cost_per_ms"}:
            rate = _plain_rate(value)
            if rate is None or has_ms:
                return None
            per_ms, has_ms = rate, True
        elif name == "per_request":
            rate = _plain_rate(value)
            if rate is None or has_request:
                return None
            per_request, has_request = rate, True
        elif name == "per_unit":
            if value is None:
                continue
            if type(value) is not dict:
                return None
            for attr, unit_rate in value.items():
                rate = _plain_rate(unit_rate)
                if rate is None or type(attr) is not str or not attr:
                    return None
                units[attr] = rate
        elif type(value) is not str or name in {"catalog", _FROM}:
            return None
    return Price._validated(per_ms, per_request, units)


_FROM: Final = "from"
_EXAMPLE: Final = "'2027-01-01T00:00:00Z'"
# Checked before fromisoformat, whose accepted forms differ between Python versions.
_INSTANT: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{3})?)?(?P<zone>Z|[+-]\d{2}:\d{2})"
)


def _parse_schedule(items: Sequence[object], where: str) -> PriceSchedule:
    """A dated entry: an array of price objects, each with ``from`` (an ISO 8601 UTC
    instant) except possibly the first, in increasing order of ``from``."""
    if not items:
        raise ValueError(f"{where}: a dated entry needs at least one price")
    starts: list[int] = []
    prices: list[Price] = []
    for index, item in enumerate(items):
        item_where = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            raise ValueError(
                f"{item_where}: a dated price must be an object, got {_describe(item)}"
            )
        if _FROM in item:
            start = _parse_instant(item[_FROM], f"{item_where}.from")
        elif index == 0:
            start = ALWAYS
        else:
            raise ValueError(f"{item_where}: needs 'from' (only the first price may omit it)")
        if starts and start <= starts[-1]:
            problem = "repeats" if start == starts[-1] else "is earlier than"
            raise ValueError(
                f"{item_where}.from: {format_instant(start)} {problem} the 'from' of "
                f"[{index - 1}] ({format_instant(starts[-1])}); prices must be in increasing "
                "order of 'from', without duplicates"
            )
        starts.append(start)
        prices.append(_parse_entry(item, item_where, dated=True))
    return PriceSchedule(tuple(starts), tuple(prices))


def _parse_instant(value: object, where: str) -> int:
    """An ISO 8601 instant in UTC (``Z`` or ``+00:00``) as epoch milliseconds."""
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be a string such as {_EXAMPLE}, got {_describe(value)}")
    form = _INSTANT.fullmatch(value)
    if form is None:
        raise ValueError(
            f"{where}: not an ISO 8601 instant like {_EXAMPLE} (seconds and milliseconds "
            f"optional): {_short(value)}"
        )
    if form["zone"] not in {"Z", "+00:00", "-00:00"}:
        raise ValueError(f"{where}: must be in UTC ('Z' or '+00:00'), got {_short(value)}")
    try:
        instant = datetime.fromisoformat(value[: form.start("zone")] + "+00:00")
    except ValueError as exc:
        raise ValueError(f"{where}: not a valid date and time ({exc}): {_short(value)}") from None
    return (instant - _EPOCH) // _ONE_MS


_RATE_FIELDS: Final = {"per_ms": "per_ms", "cost_per_ms": "per_ms", "per_request": "per_request"}


def _parse_entry(entry: object, where: str, *, dated: bool = False) -> Price:
    """One price object; ``dated``: an item of a dated entry, whose ``from`` the caller read."""
    if isinstance(entry, Price):  # a dict source built in Python may hold Price objects
        return entry
    if not isinstance(entry, Mapping):
        raise ValueError(
            f"{where}: an entry must be an object, an array of dated prices or null, "
            f"got {_describe(entry)}"
        )
    rates = {"per_ms": 0.0, "per_request": 0.0}
    given: dict[str, str] = {}
    units: dict[str, float] = {}
    tiers: dict[str, Tiers] = {}
    catalog_name: str | None = None
    for name, value in entry.items():
        field_where = (
            f"{where}.{name}"
            if isinstance(name, str) and len(name) <= 64
            else (f"{where}[{_short(str(name))}]")
        )
        target = _RATE_FIELDS.get(name) if isinstance(name, str) else None
        if target is not None:
            if target in given:
                raise ValueError(f"{field_where}: {given[target]!r} is given too; use only one")
            given[target] = str(name)
            rates[target] = _check_rate(value, field_where)
        elif name == "per_unit":
            units, tiers = _parse_units(value, field_where)
        elif name == "catalog":
            _load_catalog_at(value, field_where)
            catalog_name = str(value)
        elif name == _FROM:
            if not dated:  # a lone dated price would silently be in force at all times
                raise ValueError(
                    f"{field_where}: 'from' belongs to a dated entry, an array of prices "
                    '(e.g. [{"per_ms": 1e-6}, {"from": "2027-01-01T00:00:00Z", "per_ms": 2e-6}])'
                )
        elif not isinstance(value, str):
            raise ValueError(
                f"{field_where}: unknown field; only string annotations may be added, "
                f"got {_describe(value)}"
            )
    try:
        return Price(
            per_ms=rates["per_ms"],
            per_request=rates["per_request"],
            per_unit=units,
            tiers=tiers,
            catalog=catalog_name,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}.{exc}") from None


def _load_catalog_at(value: object, where: str) -> None:
    try:
        _load_catalog(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {str(exc).removeprefix('catalog: ')}") from None


def _parse_units(value: object, where: str) -> tuple[dict[str, float], dict[str, Tiers]]:
    """Rates by attribute, each a number, null (free) or ``{"rate", "tiers", "by"}``."""
    if value is None:
        return {}, {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: must be an object of attribute: price, got {_describe(value)}")
    units: dict[str, float] = {}
    tiers: dict[str, Tiers] = {}
    for attr, rate in value.items():
        if not isinstance(attr, str) or not attr:
            raise ValueError(f"{where}: attribute names must be non-empty strings: {attr!r}")
        attr_where = f"{where}[{_short(attr)}]"
        if isinstance(rate, Mapping):
            units[attr], tiers[attr] = _parse_tiered(rate, attr_where)
        else:
            units[attr] = _check_rate(rate, attr_where)
    return units, tiers


def _parse_tiered(doc: Mapping[object, object], where: str) -> tuple[float, Tiers]:
    unknown = set(doc) - {"rate", "tiers", "by"}
    if unknown:
        raise ValueError(
            f"{where}: unknown field {sorted(map(str, unknown))[0]!r}; "
            "a tiered rate is {'rate': R, 'tiers': [{'above': N, 'rate': R}, ...], 'by': ATTR}"
        )
    if "rate" not in doc:
        raise ValueError(f"{where}.rate: missing (the rate below the first tier)")
    base = _check_rate(doc["rate"], f"{where}.rate")
    steps = doc.get("tiers")
    if not isinstance(steps, list) or not steps:
        raise ValueError(f"{where}.tiers: must be a non-empty array of {{'above': N, 'rate': R}}")
    pairs: list[tuple[float, float]] = []
    for i, step in enumerate(steps):
        step_where = f"{where}.tiers[{i}]"
        if not isinstance(step, Mapping) or set(step) != {"above", "rate"}:
            raise ValueError(f"{step_where}: must be {{'above': N, 'rate': R}}")
        above = step["above"]
        if above is None:
            raise ValueError(f"{step_where}.above: must be a number >= 0")
        pairs.append(
            (
                _check_rate(above, f"{step_where}.above"),
                _check_rate(step["rate"], f"{step_where}.rate"),
            )
        )
    by = doc.get("by")
    try:
        return base, Tiers(tuple(pairs), by)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None
