"""The Lua script and the pure-Python reference make identical decisions with identical numbers.

Hypothesis generates budgets and sequences of (clock step, spend, fence) and both stores
apply them on one injected clock. Every returned status must be equal field by field
(bit-identical EMAs, exact nano totals, TTLs, flag JSON), fence overlaps must be raised by
both with the same ``last_seq``, and at the end the state Redis holds must read back as
the in-memory state. Clock steps include zero, sub-window, exact window and bucket
boundaries, gaps of days (the closed-form EMA decay) and backwards steps (clamping).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from _budget_support import MINUTE, UNIT, Clock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otelcost.budget import (
    PERIODS,
    Budget,
    Fence,
    FenceOverlapError,
    InMemoryBudgetStore,
    RedisBudgetStore,
)

_names = itertools.count()

budgets_strategy = st.builds(
    Budget,
    service=st.sampled_from(["svc", "*"]),
    limit=st.one_of(
        st.integers(1, 1000),
        st.floats(0.001, 50.0, allow_nan=False),
        st.sampled_from([1e9, 1e11]),  # rolling spend far beyond 2**53 nanos
    ),
    period=st.sampled_from(list(PERIODS)),
    window=st.sampled_from([1, 10, 60, 300]),
    ema_alpha=st.one_of(st.sampled_from([0.001, 0.1, 0.5, 1.0]), st.floats(0.001, 1.0)),
    consecutive=st.integers(1, 4),
    release_ratio=st.one_of(st.sampled_from([0.8, 1.0]), st.floats(0.05, 1.0)),
    release_windows=st.integers(1, 6),
    hard_cap=st.booleans(),
)

step_strategy = st.one_of(
    st.just(0),
    st.integers(1, 2_000),
    st.sampled_from([MINUTE, 5 * MINUTE, 60 * MINUTE, 6 * 60 * MINUTE]),
    st.integers(1, 30).map(lambda n: n * MINUTE),
    st.integers(0, 9 * 24 * 60 * MINUTE),  # up to 9 days: idle expiry, long decays
    st.integers(-3 * MINUTE, -1),  # a lagging writer
)

delta_strategy = st.one_of(
    st.just(0),
    st.integers(1, 10 * UNIT),
    st.integers(0, 2**53 - 1),
)

# What happens to the fence of each step: none, the next sequence, a replay of an older
# one, or a batch that overlaps what was applied (first_seq <= last < seq).
fence_strategy = st.sampled_from(["none", "next", "next", "replay", "overlap", "other"])

ops_strategy = st.lists(st.tuples(step_strategy, delta_strategy, fence_strategy), max_size=25)


def _fence(kind: str, last: int) -> Fence | None:
    if kind == "none":
        return None
    if kind == "replay":
        return Fence("p", max(last - 1, 0))
    if kind == "overlap":
        return Fence("p", last + 3, first_seq=max(last - 1, 0))
    if kind == "other":
        return Fence("q", last)
    return Fence("p", last + 1)


def _outcome(store: Any, service: str, delta: int, fence: Fence | None) -> Any:
    try:
        return store.apply(service, delta, fence)
    except FenceOverlapError as exc:
        return ("overlap", exc.last_seq)


@pytest.mark.slow
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    budgets=st.lists(budgets_strategy, min_size=1, max_size=3),
    ops=ops_strategy,
)
def test_lua_matches_reference(redis_client: Any, budgets: list[Budget], ops: list[Any]) -> None:
    by_key = {(b.service, b.period): b for b in budgets}  # no duplicate (service, period)
    budgets = list(by_key.values())
    service = f"svc-{next(_names)}"  # fresh keys per example, no flush needed
    budgets = [b if b.service == "*" else _rename(b, service) for b in budgets]
    clock = Clock()
    reference = InMemoryBudgetStore(budgets, clock=clock, fence_ttl=86_400)
    lua = RedisBudgetStore(redis_client, budgets, clock=clock, fence_ttl=86_400)
    last = 0
    flag_key = f"enforce:throttle:{{{service}}}"
    flag: tuple[str | None, int | None] = (None, None)  # what the last write left
    for step, delta, kind in ops:
        clock.advance(step)
        fence = _fence(kind, last)
        expected = _outcome(reference, service, delta, fence)
        assert _outcome(lua, service, delta, fence) == expected
        if isinstance(expected, tuple) or expected.duplicate:
            pass  # nothing was written
        else:
            flag = (expected.flag, expected.throttle_ttl_ms)
            if fence is not None and fence.producer == "p":
                last = max(last, fence.seq)
        stored = redis_client.get(flag_key)
        value = stored.decode() if stored is not None else None
        short_lived = flag[1] is not None and flag[1] < 5_000  # may expire in real time
        assert value == flag[0] or (short_lived and value is None)
    assert lua.status(service).budgets == reference.status(service).budgets


def _rename(budget: Budget, service: str) -> Budget:
    return dataclasses.replace(budget, service=service)
