"""Pricing: prices, immutable pricing tables and the refreshing, TTL-checked PricingCache.

Typical use::

    cache = PricingCache("https://pricing.internal/v1/table.json", ttl=900, refresh_interval=600)
    cache.refresh()          # pre-warm: raises PricingError if the first table is unusable
    cache.start()            # background refresher; keeps the last good table on failures
    table = cache.current()  # once per batch; PricingStaleError after ttl without a good sync
    price = table.resolve("payment-svc", "POST /api/v2/payments")
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Final, NamedTuple, TypedDict

from otelcost._fork import in_forked_child
from otelcost.errors import PricingError, PricingStaleError
from otelcost.pricing.sources import PricingSource, SourceLike, as_source
from otelcost.pricing.table import Price, PricingTable

# Sources and tables are exported by otelcost.pricing, which gathers the three modules.
__all__ = ["PricingCache", "PricingCacheStats"]

_logger = logging.getLogger(__name__)

# Regular refreshes run at a random point in the last 10% of refresh_interval, and retries
# at 50-100% of their backoff delay, so a fleet does not hit the pricing API in lockstep.
_REFRESH_JITTER: Final = 0.1
_STOP_TIMEOUT: Final = 5.0
_DERIVED_REFRESH: Final = 2 / 3  # of ttl, when refresh_interval is not given (docs/pricing.md)


class PricingCacheStats(TypedDict):
    """What :meth:`PricingCache.stats` reports."""

    refreshes_ok: int  # successful fetches, including unchanged ones
    refreshes_unchanged: int  # fetches that returned the table in use (HTTP 304, same file)
    refreshes_failed: int
    consecutive_failures: int
    last_error: str | None  # text of the most recent failure (credentials redacted)
    last_sync: int | None  # UTC epoch milliseconds of the last successful fetch
    version: str | None
    entries: int  # entries of the current table (0 before the first success)


class _Snapshot(NamedTuple):
    table: PricingTable
    synced_at: float  # clock() seconds of the last successful fetch


class PricingCache:
    """A thread-safe pricing table that is refreshed in the background and expires after ``ttl``.

    ``source`` is a dict (a pricing document), a JSON file path, an http(s) URL, a
    :class:`PricingTable`, or any :class:`PricingSource`. Nothing is fetched until
    :meth:`refresh` or :meth:`start`. The current table is one immutable snapshot swapped in
    whole, so readers never see a half-built table and never take a lock.

    ``refresh_interval`` None (the default) is ⅔ of ``ttl`` (600 s for the default 900 s),
    so a table survives one failed refresh before it goes stale; an explicit value must be
    > 0 and < ``ttl``. ``clock`` returns epoch seconds (default ``time.time``); it decides
    staleness and ``last_sync``. A failed refresh is retried after ``retry_initial``
    seconds, doubling per consecutive failure up to ``refresh_interval / 2``.
    """

    # ``held`` is read per span by the compiled ending hook: a member, not a dict entry.
    __slots__ = ("__dict__", "__weakref__", "held")

    def __init__(
        self,
        source: SourceLike,
        *,
        ttl: float = 900.0,
        refresh_interval: float | None = None,
        retry_initial: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"ttl must be a finite number of seconds > 0, got {ttl!r}")
        if refresh_interval is None:
            refresh_interval = ttl * _DERIVED_REFRESH
        elif not 0 < refresh_interval < ttl:
            raise ValueError(
                f"refresh_interval must be > 0 and < ttl ({ttl!r}), got {refresh_interval!r}"
            )
        if not (math.isfinite(retry_initial) and retry_initial > 0):
            raise ValueError(
                f"retry_initial must be a number of seconds > 0, got {retry_initial!r}"
            )
        self._source = as_source(source)
        self._ttl = ttl
        self._refresh_interval = refresh_interval
        self._retry_initial = retry_initial
        self._clock = clock
        self.clock: Final = clock
        """What decides staleness (epoch seconds): ``clock() > held[1]`` means stale."""
        self._snapshot: _Snapshot | None = None
        self.held: tuple[PricingTable, float] | None = None
        """The table held now and the ``clock()`` time it goes stale (None before the first
        load), replaced whole on every successful refresh: a reader that prices many spans
        checks it per span with one clock call instead of calling :meth:`current`."""
        self._refresh_lock = threading.Lock()  # one fetch at a time; the source keeps state
        self._stats_lock = threading.Lock()
        self._ok = 0
        self._unchanged = 0
        self._failed = 0
        self._consecutive_failures = 0
        self._last_error: str | None = None
        self._lifecycle_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._fork_hook_registered = False

    def __repr__(self) -> str:
        return f"PricingCache({self._source!r}, ttl={self._ttl}, version={self.version!r})"

    @property
    def source(self) -> PricingSource:
        """Where the table is fetched from (its repr names the file or URL, never secrets)."""
        return self._source

    @property
    def refresh_interval(self) -> float:
        """Seconds between regular refreshes (given, or derived from ``ttl``)."""
        return self._refresh_interval

    # -- reading (hot path) ------------------------------------------------------------------

    def current(self) -> PricingTable:
        """The current table; PricingStaleError if none was loaded or it is older than ttl."""
        snapshot = self._snapshot
        if snapshot is None:
            raise PricingStaleError(
                f"no pricing table loaded yet from {self._source!r} "
                f"(last error: {self._last_error or 'none; call refresh() first'})"
            )
        age = self._clock() - snapshot.synced_at
        if age > self._ttl:
            raise PricingStaleError(
                f"pricing table {snapshot.table.version!r} is stale: last sync {age:.0f} s ago, "
                f"ttl {self._ttl:g} s (last error: {self._last_error})"
            )
        return snapshot.table

    def get_price(self, service: str, operation: str) -> Price:
        """``current().resolve(service, operation)``.

        Raises PricingStaleError or PricingNotFoundError (both PricingError).
        """
        snapshot = self._snapshot  # current() inlined: this runs once per span
        if snapshot is not None and self._clock() - snapshot.synced_at <= self._ttl:
            return snapshot.table.resolve(service, operation)
        return self.current().resolve(service, operation)  # raises the precise stale error

    @property
    def last_sync(self) -> int | None:
        """UTC epoch milliseconds of the last successful fetch (also a 304), or None."""
        snapshot = self._snapshot
        return None if snapshot is None else round(snapshot.synced_at * 1000)

    @property
    def version(self) -> str | None:
        """The loaded table's version (None if none is loaded or the table has none)."""
        snapshot = self._snapshot
        return None if snapshot is None else snapshot.table.version

    @property
    def currency(self) -> str | None:
        """The loaded table's currency, or None before the first successful fetch."""
        snapshot = self._snapshot
        return None if snapshot is None else snapshot.table.currency

    @property
    def region(self) -> str | None:
        """The loaded table's region, if any."""
        snapshot = self._snapshot
        return None if snapshot is None else snapshot.table.region

    def stats(self) -> PricingCacheStats:
        """Counters of refresh outcomes, the last error text and the current table's identity."""
        with self._stats_lock:
            snapshot = self._snapshot
            return PricingCacheStats(
                refreshes_ok=self._ok,
                refreshes_unchanged=self._unchanged,
                refreshes_failed=self._failed,
                consecutive_failures=self._consecutive_failures,
                last_error=self._last_error,
                last_sync=None if snapshot is None else round(snapshot.synced_at * 1000),
                version=None if snapshot is None else snapshot.table.version,
                entries=0 if snapshot is None else len(snapshot.table),
            )

    # -- refreshing ------------------------------------------------------------------------

    def refresh(self) -> PricingTable:
        """Fetch the table now and make it current; returns it.

        Raises PricingError (any exception of the source is wrapped in one) and keeps the
        previous table, which stays usable until its ttl runs out.
        """
        with self._refresh_lock:
            previous = self._snapshot
            try:
                table = self._source.fetch()
                if not isinstance(table, PricingTable):
                    raise PricingError(
                        f"{self._source!r}.fetch() returned {type(table).__name__}, "
                        "not a PricingTable"
                    )
            except Exception as exc:
                error = exc if isinstance(exc, PricingError) else _wrap(exc, self._source)
                with self._stats_lock:
                    self._failed += 1
                    self._consecutive_failures += 1
                    self._last_error = str(error)
                if error is exc:
                    raise
                raise error from exc
            with self._stats_lock:  # so stats() sees the table and its counters together
                self._snapshot = snapshot = _Snapshot(table, self._clock())
                self.held = (table, snapshot.synced_at + self._ttl)
                self._ok += 1
                if previous is not None and previous.table is table:
                    self._unchanged += 1
                self._consecutive_failures = 0
            return table

    def start(self) -> None:
        """Start the daemon refresher thread (no-op when it is running).

        It fetches at once if no table is loaded, then every ``refresh_interval`` (slightly
        jittered); failures keep the last good table and are retried with backoff. One
        warning is logged per failure streak, one error when the table goes stale during it,
        and one info line on recovery. A forked child restarts its own refresher.
        """
        with self._lifecycle_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="otelcost-pricing-refresh", daemon=True
            )
            self._thread.start()
            if not self._fork_hook_registered:
                in_forked_child(self, PricingCache._after_fork_in_child)
                self._fork_hook_registered = True

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Stop the refresher, waiting up to ``timeout`` s (an in-flight fetch may outlast it).

        The current table stays in use until its ttl runs out.
        """
        with self._lifecycle_lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the refresher thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self, stop: threading.Event) -> None:
        failures = 0
        stale_logged = False
        delay = self._first_delay()
        while not stop.wait(delay):
            try:
                self.refresh()
            except Exception as exc:  # never let the refresher die; the error is in stats()
                failures += 1
                if failures == 1:
                    _logger.warning(
                        "pricing refresh from %r failed, keeping the current table: %s",
                        self._source,
                        exc,
                    )
                if not stale_logged and self._is_stale():
                    stale_logged = True
                    _logger.error(
                        "pricing table is stale or missing after %d failed refreshes; spans "
                        "get cost.error until a refresh succeeds: %s",
                        failures,
                        exc,
                    )
                delay = self._backoff(failures)
                continue
            if failures:
                _logger.info(
                    "pricing refresh from %r recovered after %d failures", self._source, failures
                )
            failures, stale_logged = 0, False
            delay = self._refresh_interval * random.uniform(1 - _REFRESH_JITTER, 1.0)

    def _first_delay(self) -> float:
        snapshot = self._snapshot
        if snapshot is None:
            return 0.0
        due = snapshot.synced_at + self._refresh_interval - self._clock()
        return min(max(due, 0.0), self._refresh_interval)

    def _backoff(self, failures: int) -> float:
        ceiling = self._refresh_interval / 2
        delay = min(self._retry_initial * 2.0 ** min(failures - 1, 62), ceiling)
        return delay * random.uniform(0.5, 1.0)

    def _is_stale(self) -> bool:
        snapshot = self._snapshot
        return snapshot is None or self._clock() - snapshot.synced_at > self._ttl

    def _after_fork_in_child(self) -> None:
        # The parent's threads do not exist in the child and its locks may have been held
        # mid-fetch; a pre-forking server (gunicorn --preload) would otherwise go stale.
        was_running = self._thread is not None and not self._stop.is_set()
        self._refresh_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._lifecycle_lock = threading.Lock()
        self._thread = None
        if was_running:
            self.start()


def _wrap(exc: Exception, source: PricingSource) -> PricingError:
    return PricingError(f"pricing source {source!r} failed: {type(exc).__name__}: {exc}")
