"""RedisBudgetStore: the budget policy run atomically inside Redis by one Lua script per flush.

Keys of service S (all in the cluster slot of the hash tag ``{S}``):

- ``otelcost:budget:{S}:<period>``: a hash per budget with the spend buckets
  (``b:<bucket id>`` -> integer nanos), the policy state and the budget's configuration
  (so ``otelcost report`` needs nothing but Redis). It expires after a period (plus a day)
  without flushes.
- ``otelcost:fence:{S}:<producer>``: ``<seq>:<now_ms>``, the last flush applied per producer;
  expires after ``fence_ttl`` (plus a day) without flushes.
- ``enforce:throttle:{S}``: the throttle flag, a JSON reason with a TTL recomputed at every
  evaluation. A flag not written by otelcost (e.g. ``SET enforce:throttle:{S} 1 EX 600`` by
  an operator) is honoured by BudgetGuard and never deleted by the script.

The script uses the Redis server's clock unless a ``clock`` is given, so app hosts with
skewed clocks agree on windows. Without a Fence a retried call (redis-py retries on
timeouts) may apply a delta twice: pass a Fence for exactly-once (the exporters do).
"""

from __future__ import annotations

import logging
import pkgutil
from collections.abc import Callable, Mapping, Sequence

from otelcost import _redis
from otelcost._redis import BudgetClient, RedisClient
from otelcost._resp import RespClient
from otelcost.budget import _keys
from otelcost.budget.fence import Fence, FenceOverlapError
from otelcost.budget.model import (
    MAX_SERVICE_LEN,
    PERIODS,
    Budget,
    BudgetSet,
    check_apply,
    load_budgets,
)
from otelcost.budget.policy import BudgetState, evaluate
from otelcost.budget.status import BudgetStatus, BudgetUsage
from otelcost.budget.store import BudgetsLike, RedisLike
from otelcost.errors import BudgetConfigError
from otelcost.money import from_nanos

__all__ = ["SCRIPT", "RedisBudgetStore", "read_flag"]

_logger = logging.getLogger(__name__)

# Read through the package's loader (zip imports included) with pkgutil: importlib.resources
# would import tempfile, shutil, zipfile, lzma and bz2 into the application for one file.
_script = pkgutil.get_data("otelcost.budget", "_script.lua")
if _script is None:  # pragma: no cover - a loader that cannot read package data
    raise ImportError("otelcost.budget: the loader cannot read _script.lua")
SCRIPT = _script.decode("utf-8")

_DAY_MS = 86_400_000
_PER_BUDGET = 6  # values per budget in the script's reply


