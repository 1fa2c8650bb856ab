"""What a budget store reports for a service: per-budget usage and the throttle decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from otelcost.money import NANOS_PER_UNIT, from_nanos

__all__ = ["BudgetStatus", "BudgetUsage"]


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """One budget of one service at one moment. Exact values are integer nano-units.

    ``ema_nanos`` is the EMA of the projected spend per period (window spend scaled to the
    period), the "burn rate" compared against the limit. ``hard_capped`` means rolling spend
    reached the limit; ``ema_throttled`` means the EMA exceeded the limit for ``consecutive``
    windows and has not yet stayed below ``release_ratio * limit`` for ``release_windows``.
    """

    period: str
    limit_nanos: int
    spend_nanos: int
    ema_nanos: float
    consecutive_over: int
    windows_under: int
    hard_capped: bool
    ema_throttled: bool

    @property
    def throttling(self) -> bool:
        """This budget asks for the service to be throttled."""
        return self.hard_capped or self.ema_throttled

    @property
    def limit(self) -> float:
        return from_nanos(self.limit_nanos)

    @property
    def spend(self) -> float:
        """Rolling spend over the period, in currency units."""
        return from_nanos(self.spend_nanos)

    @property
    def utilization(self) -> float:
        """Rolling spend / limit (1.0 = the whole budget is spent)."""
        return self.spend_nanos / self.limit_nanos

    @property
    def ema_rate(self) -> float:
        """The EMA burn rate: projected spend per period, in currency units."""
        return self.ema_nanos / NANOS_PER_UNIT

    @property
    def reason(self) -> str | None:
        """ "hard_cap", "ema", "hard_cap+ema", or None when this budget does not throttle."""
        if self.hard_capped and self.ema_throttled:
            return "hard_cap+ema"
        if self.hard_capped:
            return "hard_cap"
        return "ema" if self.ema_throttled else None

    def to_dict(self) -> dict[str, Any]:
        """The report's per-budget object (money in currency units, extra exact nano fields)."""
        return {
            "period": self.period,
            "limit": self.limit,
            "spend": self.spend,
            "utilization": self.utilization,
            "ema_rate": self.ema_rate,
            "consecutive_over": self.consecutive_over,
            "windows_under": self.windows_under,
            "throttling": self.reason,
            "limit_nanos": self.limit_nanos,
            "spend_nanos": self.spend_nanos,
        }


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A service's budgets and whether it is throttled.

    From ``apply``: ``throttled`` is the decision of that evaluation, and
    ``throttle_ttl_ms`` the TTL given to the throttle flag (None when not throttled);
    ``duplicate`` says the fence showed the flush was already applied (nothing changed).
    From ``status``: ``throttled`` and ``throttle_ttl_ms`` describe the throttle flag as it
    is now (which is what BudgetGuard enforces, including flags set by hand), and the usage
    numbers are what an evaluation at this moment would compute, with nothing written.
    """

    service: str
    throttled: bool
    throttle_ttl_ms: int | None
    budgets: tuple[BudgetUsage, ...]
    now_ms: int
    duplicate: bool = False
    flag: str | None = None

    @property
    def throttle_ttl(self) -> float | None:
        """Seconds until the throttle flag expires unless re-evaluated (None: not throttled)."""
        return None if self.throttle_ttl_ms is None else self.throttle_ttl_ms / 1000

    def to_dict(self) -> dict[str, Any]:
        """The report's per-service object (``otelcost report --json``)."""
        return {
            "service": self.service,
            "throttled": self.throttled,
            "throttle_ttl": self.throttle_ttl,
            "budgets": [usage.to_dict() for usage in self.budgets],
        }
