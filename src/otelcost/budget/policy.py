"""The budget policy in pure Python: the reference the Redis Lua script must match exactly.

Per (service, budget) the state holds spend in buckets keyed by bucket id
(``now_ms // bucket_ms``, so a bucket is never extended: it simply falls out of the
rolling range), the open evaluation window, and the EMA of the projected spend rate.

One evaluation at ``now`` (``evaluate``), per budget:

1. ``now`` is clamped to the largest time already seen for the service, so a writer with
   a lagging clock cannot reopen a closed window. State idle for longer than
   ``period + bucket`` is forgotten (Redis also expires the key).
2. Window rollover: when ``now`` is past the open window, that window is closed with
   ``rate = window_spend * period / window`` (its spend projected to a whole period) and
   ``ema = alpha * rate + (1 - alpha) * ema``; every window that saw no evaluation is
   closed with rate 0 (so the EMA decays). After each closed window:
   ``over = over + 1 if ema > limit else 0``, ``under = under + 1 if ema < release_ratio *
   limit else 0``; the EMA latch is set when ``over >= consecutive`` and cleared when
   ``under >= release_windows``. Long gaps are closed in at most ``MAX_STEPS`` single
   steps; the rest is applied at once (``ema *= (1 - alpha) ** n``), which is exact once
   the state can no longer change except by decaying.
3. Buckets older than the rolling range are dropped and the delta is added to the current
   bucket and window. Rolling spend is the sum of the remaining buckets (exact integers).
4. A budget throttles when its EMA latch is set, or when ``hard_cap`` and rolling spend
   >= limit. The service is throttled when any of its budgets throttles.
5. The throttle flag's TTL is the time, if the service spent nothing more, until every
   throttling budget would release: for the hard cap, until enough buckets leave the
   range for spend to drop below the limit; for the EMA, until the decaying EMA has been
   below the release threshold for ``release_windows`` windows (at most ``MAX_STEPS``
   windows ahead). It is at least ``MIN_FLAG_TTL_MS`` and recomputed at every evaluation.

All floating-point steps are written in the same order as in ``_script.lua`` so both give
bit-identical EMAs (IEEE doubles in both; the EMA is stored as ``%.17g``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from otelcost.budget.model import Budget
from otelcost.budget.status import BudgetUsage

__all__ = [
    "FLAG_SOURCE_PREFIX",
    "MAX_STEPS",
    "MIN_FLAG_TTL_MS",
    "BudgetState",
    "Evaluation",
    "evaluate",
    "flag_value",
]

MAX_STEPS = 1000
MIN_FLAG_TTL_MS = 1000
FLAG_SOURCE_PREFIX = '{"source":"otelcost"'


@dataclass(slots=True)
class BudgetState:
    """The mutable policy state of one budget of one service (``t is None``: no state yet)."""

    t: int | None = None
    window_ms: int = 0
    window: int = 0
    window_nanos: int = 0
    ema: float = 0.0
    over: int = 0
    under: int = 0
    latched: bool = False
    buckets: dict[int, int] = field(default_factory=dict)

    def copy(self) -> BudgetState:
        return BudgetState(
            self.t,
            self.window_ms,
            self.window,
            self.window_nanos,
            self.ema,
            self.over,
            self.under,
            self.latched,
            dict(self.buckets),
        )


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of one evaluation of a service (``flag`` is the flag value to set)."""

    now_ms: int
    usages: tuple[BudgetUsage, ...]
    throttled: bool
    throttle_ttl_ms: int | None
    flag: str | None


class _Params:
    """A budget's numbers in the exact form both implementations compute with."""

    __slots__ = (
        "alpha",
        "bucket_ms",
        "buckets",
        "consecutive",
        "hard_cap",
        "limit",
        "limit_f",
        "period_ms",
        "release_f",
        "release_windows",
        "window_ms",
    )

    def __init__(self, budget: Budget) -> None:
        spec = budget.spec
        self.period_ms = spec.ms
        self.bucket_ms = spec.bucket_ms
        self.buckets = spec.buckets
        self.window_ms = budget.window_ms
        self.limit = budget.limit_nanos
        self.limit_f = float(self.limit)
        self.alpha = float(budget.ema_alpha)
        self.consecutive = budget.consecutive
        self.release_f = float(budget.release_ratio) * self.limit_f
        self.release_windows = budget.release_windows
        self.hard_cap = budget.hard_cap


def _step(s: BudgetState, p: _Params, rate: float) -> None:
    s.ema = p.alpha * rate + (1.0 - p.alpha) * s.ema
    _count(s, p, 1)


def _count(s: BudgetState, p: _Params, windows: int) -> None:
    """The over/under counters and the latch after ``windows`` windows at the current EMA."""
    s.over = s.over + windows if s.ema > p.limit_f else 0
    s.under = s.under + windows if s.ema < p.release_f else 0
    if s.over >= p.consecutive:
        s.latched = True
    elif s.under >= p.release_windows:
        s.latched = False


