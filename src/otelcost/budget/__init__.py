"""Budgets: rolling spend per service, EMA burn rate, hard cap and throttle flags.

The policy is described in ``otelcost.budget.policy``; RedisBudgetStore runs it inside
Redis (one Lua script call per service per flush), InMemoryBudgetStore in this process.
Plain ``redis://``, ``rediss://`` and ``unix://`` URLs are served by otelcost's own client;
the ``redis`` package is needed for cluster and sentinel URLs, URLs with options and
``RedisBudgetStore.client``.
Each name is imported on first use (PEP 562 ``__getattr__``), so that ``import otelcost``
and installing without budgets load none of this package's modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from otelcost._lazy import lazy_names

if TYPE_CHECKING:
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
    from otelcost.errors import BudgetConfigError, RedisReplyError
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
    "RedisReplyError",
    "Throttle",
    "budget_exporter",
    "load_budgets",
]

# Exported name -> the module defining it, imported when the name is first looked up.
_LAZY = {
    "BUDGETS_ENV": "otelcost.budget.model",
    "MAX_DELTA_NANOS": "otelcost.budget.model",
    "MAX_SERVICE_LEN": "otelcost.budget.model",
    "PERIODS": "otelcost.budget.model",
    "Budget": "otelcost.budget.model",
    "BudgetASGIMiddleware": "otelcost.budget.middleware",
    "BudgetConfigError": "otelcost.errors",
    "BudgetExporter": "otelcost.exporters.budget",
    "BudgetGuard": "otelcost.budget.guard",
    "BudgetSet": "otelcost.budget.model",
    "BudgetStatus": "otelcost.budget.status",
    "BudgetUsage": "otelcost.budget.status",
    "BudgetWSGIMiddleware": "otelcost.budget.middleware",
    "Fence": "otelcost.budget.fence",
    "FenceOverlapError": "otelcost.budget.fence",
    "InMemoryBudgetStore": "otelcost.budget.memory_store",
    "RedisBudgetStore": "otelcost.budget.redis_store",
    "RedisReplyError": "otelcost.errors",
    "Throttle": "otelcost.budget.guard",
    "budget_exporter": "otelcost.exporters.budget",
    "load_budgets": "otelcost.budget.model",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