class RedisBudgetStore:
    """Budgets kept in Redis; every method may raise the client's errors (callers fail open).

    ``redis`` is a URL (see ``otelcost._redis.connect``) or a redis-py client (``Redis``, a
    Sentinel master, ``RedisCluster``). A plain ``redis://``, ``rediss://`` or ``unix://``
    URL without options is served by otelcost's own client
    (``otelcost._redis.budget_client``: no redis-py objects in the application), which
    raises ``RedisReplyError``, ``ConnectionError`` and ``TimeoutError``; anything else by
    redis-py, which raises ``redis.RedisError``. ``budgets`` is anything ``load_budgets``
    accepts. ``clock`` returns UTC epoch milliseconds; None uses the Redis server's clock.
    Thread-safe.
    """

    def __init__(
        self,
        redis: RedisLike,
        budgets: BudgetsLike = (),
        *,
        clock: Callable[[], int] | None = None,
        fence_ttl: float = 7 * 86_400.0,
    ) -> None:
        self._redis: BudgetClient = _redis.budget_client(redis)
        # For ``client``: the redis-py client in use, or the URL to make one from.
        self._url: str | None = None
        self._redis_py: RedisClient | None = None
        if isinstance(self._redis, RespClient):
            self._url = str(redis)
        else:
            self._redis_py = self._redis
        self.budgets: BudgetSet = load_budgets(budgets)
        self._clock = clock
        self._fence_ttl_ms = round(fence_ttl * 1000)
        if self._fence_ttl_ms < 1000:
            raise ValueError("fence_ttl must be at least 1 second")
        self._script = self._redis.register_script(SCRIPT)

    @property
    def client(self) -> RedisClient:
        """A redis-py client of this store's Redis: the one in use, or, where the store runs
        otelcost's own client, one for the same URL made on first access (redis-py is
        imported then)."""
        if self._redis_py is None:
            assert self._url is not None
            self._redis_py = _redis.connect(self._url)
        return self._redis_py

    def apply(self, service: str, delta_nanos: int, fence: Fence | None = None) -> BudgetStatus:
        """Add ``delta_nanos`` to every budget of ``service`` and evaluate them (one script call).

        Returns the evaluation; ``duplicate=True`` when ``fence`` was already applied.
        Raises FenceOverlapError when the fence partly overlaps an applied one (nothing is
        applied), ValueError for a bad service or delta, and redis errors as they come.
        """
        check_apply(service, delta_nanos)
        budgets = self.budgets.for_service(service)
        if not budgets:
            return BudgetStatus(service, False, None, (), self._now_ms())
        keys = [
            _keys.flag_key(service),
            _keys.fence_key(service, fence.producer if fence else ""),
            *(_keys.budget_key(service, b.period) for b in budgets),
        ]
        args: list[str | int] = [
            "" if self._clock is None else int(self._clock()),
            delta_nanos,
            "" if fence is None else fence.seq,
            "" if fence is None or fence.first_seq is None else fence.first_seq,
            self._fence_ttl_ms,
            _DAY_MS,
            len(budgets),
        ]
        for budget in budgets:
            args.extend(_budget_args(budget))
        reply = [_text(v) for v in self._script(keys=keys, args=args)]
        if reply[0] == "overlap":
            # Only a fenced call can overlap; the script answers so for no other.
            raise FenceOverlapError(service, fence.producer if fence else "", int(reply[2]))
        usages = tuple(
            _usage(budget, reply[5 + i * _PER_BUDGET : 5 + (i + 1) * _PER_BUDGET])
            for i, budget in enumerate(budgets)
        )
        throttled = reply[2] == "1"
        return BudgetStatus(
            service=service,
            throttled=throttled,
            throttle_ttl_ms=int(reply[3]) if throttled else None,
            budgets=usages,
            now_ms=int(reply[1]),
            duplicate=reply[0] == "dup",
            flag=reply[4] or None,
        )

    def status(self, service: str) -> BudgetStatus:
        """Read-only: usage as an evaluation now would compute it, and the flag as it is.

        Budgets come from this store's configuration, and for periods it does not configure,
        from the configuration stored with the state (so a store built without budgets, as
        ``otelcost report`` does, still shows everything).
        """
        _check_service(service)
        pipe = self._redis.pipeline(transaction=False)
        for period in PERIODS:
            pipe.hgetall(_keys.budget_key(service, period))
        pipe.get(_keys.flag_key(service))
        pipe.pttl(_keys.flag_key(service))
        *hashes, flag, pttl = pipe.execute()
        now = self._now_ms()
        configured = {b.period: b for b in self.budgets.for_service(service)}
        budgets: list[Budget] = []
        states: list[BudgetState] = []
        for period, raw in zip(PERIODS, hashes, strict=True):
            fields = {_text(k): _text(v) for k, v in raw.items()}
            budget = configured.get(period) or _stored_budget(service, period, fields)
            if budget is None:
                continue
            budgets.append(budget)
            states.append(_decode_state(fields))
        evaluation = evaluate(budgets, states, now, 0)
        flag_text = None if flag is None else _text(flag)
        return BudgetStatus(
            service=service,
            throttled=flag_text is not None,
            throttle_ttl_ms=int(pttl) if flag_text is not None and pttl > 0 else None,
            budgets=evaluation.usages,
            now_ms=evaluation.now_ms,
            flag=flag_text,
        )

    def read_flag(self, service: str) -> tuple[str | None, int | None]:
        """The throttle flag's value and remaining TTL in ms (None, None when not set)."""
        return read_flag(self._redis, service)

    def services(self) -> list[str]:
        """Every service with budget state or a throttle flag in Redis, sorted (uses SCAN)."""
        found: set[str] = set()
        for key in self._redis.scan_iter(match=_keys.BUDGET_PREFIX + "*", count=1000):
            service = _keys.service_of_budget_key(_text(key))
            if service:
                found.add(service)
        for key in self._redis.scan_iter(match=_keys.FLAG_PREFIX + "*", count=1000):
            service = _keys.service_of_flag_key(_text(key))
            if service:
                found.add(service)
        return sorted(found)

    def _now_ms(self) -> int:
        if self._clock is not None:
            return int(self._clock())
        seconds, micros = self._redis.time()
        return int(seconds) * 1000 + int(micros) // 1000


