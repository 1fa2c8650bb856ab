"""Budget test helpers: an injectable epoch-milliseconds clock and round numbers for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# 2025-11-28T00:00:00Z: aligned to days, hours and minutes, so window and bucket
# boundaries fall at round offsets from it.
T0 = 1_764_288_000_000
MINUTE = 60_000
UNIT = 1_000_000_000  # nanos per currency unit


class Clock:
    """Returns ``now`` (UTC epoch ms); tests move it."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> int:
        self.now += ms
        return self.now

    def at(self, offset_ms: int) -> int:
        """Set the clock to ``T0 + offset_ms``."""
        self.now = T0 + offset_ms
        return self.now


StoreFactory = Callable[..., Any]
