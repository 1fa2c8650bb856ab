"""One GenAI call, one charge.

Two instrumentations of one call (the anthropic SDK's own tracing and OpenLLMetry, say) give
two root spans in separate traces, both with the call's usage. Such spans share the
provider's ``gen_ai.response.id``: the first one priced is charged and the others are not
billable. Response ids are remembered in a bounded LRU, and only for ``window_ms``: a server
that answers every call with the same id (some local model servers do) is charged for each
call that arrives later than that, and calls with different input token counts never
collapse.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Final

from otelcost.pricing._genai import read_usage

__all__ = ["DEFAULT_WINDOW_MS", "RESPONSE_ID", "CallDedupe"]

RESPONSE_ID: Final = "gen_ai.response.id"
"""Spans without it are always first: callers may skip ``first`` for them."""
DEFAULT_WINDOW_MS: Final = 120_000
"""How long after its first span a call's other spans are recognised as the same call."""
DEFAULT_SIZE: Final = 16_384


class CallDedupe:
    """Tells whether a priced GenAI span is the first of its call (thread-safe, bounded)."""

    __slots__ = ("_lock", "_seen", "_size", "_window_ms", "duplicates")

    def __init__(self, size: int = DEFAULT_SIZE, window_ms: int = DEFAULT_WINDOW_MS) -> None:
        if size < 1 or window_ms < 0:
            raise ValueError(f"size must be >= 1 and window_ms >= 0, got {size}, {window_ms}")
        self._size = size
        self._window_ms = window_ms
        self._seen: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._lock = threading.Lock()
        self.duplicates = 0
        """Spans not charged because another span of their call was."""

    def first(self, attributes: Mapping[str, object], end_ms: int) -> bool:
        """False when ``attributes`` describe a call already charged (within the window):
        the same ``gen_ai.response.id`` and input token count. Spans without a response id
        are always first."""
        response_id = attributes.get(RESPONSE_ID)
        if not isinstance(response_id, str) or not response_id:
            return True
        usage = read_usage(attributes)
        key = (response_id, -1 if usage is None else usage.input)
        with self._lock:
            seen_ms = self._seen.get(key)
            if seen_ms is not None and abs(end_ms - seen_ms) <= self._window_ms:
                self.duplicates += 1
                return False
            self._seen[key] = end_ms
            self._seen.move_to_end(key)
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
        return True