def _check_service(service: object) -> None:
    if not isinstance(service, str) or not 0 < len(service) <= MAX_SERVICE_LEN:
        raise ValueError(
            f"service must be a non-empty string (<= {MAX_SERVICE_LEN} chars), got {service!r}"
        )


def read_flag(client: BudgetClient, service: str) -> tuple[str | None, int | None]:
    """``service``'s throttle flag in Redis and its remaining TTL in ms (None, None: unset);
    one round trip. ``BudgetGuard`` reads it with its own short-timeout client."""
    pipe = client.pipeline(transaction=False)
    pipe.get(_keys.flag_key(service))
    pipe.pttl(_keys.flag_key(service))
    value, pttl = pipe.execute()
    if value is None:
        return None, None
    return _text(value), int(pttl) if pttl > 0 else None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _budget_args(budget: Budget) -> list[str | int]:
    spec = budget.spec
    return [
        budget.period,
        spec.ms,
        spec.bucket_ms,
        budget.window_ms,
        budget.limit_nanos,
        repr(float(budget.ema_alpha)),
        budget.consecutive,
        repr(float(budget.release_ratio)),
        budget.release_windows,
        "1" if budget.hard_cap else "0",
    ]


def _usage(budget: Budget, values: Sequence[str]) -> BudgetUsage:
    spend, ema, over, under, capped, latched = values
    return BudgetUsage(
        period=budget.period,
        limit_nanos=budget.limit_nanos,
        spend_nanos=int(spend),
        ema_nanos=float(ema),
        consecutive_over=int(over),
        windows_under=int(under),
        hard_capped=capped == "1",
        ema_throttled=latched == "1",
    )


def _decode_state(fields: Mapping[str, str]) -> BudgetState:
    state = BudgetState()
    for name, value in fields.items():
        if name.startswith("b:"):
            state.buckets[int(name[2:])] = int(value)
    if "t" in fields:
        state.t = int(fields["t"])
        state.window_ms = int(fields["wms"])
        state.window = int(fields["w"])
        state.window_nanos = int(fields["wn"])
        state.ema = float(fields["ema"])
        state.over = int(fields["over"])
        state.under = int(fields["under"])
        state.latched = fields["latch"] == "1"
    return state


def _stored_budget(service: str, period: str, fields: Mapping[str, str]) -> Budget | None:
    """The budget configuration the last flush stored with the state, if any."""
    if "c:limit" not in fields:
        return None
    try:
        return Budget(
            service=service,
            limit=from_nanos(int(fields["c:limit"])),
            period=period,
            window=int(fields["wms"]) / 1000,
            ema_alpha=float(fields["c:alpha"]),
            consecutive=int(fields["c:cons"]),
            release_ratio=float(fields["c:rr"]),
            release_windows=int(fields["c:rw"]),
            hard_cap=fields["c:hc"] == "1",
        )
    except (KeyError, ValueError, BudgetConfigError) as exc:
        _logger.warning("ignoring unreadable budget state of %r (%s): %s", service, period, exc)
        return None
