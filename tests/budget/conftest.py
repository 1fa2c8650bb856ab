"""Budget-store fixtures: an injectable clock and stores of both kinds driven by it."""

from __future__ import annotations

from typing import Any

import pytest
from _budget_support import Clock, StoreFactory

from otelcost.budget import Budget, InMemoryBudgetStore, RedisBudgetStore


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest, clock: Clock) -> StoreFactory:
    """Builds an InMemoryBudgetStore or a RedisBudgetStore (real server) on ``clock``."""
    if request.param == "memory":

        def memory(budgets: list[Budget], **options: Any) -> InMemoryBudgetStore:
            return InMemoryBudgetStore(budgets, clock=clock, **options)

        return memory
    client = request.getfixturevalue("redis_client")

    def redis(budgets: list[Budget], **options: Any) -> RedisBudgetStore:
        return RedisBudgetStore(client, budgets, clock=clock, **options)

    return redis
