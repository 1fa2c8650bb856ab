"""The demo's budgets: the bundled budgets file on an InMemoryBudgetStore, fed by a
BudgetExporter, read by a BudgetGuard, and a log of when each service was throttled.

``data/demo_budgets.json`` gives every service a 24h budget and the storefront a
deliberately small rolling 1h budget with the hard cap, so the workload's real spend
reaches it within seconds: the policy sets the throttle flag, and the storefront's guard
starts answering 429. Nothing is faked; the store runs on the wall clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otelcost import _json
from otelcost.budget import (
    Budget,
    BudgetExporter,
    BudgetSet,
    BudgetStatus,
    InMemoryBudgetStore,
    load_budgets,
)
from otelcost.budget.memory_store import wall_clock_ms

__all__ = [
    "SMALL_BUDGET_SERVICE",
    "DemoBudgets",
    "Episode",
    "definition",
    "demo_budgets",
    "describe",
]

SMALL_BUDGET_SERVICE = "storefront"  # the service whose budget ``--budget`` sets

# Flush and read often: the demo lasts seconds, and the throttle should show within one.
_FLUSH_INTERVAL = 0.25
_HEARTBEAT = 1.0
_MAX_STALENESS = 0.2


def demo_budgets(limit: float | None = None) -> BudgetSet:
    """The bundled budgets (``otelcost/data/demo_budgets.json``); ``limit`` (currency
    units) replaces the limit of the budgets naming ``SMALL_BUDGET_SERVICE``."""
    from importlib import resources

    text = resources.files("otelcost").joinpath("data/demo_budgets.json").read_bytes()
    budgets = load_budgets(_json.loads(text))
    if limit is None:
        return budgets
    return BudgetSet(
        dataclasses.replace(b, limit=limit) if b.service == SMALL_BUDGET_SERVICE else b
        for b in budgets.budgets
    )


@dataclass(slots=True)
class Episode:
    """A service's throttle flag, seen set from ``start`` to ``end`` (seconds into the run;
    ``end`` None: still set) because of ``reasons`` ("<period> <reason>" per budget)."""

    start: float
    end: float | None
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "throttled_at_s": round(self.start, 2),
            "released_at_s": None if self.end is None else round(self.end, 2),
            "reasons": list(self.reasons),
        }


class DemoBudgets:
    """The in-memory store, its exporter (a CostExporter for the processor) and guard;
    ``clock`` is the store's (UTC epoch ms)."""

    def __init__(
        self,
        budgets: BudgetSet,
        services: Sequence[str],
        *,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.budgets = budgets
        self.store = InMemoryBudgetStore(budgets, clock=clock)
        self.exporter = BudgetExporter(
            self.store, flush_interval=_FLUSH_INTERVAL, heartbeat=_HEARTBEAT
        )
        from otelcost.budget import BudgetGuard  # asyncio: when the demo runs, not for --help

        self.guard = BudgetGuard(self.store, max_staleness=_MAX_STALENESS)
        self._episodes: dict[str, list[Episode]] = {service: [] for service in services}

    def watch(self, elapsed: float) -> list[str]:
        """Note the throttle flags set or cleared since the last call (at ``elapsed``
        seconds into the run); returns the services throttled now."""
        throttled = []
        for service, episodes in self._episodes.items():
            value, _ = self.store.read_flag(service)
            running = bool(episodes) and episodes[-1].end is None
            if value is not None:
                throttled.append(service)
                if not running:
                    episodes.append(Episode(elapsed, None, _reasons(value)))
            elif running:
                episodes[-1].end = elapsed
        return throttled

    def statuses(self) -> list[BudgetStatus]:
        """Every service's budget status now, as ``otelcost report`` shows it."""
        return [self.store.status(service) for service in self.store.services()]

    def throttling(self, rejected: Mapping[str, int]) -> list[dict[str, Any]]:
        """Per service: whether it had a guard, the 429s it answered, its throttle episodes."""
        return [
            {
                "service": service,
                "guarded": service in rejected,
                "rejected_requests": rejected.get(service, 0),
                "episodes": [episode.to_dict() for episode in episodes],
            }
            for service, episodes in self._episodes.items()
        ]


def _reasons(flag: str) -> tuple[str, ...]:
    """The throttling budgets named in a flag the policy set (the flag itself otherwise)."""
    try:
        doc = _json.loads(flag)
        return tuple(f"{b['period']} {b['reason']}" for b in doc["budgets"])
    except (ValueError, TypeError, KeyError):
        return (flag,)


def definition(budget: Budget) -> dict[str, Any]:
    """A budget as the demo's JSON lists it."""
    return {
        "service": budget.service,
        "limit": budget.limit,
        "period": budget.period,
        "window_s": budget.window,
        "hard_cap": budget.hard_cap,
    }


def describe(definition: Mapping[str, Any], currency: str) -> str:
    """A budget ``definition`` in words, e.g.
    ``storefront: 0.015 USD per rolling 1h (hard cap, EMA burn rate over 60 s windows)``."""
    who = "every service" if definition["service"] == "*" else definition["service"]
    ema = f"EMA burn rate over {definition['window_s']:g} s windows"
    checks = f"hard cap, {ema}" if definition["hard_cap"] else ema
    return (
        f"{who}: {definition['limit']:g} {currency} per rolling {definition['period']} ({checks})"
    )
