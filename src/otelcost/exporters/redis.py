"""RedisBudgetExporter: cost records -> budgets in Redis, one script call per service per flush."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otelcost.budget.exporter import BudgetExporter
from otelcost.budget.redis_store import RedisBudgetStore

__all__ = ["RedisBudgetExporter"]


class RedisBudgetExporter(BudgetExporter):
    """A BudgetExporter over a RedisBudgetStore.

    ``redis`` is a URL (``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
    ``redis+sentinel://``; clients built from URLs get 1 s socket/connect timeouts, two
    retries with jittered exponential backoff and health checks) or a redis-py client
    (``Redis``, a Sentinel master, ``RedisCluster``) used as configured. ``budgets`` is
    anything ``otelcost.budget.load_budgets`` accepts (None: ``OTELCOST_BUDGETS``).
    ``clock`` (epoch ms) is for tests; by default the Redis server's clock decides windows.
    Other keyword arguments are BudgetExporter's (flush_interval, max_hold, ...).
    """

    def __init__(
        self,
        redis: Any,
        budgets: Any = None,
        *,
        clock: Callable[[], int] | None = None,
        fence_ttl: float = 7 * 86_400.0,
        **options: Any,
    ) -> None:
        super().__init__(
            RedisBudgetStore(redis, budgets, clock=clock, fence_ttl=fence_ttl), **options
        )
