"""The budget policy, on both stores (in memory, and the Lua script on a real redis-server).

Every test drives an injected clock, so windows and buckets are exact.
"""

from __future__ import annotations

import json

import pytest
from _budget_support import MINUTE, T0, UNIT, Clock, StoreFactory

from otelcost.budget import Budget, Fence, FenceOverlapError

NO_EMA = {"consecutive": 10_000}  # keep the EMA latch out of hard-cap tests


def test_window_rollover_updates_and_decays_the_ema(make_store: StoreFactory, clock: Clock) -> None:
    store = make_store([Budget("s", 100, "1h", window=60, ema_alpha=0.5, hard_cap=False)])
    clock.at(1_000)
    first = store.apply("s", 10 * UNIT).budgets[0]
    assert (first.ema_nanos, first.consecutive_over) == (0.0, 0)  # window 0 still open
    clock.at(MINUTE)
    # window 0 closes: 10 units in 1 min projects to 600 per hour; EMA = 0.5 * 600
    rolled = store.apply("s", 0).budgets[0]
    assert rolled.ema_nanos == 300 * UNIT
    assert rolled.ema_rate == 300.0
    assert (rolled.consecutive_over, rolled.windows_under) == (1, 0)
    clock.at(4 * MINUTE)
    # window 1 (empty) and the unseen windows 2 and 3 each halve the EMA
    decayed = store.apply("s", 0).budgets[0]
    assert decayed.ema_nanos == 37.5 * UNIT
    assert (decayed.consecutive_over, decayed.windows_under) == (0, 2)
    assert not decayed.ema_throttled


def test_rolling_spend_across_bucket_boundaries(make_store: StoreFactory, clock: Clock) -> None:
    # 1h period = 12 buckets of 5 minutes; bucket k gets k + 1 units and k nanos.
    store = make_store([Budget("s", 10_000, "1h", hard_cap=False)])
    for k in range(12):
        clock.at(k * 5 * MINUTE + 7_000)
        status = store.apply("s", (k + 1) * UNIT + k)
    assert status.budgets[0].spend_nanos == 78 * UNIT + 66
    clock.at(60 * MINUTE - 1)  # bucket 0 is still in range
    assert store.status("s").budgets[0].spend_nanos == 78 * UNIT + 66
    clock.at(60 * MINUTE)  # bucket 0 (1 unit, 0 nanos) leaves
    assert store.status("s").budgets[0].spend_nanos == 77 * UNIT + 66
    assert store.apply("s", 13 * UNIT).budgets[0].spend_nanos == 90 * UNIT + 66
    clock.at(72 * MINUTE)  # buckets 1 and 2 left too; nothing new
    assert store.status("s").budgets[0].spend_nanos == 85 * UNIT + 63
    clock.at(2 * 60 * MINUTE)  # everything spent before 1h ago is out of range
    assert store.apply("s", 0).budgets[0].spend_nanos == 0


def test_hard_cap_throttles_at_once(make_store: StoreFactory, clock: Clock) -> None:
    store = make_store([Budget("s", 10, "1h", **NO_EMA)])
    clock.at(0)
    store.apply("s", 4 * UNIT)
    clock.at(5 * MINUTE)
    below = store.apply("s", 4 * UNIT)
    assert not below.throttled
    assert below.budgets[0].utilization == 0.8
    clock.at(10 * MINUTE + 30_000)
    capped = store.apply("s", 2 * UNIT)
    assert capped.throttled
    usage = capped.budgets[0]
    assert (usage.hard_capped, usage.ema_throttled, usage.reason) == (True, False, "hard_cap")
    assert usage.spend == 10.0
    assert usage.utilization == 1.0
    # Released when bucket 0 leaves the range (at 60 min) unless more is spent.
    assert capped.throttle_ttl_ms == 60 * MINUTE - (10 * MINUTE + 30_000)
    assert json.loads(capped.flag or "") == {
        "source": "otelcost",
        "at": T0 + 10 * MINUTE + 30_000,
        "budgets": [
            {
                "period": "1h",
                "reason": "hard_cap",
                "spend_nanos": 10 * UNIT,
                "limit_nanos": 10 * UNIT,
            }
        ],
    }
    assert store.status("s").throttled
    clock.at(60 * MINUTE)
    released = store.apply("s", 0)
    assert not released.throttled
    assert released.budgets[0].spend_nanos == 6 * UNIT
    assert not store.status("s").throttled


