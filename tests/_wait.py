"""Polling for a condition that another thread or process brings about: the one helper the
tests share for it (a time limit in seconds, never an unbounded loop)."""

from __future__ import annotations

import time
from collections.abc import Callable

# Short enough not to slow the fast tests, long enough that polling a server is cheap.
_INTERVAL_S = 0.01


def eventually(condition: Callable[[], object], timeout: float = 10.0) -> bool:
    """Whether ``condition()`` turns true within ``timeout`` seconds (checked once more at
    the deadline). For callers that must not raise, like a forked child."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(_INTERVAL_S)
    return bool(condition())


def wait_for(
    condition: Callable[[], object], timeout: float = 10.0, what: str = "the condition"
) -> None:
    """Wait until ``condition()`` is true; fail the test, naming ``what``, after ``timeout``."""
    if not eventually(condition, timeout):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
