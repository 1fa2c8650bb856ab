"""InMemoryBudgetStore: the embedded default, same interface and policy as RedisBudgetStore.

It runs the pure-Python reference policy under a lock. State lives in this process only,
so it suits one process (the demo, tests, a single worker); several processes that must
share budgets need RedisBudgetStore. Memory is bounded: state idle for longer than a
period, fences older than ``fence_ttl`` and expired flags are swept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from otelcost.budget.fence import Fence, FenceOverlapError
from otelcost.budget.model import BudgetSet, BudgetsLike, check_apply, load_budgets
from otelcost.budget.policy import FLAG_SOURCE_PREFIX, BudgetState, evaluate
from otelcost.budget.status import BudgetStatus

__all__ = ["InMemoryBudgetStore", "wall_clock_ms"]

_SWEEP_EVERY_MS = 60_000


def wall_clock_ms() -> int:
    """UTC epoch milliseconds."""
    return time.time_ns() // 1_000_000


class InMemoryBudgetStore:
    """Budgets in this process, with the exact policy RedisBudgetStore runs in Lua.

    ``clock`` returns UTC epoch milliseconds (default: the wall clock). ``budgets`` may be
    replaced at any time (anything ``load_budgets`` accepts). Thread-safe.
    """

    def __init__(
        self,
        budgets: BudgetsLike = (),
        *,
        clock: Callable[[], int] = wall_clock_ms,
        fence_ttl: float = 7 * 86_400.0,
    ) -> None:
        self._budgets = load_budgets(budgets)
        self._clock = clock
        self._fence_ttl_ms = round(fence_ttl * 1000)
        if self._fence_ttl_ms < 1000:
            raise ValueError("fence_ttl must be at least 1 second")
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], BudgetState] = {}
        self._fences: dict[tuple[str, str], tuple[int, int]] = {}  # -> (seq, applied at)
        self._flags: dict[str, tuple[str, int]] = {}  # service -> (value, expires at ms)
        self._swept_at = 0

    @property
    def budgets(self) -> BudgetSet:
        return self._budgets

    @budgets.setter
    def budgets(self, budgets: BudgetsLike) -> None:
        self._budgets = load_budgets(budgets)

    def apply(self, service: str, delta_nanos: int, fence: Fence | None = None) -> BudgetStatus:
        """Add ``delta_nanos`` to every budget of ``service`` and evaluate them atomically."""
        check_apply(service, delta_nanos)
        budgets = self._budgets.for_service(service)
        with self._lock:
            now = int(self._clock())
            if not budgets:
                return BudgetStatus(service, False, None, (), now)
            self._sweep(now)
            stored = [self._states.get((service, b.period)) for b in budgets]
            states = [BudgetState() if s is None else s.copy() for s in stored]
            now = max([now, *(s.t for s in states if s.t is not None)])
            duplicate = False
            if fence is not None:
                last = self._last_seq(service, fence.producer, now)
                if last is not None:
                    if fence.seq <= last:
                        duplicate = True
                    elif fence.first_seq is not None and fence.first_seq <= last:
                        raise FenceOverlapError(service, fence.producer, last)
            evaluation = evaluate(budgets, states, now, 0 if duplicate else delta_nanos)
            if not duplicate:
                for budget, state in zip(budgets, states, strict=True):
                    self._states[(service, budget.period)] = state
                if fence is not None:
                    self._fences[(service, fence.producer)] = (fence.seq, evaluation.now_ms)
                if evaluation.flag is not None and evaluation.throttle_ttl_ms is not None:
                    expires = evaluation.now_ms + evaluation.throttle_ttl_ms
                    self._flags[service] = (evaluation.flag, expires)
                else:
                    current = self._flags.get(service)
                    if current is not None and current[0].startswith(FLAG_SOURCE_PREFIX):
                        del self._flags[service]
        return BudgetStatus(
            service=service,
            throttled=evaluation.throttled,
            throttle_ttl_ms=evaluation.throttle_ttl_ms,
            budgets=evaluation.usages,
            now_ms=evaluation.now_ms,
            duplicate=duplicate,
            flag=evaluation.flag,
        )

    def status(self, service: str) -> BudgetStatus:
        """Read-only: usage as an evaluation now would compute it, and the flag as it is."""
        budgets = self._budgets.for_service(service)
        with self._lock:
            now = int(self._clock())
            states = [
                (self._states.get((service, b.period)) or BudgetState()).copy() for b in budgets
            ]
            flag, ttl = self._flag(service, now)
        evaluation = evaluate(budgets, states, now, 0)
        return BudgetStatus(
            service=service,
            throttled=flag is not None,
            throttle_ttl_ms=ttl,
            budgets=evaluation.usages,
            now_ms=evaluation.now_ms,
            flag=flag,
        )

    def read_flag(self, service: str) -> tuple[str | None, int | None]:
        """The throttle flag's value and remaining TTL in ms (None, None when not set)."""
        with self._lock:
            return self._flag(service, int(self._clock()))

    def set_flag(self, service: str, value: str = "1", ttl: float | None = None) -> None:
        """Throttle ``service`` by hand (as ``SET enforce:throttle:{service} 1 EX ttl`` would)."""
        with self._lock:
            now = int(self._clock())
            expires = now + round(ttl * 1000) if ttl is not None else 2**62
            self._flags[service] = (value, expires)

    def services(self) -> list[str]:
        """Every service with budget state or a throttle flag, sorted."""
        with self._lock:
            now = int(self._clock())
            names = {service for service, _ in self._states}
            names.update(s for s in self._flags if self._flag(s, now)[0] is not None)
        return sorted(names)

    def _flag(self, service: str, now: int) -> tuple[str | None, int | None]:
        entry = self._flags.get(service)
        if entry is None or entry[1] <= now:
            return None, None
        value, expires = entry
        return value, (expires - now if expires < 2**62 else None)

    def _last_seq(self, service: str, producer: str, now: int) -> int | None:
        entry = self._fences.get((service, producer))
        if entry is None or now - entry[1] > self._fence_ttl_ms:
            return None
        return entry[0]

    def _sweep(self, now: int) -> None:
        if now - self._swept_at < _SWEEP_EVERY_MS:
            return
        self._swept_at = now
        self._fences = {k: v for k, v in self._fences.items() if now - v[1] <= self._fence_ttl_ms}
        self._flags = {k: v for k, v in self._flags.items() if v[1] > now}
        horizon = {b.period: b.spec.ms + b.spec.bucket_ms for b in self._budgets.budgets}
        self._states = {
            key: state
            for key, state in self._states.items()
            if state.t is not None and now - state.t <= horizon.get(key[1], 0)
        }