def test_throttle_ttl_moves_forward_while_overspending(
    make_store: StoreFactory, clock: Clock
) -> None:
    store = make_store([Budget("s", 10, "1h", **NO_EMA)])
    clock.at(0)
    assert store.apply("s", 10 * UNIT).throttle_ttl_ms == 60 * MINUTE
    clock.at(30 * MINUTE)
    # Still over budget and spending: the flag now lasts until the new spend leaves too.
    again = store.apply("s", 10 * UNIT)
    assert again.throttled
    assert again.throttle_ttl_ms == 60 * MINUTE
    clock.at(60 * MINUTE)
    assert store.apply("s", 0).throttle_ttl_ms == 30 * MINUTE


def test_ema_throttle_needs_consecutive_windows(make_store: StoreFactory, clock: Clock) -> None:
    budget = Budget("s", 100, "1h", window=60, ema_alpha=0.5, hard_cap=False)
    store = make_store([budget])
    # 4 units per minute projects to 240 per hour: EMA 120, 180, 210 at the next rollovers.
    expected = [(120.0, 1, False), (180.0, 2, False), (210.0, 3, True)]
    for window, (ema, over, throttled) in enumerate(expected):
        clock.at(window * MINUTE)
        store.apply("s", 4 * UNIT)
        clock.at((window + 1) * MINUTE)
        status = store.apply("s", 0)
        usage = status.budgets[0]
        assert (usage.ema_rate, usage.consecutive_over, status.throttled) == (ema, over, throttled)
    assert status.budgets[0].reason == "ema"


