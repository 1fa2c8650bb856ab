"""Budgets: rolling spend per service, EMA burn rate, hard cap and throttle flags.

The policy is described in ``otelcost.budget.policy``; RedisBudgetStore runs it inside
Redis (one Lua script call per service per flush), InMemoryBudgetStore in this process.
The ``redis`` package is only needed once a Redis store, exporter or guard is created.
"""

from __future__ import annotations

from otelcost.budget.fence import Fence, FenceOverlapError
from otelcost.budget.guard import BudgetGuard, Throttle
from otelcost.budget.memory_store import InMemoryBudgetStore
from otelcost.budget.middleware import BudgetASGIMiddleware, BudgetWSGIMiddleware
from otelcost.budget.model import (
    BUDGETS_ENV,
    MAX_DELTA_NANOS,
    MAX_SERVICE_LEN,
    PERIODS,
    Budget,
    BudgetSet,
    load_budgets,
)
from otelcost.budget.redis_store import RedisBudgetStore
from otelcost.budget.status import BudgetStatus, BudgetUsage
from otelcost.errors import BudgetConfigError
from otelcost.exporters.budget import BudgetExporter, budget_exporter

__all__ = [
    "BUDGETS_ENV",
    "MAX_DELTA_NANOS",
    "MAX_SERVICE_LEN",
    "PERIODS",
    "Budget",
    "BudgetASGIMiddleware",
    "BudgetConfigError",
    "BudgetExporter",
    "BudgetGuard",
    "BudgetSet",
    "BudgetStatus",
    "BudgetUsage",
    "BudgetWSGIMiddleware",
    "Fence",
    "FenceOverlapError",
    "InMemoryBudgetStore",
    "RedisBudgetStore",
    "Throttle",
    "budget_exporter",
    "load_budgets",
]
