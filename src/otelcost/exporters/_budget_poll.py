"""Reads budget status for metric gauges without ever blocking a collection for long.

A metric collection asks for points; if the cached read is older than the refresh interval
a helper thread re-reads the store (one read in flight at most) and the collection waits
up to ``timeout`` for it. A slow or broken store therefore costs a collection at most
``timeout`` and yields the previous points, or none once they are older than ``stale_after``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from otelcost._fork import in_forked_child
from otelcost.budget.store import BudgetStore

__all__ = ["BudgetPoint", "BudgetPoller"]

_logger = logging.getLogger(__name__)


class BudgetPoint(NamedTuple):
    """One budget of one service, as the gauges report it (money in currency units)."""

    service: str
    period: str
    utilization: float
    spend: float
    limit: float
    throttled: bool


class BudgetPoller:
    """Cached, time-bounded reads of every service's budget status."""

    def __init__(
        self,
        store: BudgetStore,
        *,
        refresh_interval: float,
        timeout: float,
        stale_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._interval = refresh_interval
        self._timeout = timeout
        self._stale_after = stale_after
        self._clock = clock
        self._init_state()
        in_forked_child(self, BudgetPoller._init_state)

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._points: tuple[BudgetPoint, ...] = ()
        self._ok_at: float | None = None
        self._tried_at: float | None = None
        self._worker: threading.Thread | None = None
        self._failing = False
        self.errors = 0

    def points(self) -> Sequence[BudgetPoint]:
        """The latest points; never raises, waits at most ``timeout`` for a fresh read."""
        now = self._clock()
        with self._lock:
            worker = self._worker
            due = self._tried_at is None or now - self._tried_at >= self._interval
            if due and (worker is None or not worker.is_alive()):
                self._tried_at = now
                worker = threading.Thread(
                    target=self._refresh, name="otelcost-budget-gauge", daemon=True
                )
                self._worker = worker
                worker.start()
        if worker is not None and worker.is_alive():
            worker.join(self._timeout)
        with self._lock:
            if self._ok_at is None or self._clock() - self._ok_at > self._stale_after:
                return ()
            return self._points

    def _refresh(self) -> None:
        try:
            points = tuple(self._read())
        except Exception as exc:  # the store's errors are many and all mean "no data"
            with self._lock:
                self.errors += 1
                first = not self._failing
                self._failing = True
            if first:
                _logger.warning("otelcost: budget gauges cannot read the budget store: %r", exc)
            return
        with self._lock:
            self._points = points
            self._ok_at = self._clock()
            if self._failing:
                _logger.warning("otelcost: budget gauges read the budget store again")
            self._failing = False

    def _read(self) -> Iterable[BudgetPoint]:
        for service in list(self._store.services()):
            status = self._store.status(service)
            throttled = bool(status.throttled)
            for b in status.budgets:
                yield BudgetPoint(
                    service,
                    str(b.period),
                    float(b.utilization),
                    float(b.spend),
                    float(b.limit),
                    throttled,
                )
