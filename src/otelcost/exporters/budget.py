"""BudgetExporter: a CostSumExporter that feeds a budget store, O(services) store calls per second.

RedisBudgetExporter is one over a RedisBudgetStore; ``budget_exporter()`` picks one from
the arguments and the environment (what ``install(budgets=...)`` uses).

``export_sums`` only adds each batch's deltas to an in-memory per-service total under a
lock; it never touches the network. A flusher thread applies the totals to the store about once per
``flush_interval``, earlier when a service's pending spend reaches ``early_fraction`` of
its smallest budget. Each flush of a service carries a Fence (this exporter's producer id,
a flush counter), so a flush whose reply was lost is retried with the same fence and
applied at most once.

Faults: while the store fails, each service keeps at most one fenced batch (retried as is)
plus one unfenced running total, so memory does not grow with the outage; retries back off
exponentially up to 30 s. Spend held longer than ``max_hold`` seconds, or for services
beyond ``max_services``, is dropped and counted in ``stats()``. Nothing is ever raised into
the caller. After ``fork`` the child starts empty with a new producer id and its own thread
(the parent still delivers what it had).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from otelcost import environment
from otelcost.budget.fence import Fence
from otelcost.budget.memory_store import InMemoryBudgetStore
from otelcost.budget.model import BudgetsLike, load_budgets
from otelcost.budget.redis_store import RedisBudgetStore
from otelcost.budget.store import BudgetStore, RedisLike
from otelcost.exporters.base import CostExportResult, CostSumExporter, CostSums

__all__ = ["REDIS_URL_ENV", "BudgetExporter", "RedisBudgetExporter", "budget_exporter"]

_logger = logging.getLogger(__name__)

REDIS_URL_ENV = environment.REDIS_URL
_MAX_BATCH_NANOS = 2**53 - 1  # what one store call accepts
_BACKOFF_START = 0.5
_BACKOFF_MAX = 30.0


@dataclass(slots=True)
class _Held:
    """A service's undelivered spend: one fenced batch being retried, one running total."""

    fence: Fence | None = None
    fenced_nanos: int = 0
    fenced_records: int = 0
    fenced_since: float = 0.0
    nanos: int = 0
    records: int = 0
    since: float = 0.0
    heartbeat: bool = False

    def empty(self) -> bool:
        return self.fence is None and not self.records and not self.nanos and not self.heartbeat


