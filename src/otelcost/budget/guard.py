"""BudgetGuard: a cheap, cached, fail-open read of a service's throttle flag.

The flag ``enforce:throttle:{service}`` is read at most once per ``max_staleness`` seconds
per service (one pipelined GET + PTTL); in between, answers come from memory. A cached
flag whose TTL ran out counts as released at once. When the read fails, the guard answers
from the last read (if its TTL still runs) or "not throttled", and waits with exponential
backoff (up to 30 s) before trying again, so a Redis outage costs the request path at most
one short timeout per backoff period. It never raises.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple, cast

from otelcost import _redis
from otelcost.budget.redis_store import read_flag
from otelcost.budget.store import BudgetStore, RedisLike

__all__ = ["DEFAULT_RETRY_AFTER", "BudgetGuard", "Throttle"]

_logger = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER = 60  # seconds, for flags set without a TTL
_MAX_ENTRIES = 10_000
_BACKOFF_START = 0.5
_BACKOFF_MAX = 30.0


class Throttle(NamedTuple):
    """A throttled service: the flag's value and the seconds to announce in ``Retry-After``."""

    reason: str
    retry_after: int


class _Entry(NamedTuple):
    value: str | None
    ttl: float | None  # seconds the flag had left when read (None: no TTL)
    fetched: float  # monotonic time of the read


class BudgetGuard:
    """Answers "is this service throttled?" from a local cache refreshed from the flag.

    ``source`` is a Redis URL, a redis-py client, or a store with ``read_flag`` (e.g.
    ``InMemoryBudgetStore`` for the embedded setup). For a URL the guard builds its own
    client with ``timeout`` as socket and connect timeout and no retries (it is on the
    request path; the backoff above replaces retries).
    """

    def __init__(
        self,
        source: BudgetStore | RedisLike,
        *,
        max_staleness: float = 1.0,
        timeout: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_staleness < 0 or timeout <= 0:
            raise ValueError("max_staleness must be >= 0 and timeout > 0")
        self._read_flag: Callable[[str], tuple[str | None, int | None]]
        store_read_flag = getattr(source, "read_flag", None)  # a store; else Redis
        if callable(store_read_flag):
            self._read_flag = store_read_flag
        else:
            client = _redis.budget_client(
                cast(RedisLike, source),  # no read_flag: a URL or a redis-py client
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retries=0,
            )
            self._read_flag = functools.partial(read_flag, client)
        self.max_staleness = max_staleness
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, _Entry] = {}
        self._fetching: set[str] = set()
        self._retry_at = 0.0
        self._backoff = _BACKOFF_START
        self.reads = 0
        self.errors = 0

    def is_throttled(self, service: str) -> bool:
        """True while ``service``'s throttle flag is set (at most ``max_staleness`` old)."""
        return self.throttle(service) is not None

    def throttle(self, service: str) -> Throttle | None:
        """The flag's reason and Retry-After when ``service`` is throttled, else None."""
        now = self._clock()
        entry = self._cache.get(service)
        if entry is None or now - entry.fetched > self.max_staleness:
            entry = self._refresh(service, now, entry)
            if entry is not None:
                now = max(now, entry.fetched)
        return _answer(entry, now)

    async def is_throttled_async(self, service: str) -> bool:
        """``is_throttled`` for event loops: a needed read runs in a worker thread."""
        return await self.throttle_async(service) is not None

    async def throttle_async(self, service: str) -> Throttle | None:
        """``throttle`` for event loops: a needed read runs in a worker thread."""
        now = self._clock()
        entry = self._cache.get(service)
        if entry is None or now - entry.fetched > self.max_staleness:
            return await asyncio.to_thread(self.throttle, service)
        return _answer(entry, now)

    def _refresh(self, service: str, now: float, stale: _Entry | None) -> _Entry | None:
        with self._lock:
            if service in self._fetching or now < self._retry_at:
                return stale  # another thread is reading it, or Redis is backing off
            self._fetching.add(service)
        try:
            value, ttl_ms = self._read_flag(service)
        except Exception as exc:  # fail open: any error means "answer from what we know"
            with self._lock:
                self._fetching.discard(service)
                self.errors += 1
                self._retry_at = self._clock() + self._backoff
                _logger.warning(
                    "otelcost budget guard: cannot read throttle flags (%s: %s); failing open, "
                    "next try in %.1f s",
                    type(exc).__name__,
                    exc,
                    self._backoff,
                )
                self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
            return stale
        fetched = self._clock()
        entry = _Entry(value, None if ttl_ms is None else ttl_ms / 1000, fetched)
        with self._lock:
            self._fetching.discard(service)
            self.reads += 1
            self._backoff = _BACKOFF_START
            if service not in self._cache and len(self._cache) >= _MAX_ENTRIES:
                self._cache.pop(next(iter(self._cache)))
            self._cache[service] = entry
        return entry


def _answer(entry: _Entry | None, now: float) -> Throttle | None:
    if entry is None or entry.value is None:
        return None
    if entry.ttl is None:
        return Throttle(entry.value, DEFAULT_RETRY_AFTER)
    remaining = entry.ttl - (now - entry.fetched)
    if remaining <= 0:
        return None
    return Throttle(entry.value, max(1, math.ceil(remaining)))
