"""The budget store interface, and the types that budget constructors accept.

``BudgetStore`` is what every consumer of a store relies on: the budget exporters
(``apply``), the enforcer (``apply`` with fences), ``MetricsCostExporter``'s budget gauges
(``services``, ``status``) and ``BudgetGuard`` (``read_flag``). ``InMemoryBudgetStore`` and
``RedisBudgetStore`` both provide it.
"""

from __future__ import annotations

from typing import Protocol

from otelcost._redis import RedisLike
from otelcost.budget.fence import Fence
from otelcost.budget.model import BudgetSet, BudgetsLike
from otelcost.budget.status import BudgetStatus

__all__ = ["BudgetStore", "BudgetsLike", "RedisLike"]


class BudgetStore(Protocol):
    """A store of budgets: spend per service and period, throttle flags."""

    @property
    def budgets(self) -> BudgetSet:
        """The budgets the store evaluates."""
        ...

    def apply(self, service: str, delta_nanos: int, fence: Fence | None = None) -> BudgetStatus:
        """Add ``delta_nanos`` of spend to ``service`` (at most once per ``fence``)."""
        ...

    def status(self, service: str) -> BudgetStatus:
        """The service's budgets as they stand, without adding spend."""
        ...

    def services(self) -> list[str]:
        """The services with a budget or recorded spend."""
        ...

    def read_flag(self, service: str) -> tuple[str | None, int | None]:
        """The throttle flag: ``(value, remaining ttl in ms)``; ``(None, None)`` if absent."""
        ...