_exporters: weakref.WeakSet[BudgetExporter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for exporter in list(_exporters):
        exporter._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class BudgetExporter(CostSumExporter):
    """Adds span costs up per service and applies them to ``store`` in the background.

    Unpriced spans add nothing but are counted (``records_unpriced``; ``records`` counts
    spans, priced or not). Services that the last
    evaluation found throttled are re-evaluated every ``heartbeat`` seconds even without
    new spend, so their release and flag TTL stay on time when throttling stops traffic.
    """

    def __init__(
        self,
        store: BudgetStore,
        *,
        flush_interval: float = 1.0,
        early_fraction: float = 0.01,
        max_hold: float = 900.0,
        max_services: int = 10_000,
        heartbeat: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if flush_interval <= 0 or max_hold <= 0 or heartbeat <= 0 or max_services < 1:
            raise ValueError("flush_interval, max_hold, heartbeat and max_services must be > 0")
        if not 0 < early_fraction <= 1:
            raise ValueError("early_fraction must be in (0, 1]")
        self.store = store
        self.flush_interval = flush_interval
        self.early_fraction = early_fraction
        self.max_hold = max_hold
        self.max_services = max_services
        self.heartbeat = heartbeat
        self._clock = monotonic
        self._init_process_state()
        _exporters.add(self)

    def _init_process_state(self) -> None:
        self._lock = threading.Lock()  # guards _pending and the record counters
        self._flush_lock = threading.Lock()  # one flush at a time; guards _held and the rest
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._pending: dict[str, list[Any]] = {}  # service -> [nanos, records, since]
        self._thresholds: dict[str, int | None] = {}
        self._held: dict[str, _Held] = {}
        self._throttled: dict[str, float] = {}  # service -> last evaluation (monotonic)
        self._producer = f"exp:{secrets.token_hex(8)}"
        self._seq = 0
        self._retry_at = 0.0
        self._backoff = _BACKOFF_START
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "records",
                "records_unpriced",
                "records_delivered",
                "nanos_delivered",
                "records_dropped",
                "nanos_dropped",
                "flushes",
                "flush_errors",
                "duplicates",
            ),
            0,
        )

    def _reset_after_fork(self) -> None:
        closed = self._closed
        self._init_process_state()
        self._closed = closed

    @property
    def producer(self) -> str:
        """This process's fence producer id."""
        return self._producer

    def export_sums(self, sums: CostSums) -> CostExportResult:
        """Add a batch's deltas to the per-service totals; no I/O."""
        try:
            per_service: dict[str, list[int]] = {}
            unpriced = 0
            for (service, _, _), (nanos, spans) in sums.costs.items():
                totals = per_service.setdefault(service, [0, 0])
                totals[0] += nanos
                totals[1] += spans
            for (service, _), spans in sums.unpriced.items():
                per_service.setdefault(service, [0, 0])[1] += spans
                unpriced += spans
            if self._closed:
                with self._lock:
                    self._drop(
                        sum(e[1] for e in per_service.values()),
                        sum(e[0] for e in per_service.values()),
                    )
                return CostExportResult.FAILURE
            early = False
            now = self._clock()
            with self._lock:
                pending = self._pending
                for service, (nanos, spans) in per_service.items():
                    entry = pending.get(service)
                    if entry is None:
                        if len(pending) >= self.max_services:
                            self._drop(spans, nanos)
                            continue
                        entry = pending[service] = [0, 0, now]
                    entry[0] += nanos
                    entry[1] += spans
                    threshold = self._threshold(service)
                    if threshold is not None and entry[0] >= threshold:
                        early = True
                self._stats["records"] += sum(e[1] for e in per_service.values())
                self._stats["records_unpriced"] += unpriced
            self._ensure_thread()
            if early:
                self._wake.set()
            return CostExportResult.SUCCESS
        except Exception:  # never raise into the pipeline
            _logger.exception("otelcost budget exporter: export failed")
            return CostExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver everything held now (ignoring backoff); True if nothing is left."""
        deadline = time.monotonic() + timeout_millis / 1000
        while True:
            if not self._flush_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return False
            try:
                self._retry_at = 0.0
                delivered = self._flush_once()
                done = delivered and not self._held and not self._pending
            finally:
                self._flush_lock.release()
            if done:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self._backoff, remaining, 0.5))

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Stop the flusher, deliver within the timeout, count the rest as dropped."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_millis / 1000
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        self.force_flush(max(0, int((deadline - time.monotonic()) * 1000)))
        with self._flush_lock, self._lock:
            for held in self._held.values():
                self._drop(held.fenced_records + held.records, held.fenced_nanos + held.nanos)
            for nanos, records, _ in self._pending.values():
                self._drop(records, nanos)
            self._held.clear()
            self._pending.clear()

    def stats(self) -> Mapping[str, int | float]:
        """Counters: records seen/unpriced/delivered/dropped, nanos delivered/dropped, flushes…"""
        with self._lock:
            out: dict[str, int | float] = dict(self._stats)
            pending = sum(entry[0] for entry in self._pending.values())
            out["pending_services"] = len(self._pending)
        held = list(self._held.values())
        out["held_services"] = len(held)
        out["held_nanos"] = pending + sum(h.fenced_nanos + h.nanos for h in held)
        out["throttled_services"] = len(self._throttled)
        return out

    def _drop(self, records: int, nanos: int) -> None:
        self._stats["records_dropped"] += records
        self._stats["nanos_dropped"] += nanos

    def _threshold(self, service: str) -> int | None:
        try:
            return self._thresholds[service]
        except KeyError:
            smallest = self.store.budgets.smallest_limit_nanos(service)
            threshold = None if smallest is None else max(1, int(smallest * self.early_fraction))
            if len(self._thresholds) < self.max_services:
                self._thresholds[service] = threshold
            return threshold

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(
                target=self._run, name="otelcost-budget-flusher", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            delay = max(self._retry_at - self._clock(), 0.0) or self.flush_interval
            self._wake.wait(delay)
            self._wake.clear()
            if self._stop.is_set() or self._clock() < self._retry_at:
                continue
            try:
                with self._flush_lock:
                    self._flush_once()
            except Exception:  # a bug here must not kill the thread
                _logger.exception("otelcost budget exporter: flush failed")

    def _flush_once(self) -> bool:
        """Apply everything held, oldest batch first per service; False if the store failed."""
        now = self._clock()
        with self._lock:
            taken, self._pending = self._pending, {}
        for service, (nanos, records, since) in taken.items():
            held = self._held.get(service)
            if held is None:
                if len(self._held) >= self.max_services:
                    with self._lock:
                        self._drop(records, nanos)
                    continue
                held = self._held[service] = _Held()
            if not held.records and not held.nanos:
                held.since = since
            held.nanos += nanos
            held.records += records
        for service, evaluated in list(self._throttled.items()):
            if now - evaluated >= self.heartbeat:
                self._held.setdefault(service, _Held()).heartbeat = True
        self._expire(now)
        for service in list(self._held):
            if not self._deliver(service, self._held[service]):
                return False
            if self._held[service].empty():
                del self._held[service]
        return True

    def _expire(self, now: float) -> None:
        for held in self._held.values():
            if held.fence is not None and now - held.fenced_since > self.max_hold:
                with self._lock:
                    self._drop(held.fenced_records, held.fenced_nanos)
                held.fence, held.fenced_nanos, held.fenced_records = None, 0, 0
            if (held.records or held.nanos) and now - held.since > self.max_hold:
                with self._lock:
                    self._drop(held.records, held.nanos)
                held.nanos, held.records = 0, 0

    def _deliver(self, service: str, held: _Held) -> bool:
        while True:
            if held.fence is None:
                if not held.records and not held.nanos and not held.heartbeat:
                    return True
                self._seq += 1
                batch = min(held.nanos, _MAX_BATCH_NANOS)
                held.fence = Fence(self._producer, self._seq)
                held.fenced_nanos, held.fenced_records = batch, held.records
                held.fenced_since = held.since if held.records or held.nanos else self._clock()
                held.nanos -= batch
                held.records = 0
                held.heartbeat = False
            try:
                status = self.store.apply(service, held.fenced_nanos, held.fence)
            except ValueError as exc:  # this service's data can never be applied
                _logger.warning("otelcost budget exporter: dropping spend of %r: %s", service, exc)
                with self._lock:
                    self._drop(held.records + held.fenced_records, held.nanos + held.fenced_nanos)
                held.fence, held.fenced_nanos, held.fenced_records = None, 0, 0
                held.nanos, held.records, held.heartbeat = 0, 0, False
                return True
            except Exception as exc:  # the store is unavailable: keep everything, back off
                self._failed(exc)
                return False
            with self._lock:
                self._stats["flushes"] += 1
                self._stats["records_delivered"] += held.fenced_records
                self._stats["nanos_delivered"] += held.fenced_nanos
                self._stats["duplicates"] += status.duplicate
            self._backoff = _BACKOFF_START
            self._retry_at = 0.0
            if status.throttled:
                self._throttled[service] = self._clock()
            else:
                self._throttled.pop(service, None)
            held.fence, held.fenced_nanos, held.fenced_records = None, 0, 0
            if held.nanos and not held.records:
                held.since = self._clock()  # the remainder of a split batch

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self._stats["flush_errors"] += 1
        delay = self._backoff * random.uniform(0.8, 1.2)
        self._retry_at = self._clock() + delay
        if self._backoff == _BACKOFF_START:
            _logger.warning(
                "otelcost budget exporter: store unavailable (%s: %s); holding spend and "
                "retrying with backoff",
                type(exc).__name__,
                exc,
            )
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX)


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
        redis: RedisLike,
        budgets: BudgetsLike = None,
        *,
        clock: Callable[[], int] | None = None,
        fence_ttl: float = 7 * 86_400.0,
        **options: Any,
    ) -> None:
        super().__init__(
            RedisBudgetStore(redis, budgets, clock=clock, fence_ttl=fence_ttl), **options
        )


def budget_exporter(
    budgets: BudgetsLike = None,
    *,
    redis: RedisLike | None = None,
    environ: environment.Environ | None = None,
    **options: Any,
) -> BudgetExporter | None:
    """The budget exporter ``install(budgets=...)`` wires up, or None when there are no budgets.

    ``budgets``: anything ``load_budgets`` accepts (None: the file in ``OTELCOST_BUDGETS``).
    ``redis``: a URL or client; None uses ``OTELCOST_REDIS_URL``, and when that is unset
    too, the embedded InMemoryBudgetStore. ``environ``: where both variables are read
    (default ``os.environ``). ``options`` go to the exporter.
    """
    budget_set = load_budgets(budgets, environ=environ)
    if not budget_set:
        return None
    target = redis if redis is not None else environment.read(REDIS_URL_ENV, environ)
    if target is not None:
        return RedisBudgetExporter(target, budget_set, **options)
    return BudgetExporter(InMemoryBudgetStore(budget_set), **options)
