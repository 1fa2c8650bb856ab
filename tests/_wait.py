"""Polling for a condition that another thread or process brings about: the one helper the
tests share for it (a time limit in seconds, never an unbounded loop)."""

from __future__ import annotations

import time
from collections.abc import Callable

# Short enough not to slow the fast tests, long enough that polling a server is cheap.
_INTERVAL_S = 0.01


def wait_for(
    condition: Callable[[], object], timeout: float = 10.0, what: str = "the condition"
) -> None:
    """Wait until ``condition()`` is true; fail the test, naming ``what``, after ``timeout``
    seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(_INTERVAL_S)