def _rate(s: BudgetState, p: _Params) -> float:
    return float(s.window_nanos) * float(p.period_ms) / float(p.window_ms)


def _close_empty_windows(s: BudgetState, p: _Params, gap: int) -> None:
    steps = 0
    while gap > 0:
        if s.ema < p.release_f and s.under >= p.release_windows:
            # Only decay is left: nothing else can change in the remaining windows.
            s.ema = s.ema * (1.0 - p.alpha) ** float(gap)
            s.under += gap
            s.latched = False
            return
        if steps >= MAX_STEPS:
            s.ema = s.ema * (1.0 - p.alpha) ** float(gap)
            _count(s, p, gap)
            return
        _step(s, p, 0.0)
        gap -= 1
        steps += 1


def _advance(s: BudgetState, p: _Params, now: int) -> None:
    if s.t is not None and now - s.t > p.period_ms + p.bucket_ms:
        _forget(s)
    window = now // p.window_ms
    if s.t is None or s.window_ms != p.window_ms:
        # No state yet, or the window size changed: open a new window, keep the EMA.
        s.window_ms = p.window_ms
        s.window = window
        s.window_nanos = 0
    elif window > s.window:
        _step(s, p, _rate(s, p))
        _close_empty_windows(s, p, window - s.window - 1)
        s.window = window
        s.window_nanos = 0
    lowest = now // p.bucket_ms - p.buckets + 1
    s.buckets = {bucket: v for bucket, v in s.buckets.items() if bucket >= lowest}
    s.t = now


def _forget(s: BudgetState) -> None:
    """Idle for longer than the period: everything in the state is out of range."""
    fresh = BudgetState()
    for name in BudgetState.__slots__:
        setattr(s, name, getattr(fresh, name))


def _cap_release_ms(s: BudgetState, p: _Params, now: int) -> int:
    """Time until rolling spend drops below the limit if nothing more is spent."""
    current = now // p.bucket_ms
    newer = 0
    for bucket in range(current, current - p.buckets, -1):
        newer += s.buckets.get(bucket, 0)
        if newer >= p.limit:
            return (bucket + p.buckets) * p.bucket_ms - now
    return 0


def _ema_release_ms(s: BudgetState, p: _Params, now: int) -> int:
    """Time until the EMA latch would clear if nothing more is spent (capped at MAX_STEPS)."""
    sim = BudgetState(ema=s.ema, over=s.over, under=s.under, latched=s.latched)
    _step(sim, p, _rate(s, p))
    windows = 1
    while sim.latched and windows < MAX_STEPS:
        _step(sim, p, 0.0)
        windows += 1
    return (s.window + windows) * p.window_ms - now


def flag_value(now: int, throttling: Sequence[tuple[str, BudgetUsage]]) -> str:
    """The throttle flag's JSON reason; built by hand so Lua writes the very same bytes."""
    parts = ",".join(
        f'{{"period":"{period}","reason":"{usage.reason}",'
        f'"spend_nanos":{usage.spend_nanos},"limit_nanos":{usage.limit_nanos}}}'
        for period, usage in throttling
    )
    return f'{FLAG_SOURCE_PREFIX},"at":{now},"budgets":[{parts}]}}'


def evaluate(
    budgets: Sequence[Budget], states: Sequence[BudgetState], now_ms: int, delta_nanos: int
) -> Evaluation:
    """Evaluate one service at ``now_ms`` after adding ``delta_nanos``; mutates ``states``.

    ``budgets`` and ``states`` are parallel (one state per budget, in the same order).
    """
    now = max([now_ms, *(s.t for s in states if s.t is not None)])
    usages = []
    throttling = []
    ttl = 0
    for budget, s in zip(budgets, states, strict=True):
        p = _Params(budget)
        _advance(s, p, now)
        if delta_nanos:
            current = now // p.bucket_ms
            s.buckets[current] = s.buckets.get(current, 0) + delta_nanos
            s.window_nanos += delta_nanos
        spend = sum(s.buckets.values())
        capped = p.hard_cap and spend >= p.limit
        usage = BudgetUsage(
            period=budget.period,
            limit_nanos=p.limit,
            spend_nanos=spend,
            ema_nanos=s.ema,
            consecutive_over=s.over,
            windows_under=s.under,
            hard_capped=capped,
            ema_throttled=s.latched,
        )
        usages.append(usage)
        if capped:
            ttl = max(ttl, _cap_release_ms(s, p, now))
        if s.latched:
            ttl = max(ttl, _ema_release_ms(s, p, now))
        if usage.throttling:
            throttling.append((budget.period, usage))
    if not throttling:
        return Evaluation(now, tuple(usages), False, None, None)
    return Evaluation(
        now, tuple(usages), True, max(ttl, MIN_FLAG_TTL_MS), flag_value(now, throttling)
    )