def test_release_hysteresis(make_store: StoreFactory, clock: Clock) -> None:
    budget = Budget("s", 100, "1h", window=60, ema_alpha=0.5, hard_cap=False)
    store = make_store([budget])
    window = 0
    for _ in range(3):  # throttled by the EMA, as above
        clock.at(window * MINUTE)
        store.apply("s", 4 * UNIT)
        window += 1
    clock.at(window * MINUTE)
    assert store.apply("s", 0).throttled
    # Spend at 85% of the limit: below the limit, above the release threshold of 80%.
    for _ in range(20):
        store.apply("s", UNIT * 85 // 60)
        window += 1
        clock.at(window * MINUTE)
        status = store.apply("s", 0)
        assert status.throttled
    usage = status.budgets[0]
    assert 80 < usage.ema_rate < 100
    assert usage.windows_under == 0
    # Nothing spent any more: the EMA halves each window, 5 windows below 80 release it.
    # The flag's TTL says exactly when, counted from the window start.
    assert status.throttle_ttl_ms == 5 * MINUTE
    for under in range(1, 5):
        window += 1
        clock.at(window * MINUTE)
        status = store.apply("s", 0)
        assert status.throttled
        assert status.budgets[0].windows_under == under
        assert status.throttle_ttl_ms == (5 - under) * MINUTE
    window += 1
    clock.at(window * MINUTE)
    released = store.apply("s", 0)
    assert not released.throttled
    assert released.throttle_ttl_ms is None
    assert released.budgets[0].windows_under == 5
    assert not store.status("s").throttled


def test_throttled_by_any_budget_and_wildcards(make_store: StoreFactory, clock: Clock) -> None:
    store = make_store(
        [
            Budget("*", 1, "1h", **NO_EMA),
            Budget("*", 1000, "24h", **NO_EMA),
            Budget("big", 50, "1h", **NO_EMA),
        ]
    )
    small = store.apply("small", 2 * UNIT)
    assert small.throttled
    assert [(u.period, u.hard_capped) for u in small.budgets] == [("1h", True), ("24h", False)]
    big = store.apply("big", 2 * UNIT)
    assert not big.throttled
    assert [u.limit for u in big.budgets] == [50.0, 1000.0]
    assert store.apply("other", 0).budgets[0].spend_nanos == 0
    assert store.services() == ["big", "other", "small"]


def test_lagging_clock_cannot_reopen_a_closed_window(
    make_store: StoreFactory, clock: Clock
) -> None:
    store = make_store([Budget("s", 100, "1h", window=60, ema_alpha=0.5, hard_cap=False)])
    clock.at(2 * MINUTE)
    store.apply("s", UNIT)
    clock.at(0)  # a writer two minutes behind
    late = store.apply("s", UNIT)
    assert late.now_ms == T0 + 2 * MINUTE
    clock.at(3 * MINUTE)
    # Both units count in window 2: 2 units/min -> 120/h, EMA 60.
    assert store.apply("s", 0).budgets[0].ema_rate == 60.0


def test_idle_state_is_forgotten_after_a_period(make_store: StoreFactory, clock: Clock) -> None:
    store = make_store([Budget("s", 100, "1h", window=60, ema_alpha=0.5, hard_cap=False)])
    store.apply("s", 50 * UNIT)
    clock.at(MINUTE)
    assert store.apply("s", 0).budgets[0].ema_rate > 100
    clock.at(MINUTE + 65 * MINUTE + 1)  # more than period + bucket later
    usage = store.apply("s", 0).budgets[0]
    assert (usage.spend_nanos, usage.ema_nanos, usage.consecutive_over) == (0, 0.0, 0)


def test_manual_flag_is_honoured_and_never_cleared(make_store: StoreFactory, clock: Clock) -> None:
    store = make_store([Budget("s", 100, "1h")])
    if hasattr(store, "set_flag"):
        store.set_flag("s", "1", ttl=600)
    else:
        store.client.set("enforce:throttle:{s}", "1", ex=600)
    status = store.apply("s", UNIT)
    assert not status.throttled  # the policy does not throttle...
    assert store.status("s").throttled  # ...but the operator's flag stays
    assert store.status("s").flag == "1"
    assert store.read_flag("s")[0] == "1"


def test_fences(make_store: StoreFactory, clock: Clock) -> None:
    store = make_store([Budget("s", 1000, "24h")], fence_ttl=3600)
    assert not store.apply("s", UNIT, Fence("p", 5)).duplicate
    replay = store.apply("s", UNIT, Fence("p", 5))
    assert replay.duplicate
    assert replay.budgets[0].spend_nanos == UNIT
    assert store.apply("s", UNIT, Fence("p", 3)).duplicate
    assert not store.apply("s", UNIT, Fence("other", 1)).duplicate  # producers are independent
    assert not store.apply("s", UNIT, Fence("p", 6, first_seq=6)).duplicate
    with pytest.raises(FenceOverlapError) as info:
        store.apply("s", 5 * UNIT, Fence("p", 9, first_seq=4))
    assert info.value.last_seq == 6
    assert store.status("s").budgets[0].spend_nanos == 3 * UNIT  # nothing of it applied
    store.apply("s", 3 * UNIT, Fence("p", 9, first_seq=7))  # the re-aggregated remainder
    assert store.status("s").budgets[0].spend_nanos == 6 * UNIT
    assert not store.apply("t", UNIT, Fence("p", 1)).duplicate  # services are independent
    clock.advance(3600_000 + 1)  # the fence expired: a replay is applied again
    assert not store.apply("s", UNIT, Fence("p", 9)).duplicate


@pytest.mark.parametrize("delta", [-1, 2**53, 1.5, True])
def test_bad_delta_is_rejected(make_store: StoreFactory, delta: object) -> None:
    store = make_store([Budget("s", 1)])
    with pytest.raises(ValueError, match="delta_nanos"):
        store.apply("s", delta)


def test_services_without_budgets_are_not_tracked(make_store: StoreFactory) -> None:
    store = make_store([Budget("a", 1)])
    status = store.apply("b", UNIT)
    assert (status.throttled, status.budgets) == (False, ())
    assert store.services() == []


def test_report_shape(make_store: StoreFactory, clock: Clock) -> None:
    store = make_store([Budget("svc", 500, "24h")])
    store.apply("svc", 12_500_000_000)
    doc = store.status("svc").to_dict()
    assert doc == {
        "service": "svc",
        "throttled": False,
        "throttle_ttl": None,
        "budgets": [
            {
                "period": "24h",
                "limit": 500.0,
                "spend": 12.5,
                "utilization": 0.025,
                "ema_rate": 0.0,
                "consecutive_over": 0,
                "windows_under": 0,
                "throttling": None,
                "limit_nanos": 500 * UNIT,
                "spend_nanos": 12_500_000_000,
            }
        ],
    }
