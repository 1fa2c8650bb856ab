"""Redis key names. Every key of a service carries the hash tag ``{service}`` (one cluster slot)."""

from __future__ import annotations

__all__ = [
    "BUDGET_PREFIX",
    "FENCE_PREFIX",
    "FLAG_PREFIX",
    "budget_key",
    "fence_key",
    "flag_key",
    "service_of_budget_key",
    "service_of_flag_key",
]

FLAG_PREFIX = "enforce:throttle:{"
BUDGET_PREFIX = "otelcost:budget:{"
FENCE_PREFIX = "otelcost:fence:{"


def flag_key(service: str) -> str:
    """The throttle flag read by BudgetGuard and service meshes (pinned name)."""
    return f"{FLAG_PREFIX}{service}}}"


def budget_key(service: str, period: str) -> str:
    """The hash holding one budget's policy state, spend buckets and configuration."""
    return f"{BUDGET_PREFIX}{service}}}:{period}"


def fence_key(service: str, producer: str) -> str:
    """The highest sequence applied for ``producer`` on ``service``."""
    return f"{FENCE_PREFIX}{service}}}:{producer}"


def service_of_flag_key(key: str) -> str | None:
    if key.startswith(FLAG_PREFIX) and key.endswith("}") and len(key) > len(FLAG_PREFIX) + 1:
        return key[len(FLAG_PREFIX) : -1]
    return None


def service_of_budget_key(key: str) -> str | None:
    head, sep, _period = key.rpartition(":")
    if sep and head.startswith(BUDGET_PREFIX) and head.endswith("}"):
        service = head[len(BUDGET_PREFIX) : -1]
        return service or None
    return None
