"""Budget definitions, budgets files and the ``OTELCOST_BUDGETS`` environment variable.

A budget caps what one service may spend over a rolling period. ``service="*"`` gives
every service its own budget of that size; a budget naming the service replaces the
``"*"`` budget of the same period for it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, Union

from otelcost import _json, environment
from otelcost.errors import BudgetConfigError
from otelcost.money import to_nanos

__all__ = [
    "BUDGETS_ENV",
    "MAX_DELTA_NANOS",
    "MAX_LIMIT",
    "MAX_SERVICE_LEN",
    "PERIODS",
    "Budget",
    "BudgetSet",
    "BudgetsLike",
    "Period",
    "check_apply",
    "load_budgets",
    "parse_duration",
]

BUDGETS_ENV = environment.BUDGETS
MAX_LIMIT = 1e12  # currency units; far beyond any real budget, and exact in the Lua script
MAX_SERVICE_LEN = 256  # characters of a service name the stores accept
MAX_DELTA_NANOS = 2**53  # exclusive bound of one apply's delta (exact in the Lua script)

_SECOND_MS = 1000
_MINUTE_MS = 60 * _SECOND_MS
_HOUR_MS = 60 * _MINUTE_MS
_DAY_MS = 24 * _HOUR_MS


@dataclass(frozen=True, slots=True)
class Period:
    """A budget period and how its rolling spend is bucketed.

    Rolling spend is the sum of the current bucket and the ``buckets - 1`` before it, so it
    always covers the last ``period - bucket`` to ``period`` of history.
    """

    name: str
    ms: int
    bucket_ms: int

    @property
    def buckets(self) -> int:
        return self.ms // self.bucket_ms


PERIODS: Mapping[str, Period] = {
    p.name: p
    for p in (
        Period("1h", _HOUR_MS, 5 * _MINUTE_MS),  # 12 buckets
        Period("24h", _DAY_MS, _HOUR_MS),  # 24 buckets
        Period("7d", 7 * _DAY_MS, 6 * _HOUR_MS),  # 28 buckets
        Period("30d", 30 * _DAY_MS, _DAY_MS),  # 30 buckets
    )
}

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNIT_MS = {
    "ms": 1,
    "s": _SECOND_MS,
    "m": _MINUTE_MS,
    "h": _HOUR_MS,
    "d": _DAY_MS,
    None: _SECOND_MS,
}


def _shown(value: object) -> str:
    """``repr(value)`` for an error message: short, and safe for any value (a JSON integer
    of thousands of digits has no repr, and a huge string would flood the logs)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except ValueError:  # e.g. a list holding such an integer
        return f"<a {type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def parse_duration(value: str | float) -> int:
    """Milliseconds of ``value``: a number of seconds or a string like "500ms", "30s", "1m", "2h".

    Raises ValueError for anything else (negative, NaN, booleans, unknown units).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {_shown(value)}")
    if isinstance(value, (int, float)):
        # Ints are finite (and may be too large for isfinite); NaN fails both tests.
        if not value >= 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"not a duration: {_shown(value)}")
        return round(value * _SECOND_MS)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            ms = float(match.group(1)) * _UNIT_MS[match.group(2)]
            if math.isfinite(ms):  # hundreds of digits parse as infinity
                return round(ms)
    raise ValueError(f"not a duration: {_shown(value)}")


@dataclass(frozen=True, slots=True)
class Budget:
    """A spend limit for one service (or ``"*"``: each service) over a rolling period.

    - ``limit``: currency units (> 0), kept exactly as integer nano-units (``limit_nanos``).
    - ``period``: "1h", "24h", "7d" or "30d".
    - ``window``: the evaluation window of the burn-rate EMA (seconds or "1m"-style string,
      at least 1 s and at most the period). At every window rollover the window's spend is
      projected to a full period and folded into the EMA with weight ``ema_alpha``.
    - Throttle when the EMA exceeds the limit for ``consecutive`` windows in a row, or at
      once when rolling spend reaches the limit (``hard_cap``). An EMA throttle is released
      once the EMA stayed below ``release_ratio * limit`` for ``release_windows`` windows.

    Invalid values raise BudgetConfigError naming the field.
    """

    service: str
    limit: float
    period: str = "24h"
    window: float | str = 60.0
    ema_alpha: float = 0.1
    consecutive: int = 3
    release_ratio: float = 0.8
    release_windows: int = 5
    hard_cap: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.service, str) or not 0 < len(self.service) <= MAX_SERVICE_LEN:
            raise _FieldError(
                self.service, f"service must be a non-empty string (<= {MAX_SERVICE_LEN} chars)"
            )
        limit = self.limit
        if isinstance(limit, bool) or not isinstance(limit, (int, float)):
            raise _FieldError(self.service, f"limit must be a number, got {_shown(limit)}")
        # Range first: an int too large for a double makes isfinite() raise OverflowError.
        if not 0 < limit <= MAX_LIMIT or not math.isfinite(limit) or to_nanos(limit) < 1:
            raise _FieldError(
                self.service,
                f"limit must be a number > 0 and <= {MAX_LIMIT:g}, got {_shown(limit)}",
            )
        if not isinstance(self.period, str) or self.period not in PERIODS:
            raise _FieldError(
                self.service,
                f"unknown period {_shown(self.period)} (expected one of {', '.join(PERIODS)})",
            )
        try:
            window_ms = parse_duration(self.window)
        except ValueError:
            raise _FieldError(
                self.service, f"window: not a duration: {_shown(self.window)}"
            ) from None
        if not _SECOND_MS <= window_ms <= PERIODS[self.period].ms:
            raise _FieldError(
                self.service, f"window must be between 1s and the period, got {_shown(self.window)}"
            )
        object.__setattr__(self, "window", window_ms / _SECOND_MS)
        _check_number(self.service, "ema_alpha", self.ema_alpha, low=0.001, low_inclusive=True)
        _check_number(self.service, "release_ratio", self.release_ratio, low=0.0)
        _check_count(self.service, "consecutive", self.consecutive)
        _check_count(self.service, "release_windows", self.release_windows)
        if not isinstance(self.hard_cap, bool):
            raise _FieldError(
                self.service, f"hard_cap must be true or false, got {_shown(self.hard_cap)}"
            )

    @property
    def limit_nanos(self) -> int:
        return to_nanos(self.limit)

    @property
    def window_ms(self) -> int:
        return round(float(self.window) * _SECOND_MS)

    @property
    def spec(self) -> Period:
        return PERIODS[self.period]

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, where: str = "budget") -> Budget:
        """Build a budget from a budgets-file entry; unknown keys are rejected."""
        if not isinstance(doc, Mapping):
            raise BudgetConfigError(f"{where}: expected an object, got {type(doc).__name__}")
        unknown = sorted(set(doc) - _FIELDS, key=_shown)
        if unknown:
            raise BudgetConfigError(
                f"{where}: unknown key {_shown(unknown[0])} (known: {', '.join(sorted(_FIELDS))})"
            )
        for required in ("service", "limit"):
            if required not in doc:
                raise BudgetConfigError(f"{where}: missing {required!r}")
        try:
            return cls(**doc)
        except _FieldError as exc:
            raise BudgetConfigError(f"{where}: {exc.detail}") from None


_FIELDS = frozenset(Budget.__dataclass_fields__)


class _FieldError(BudgetConfigError):
    """A Budget field is invalid; ``detail`` is the message without the service prefix."""

    def __init__(self, service: object, detail: str) -> None:
        super().__init__(f"budget for service {_shown(service)}: {detail}")
        self.detail = detail


def _check_number(
    service: str, name: str, value: object, *, low: float, low_inclusive: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _FieldError(service, f"{name} must be a number, got {_shown(value)}")
    above = value >= low if low_inclusive else value > low
    if not (above and value <= 1):
        bracket = "[" if low_inclusive else "("
        raise _FieldError(service, f"{name} must be in {bracket}{low}, 1], got {_shown(value)}")


def _check_count(service: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
        raise _FieldError(service, f"{name} must be an integer in [1, 10000], got {_shown(value)}")


class BudgetSet:
    """An immutable set of budgets that resolves which ones apply to a service.

    For each period, a budget naming the service wins over the ``"*"`` budget. Two budgets
    for the same service and period are a configuration error.
    """

    __slots__ = ("_by_service", "_cache", "_wildcard", "budgets")

    def __init__(self, budgets: Iterable[Budget] = ()) -> None:
        self.budgets: tuple[Budget, ...] = tuple(budgets)
        self._by_service: dict[str, dict[str, Budget]] = {}
        self._wildcard: dict[str, Budget] = {}
        for budget in self.budgets:
            if not isinstance(budget, Budget):
                raise BudgetConfigError(f"expected a Budget, got {type(budget).__name__}")
            slot = (
                self._wildcard
                if budget.service == "*"
                else self._by_service.setdefault(budget.service, {})
            )
            if budget.period in slot:
                raise BudgetConfigError(
                    f"two budgets for service {budget.service!r} and period {budget.period!r}"
                )
            slot[budget.period] = budget
        self._cache: dict[str, tuple[Budget, ...]] = {}

    def for_service(self, service: str) -> tuple[Budget, ...]:
        """The budgets that apply to ``service``, shortest period first."""
        found = self._cache.get(service)
        if found is None:
            merged = dict(self._wildcard)
            merged.update(self._by_service.get(service, {}))
            found = tuple(sorted(merged.values(), key=lambda b: PERIODS[b.period].ms))
            if len(self._cache) < 100_000:  # bounded: service names come from the app
                self._cache[service] = found
        return found

    def smallest_limit_nanos(self, service: str) -> int | None:
        """The smallest limit among the budgets of ``service`` (None when it has none)."""
        limits = [b.limit_nanos for b in self.for_service(service)]
        return min(limits) if limits else None

    def __bool__(self) -> bool:
        return bool(self.budgets)

    def __len__(self) -> int:
        return len(self.budgets)

    def __repr__(self) -> str:
        return f"BudgetSet({list(self.budgets)!r})"


def check_apply(service: object, delta_nanos: object) -> None:
    """Raise ValueError unless a store can apply ``delta_nanos`` to ``service``."""
    if not isinstance(service, str) or not 0 < len(service) <= MAX_SERVICE_LEN:
        raise ValueError(
            f"service must be a non-empty string (<= {MAX_SERVICE_LEN} chars), got {service!r}"
        )
    if isinstance(delta_nanos, bool) or not isinstance(delta_nanos, int):
        raise ValueError(f"delta_nanos must be an int, got {type(delta_nanos).__name__}")
    if not 0 <= delta_nanos < MAX_DELTA_NANOS:
        raise ValueError(f"delta_nanos must be in [0, 2**53), got {delta_nanos}")


BudgetsLike: TypeAlias = Union[
    BudgetSet, Budget, str, "os.PathLike[str]", Mapping[str, Any], Sequence[Any], None
]
"""What ``budgets=`` parameters accept (see ``load_budgets``): a BudgetSet, a Budget, a
budgets-file path, a budgets document, a sequence of Budgets or entry dicts, or None for
the file named by ``OTELCOST_BUDGETS``."""


def load_budgets(
    source: BudgetsLike = None, *, environ: environment.Environ | None = None
) -> BudgetSet:
    """Budgets from a BudgetSet, Budget objects, budgets-file dicts, a document or a file path.

    ``None`` reads the path in ``OTELCOST_BUDGETS`` from ``environ`` (default ``os.environ``;
    no budgets when it is unset or blank).
    A budgets file is JSON: ``{"budgets": [{"service": "payment-svc", "limit": 500,
    "period": "24h"}, ...]}``. Anything invalid raises BudgetConfigError naming the entry.
    """
    if isinstance(source, BudgetSet):
        return source
    if source is None:
        path = environment.read(BUDGETS_ENV, environ)
        return load_budgets(Path(path)) if path else BudgetSet()
    if isinstance(source, Budget):
        return BudgetSet([source])
    if isinstance(source, (str, os.PathLike)):
        return _load_file(Path(source))
    if isinstance(source, Mapping):
        return _from_document(source, origin="budgets document")
    if isinstance(source, Sequence):
        return _from_entries(source, origin="budgets")
    raise BudgetConfigError(f"cannot load budgets from {type(source).__name__}")


def _load_file(path: Path) -> BudgetSet:
    try:
        raw = path.read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise BudgetConfigError(
            f"budgets file {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    try:
        doc = _json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BudgetConfigError(f"budgets file {path}: not valid JSON: {exc}") from None
    return _from_document(doc, origin=f"budgets file {path}")


def _from_document(doc: object, *, origin: str) -> BudgetSet:
    if not isinstance(doc, Mapping):
        raise BudgetConfigError(f'{origin}: expected an object {{"budgets": [...]}}')
    unknown = sorted(set(doc) - {"budgets"}, key=_shown)
    if unknown:
        raise BudgetConfigError(f"{origin}: unknown key {_shown(unknown[0])} (expected 'budgets')")
    entries = doc.get("budgets")
    if not isinstance(entries, list):
        raise BudgetConfigError(f"{origin}: 'budgets' must be a list")
    return _from_entries(entries, origin=origin)


def _from_entries(entries: Sequence[Any], *, origin: str) -> BudgetSet:
    budgets = []
    for index, entry in enumerate(entries):
        if isinstance(entry, Budget):
            budgets.append(entry)
            continue
        label = f"{origin}: budgets[{index}]"
        if isinstance(entry, Mapping) and isinstance(entry.get("service"), str):
            label += f" (service {entry['service']!r})"
        budgets.append(Budget.from_dict(entry, where=label))
    try:
        return BudgetSet(budgets)
    except BudgetConfigError as exc:
        raise BudgetConfigError(f"{origin}: {exc}") from None
