"""Running totals kept by the threads that price spans, read as deltas by one worker.

Sum-only exporters (budgets, metrics) need totals per operation, not spans, so nothing per
span is queued for them: each pricing thread adds into its own dict, with no lock, and the
export worker reads every dict and exports what grew since its last read.

One writer per dict makes this exact under the GIL without a lock. A priced total is one
tuple ``(nanos, spans)``, replaced whole by one store, so a reader never sees a span's
amount without its count; a count alone (spans that add no money) is an int. The compiled
planner keeps a priced total in a ``Cell`` instead, which it adds a span into in place
(both fields in one step of C: no object made per span); a Cell reads as its pair. The
reader copies each dict in one C call (``snapshot``: ``dict.copy``, which runs no Python
code on these keys: they hash by identity or are tuples of strings, or the compiled
module's, which also reads each Cell as its pair) and keeps what it read last to compute
deltas; it never resets a writer's dict. A thread's dict is read one last time after the
thread has ended, then dropped (thread-per-request servers start threads all the time);
its totals stay in the grand totals.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import cast

from otelcost._fork import in_forked_child

__all__ = ["Tally", "Total", "minus", "plus"]

Total = tuple[int, int] | int
"""``(nanos, spans)`` of priced spans, or the count of spans that add no money."""
Totals = dict[Hashable, Total]


def plus(a: Total, b: Total) -> Total:
    """The sum of two totals of one key."""
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    x, y = cast(tuple[int, int], a), cast(tuple[int, int], b)
    return (x[0] + y[0], x[1] + y[1])


def minus(a: Total, b: Total | None) -> Total | None:
    """What ``a`` grew by since ``b`` (None: since nothing); None where it did not."""
    if b is None:
        return a
    if isinstance(a, int) and isinstance(b, int):
        return (a - b) or None
    x, y = cast(tuple[int, int], a), cast(tuple[int, int], b)
    delta = (x[0] - y[0], x[1] - y[1])
    return delta if delta != (0, 0) else None


class _Writer:
    __slots__ = ("last", "thread", "totals")

    def __init__(self, thread: threading.Thread, totals: Totals) -> None:
        self.thread: weakref.ref[threading.Thread] = weakref.ref(thread)
        self.totals = totals
        self.last: Totals = {}


class Tally:
    """Packed totals per key, written by any number of threads, each into its own dict,
    and read by one thread with :meth:`harvest`.

    A writer gets its thread's dict from :meth:`totals` (the hot path reads it from
    ``local.totals`` directly) and stores a new total per span: ``(nanos, spans)`` plus
    the span's, or the count plus one.
    """

    def __init__(self, snapshot: Callable[[Totals], Totals] = dict.copy) -> None:
        self._snapshot = snapshot  # a writer's dict, copied in one C call (see above)
        self._init_process_state()
        in_forked_child(self, Tally._init_process_state)

    def _init_process_state(self) -> None:
        # In a forked child only the forking thread exists and the parent exports what its
        # threads added: the child starts from nothing (a new local, so no inherited dict).
        self.local = threading.local()
        self._lock = threading.Lock()
        self._writers: list[_Writer] = []
        self._retired: Totals = {}  # totals of ended threads, read for the grand totals

    def totals(self) -> Totals:
        """The calling thread's dict (registered on its first call)."""
        try:
            totals: Totals = self.local.totals
        except AttributeError:
            totals = self.local.totals = {}
            with self._lock:
                self._writers.append(_Writer(threading.current_thread(), totals))
        return totals

    def harvest(self) -> Totals:
        """What every thread added since the last harvest, summed per key (zero deltas left
        out). One reader at a time: the export worker."""
        with self._lock:
            writers = list(self._writers)
        out: Totals = {}
        ended: list[_Writer] = []
        for writer in writers:
            thread = writer.thread()
            # Liveness before the copy: an ended thread writes nothing more, so this copy
            # is its last.
            alive = thread is not None and thread.is_alive()
            now = self._snapshot(writer.totals)
            last = writer.last
            for key, total in now.items():
                before = last.get(key)
                if total is before:  # unchanged since (a snapshot keeps a pair it saw)
                    continue
                delta = minus(total, before)
                if delta is not None:
                    grown = out.get(key)
                    out[key] = delta if grown is None else plus(grown, delta)
            writer.last = now
            if not alive:
                ended.append(writer)
        if ended:
            with self._lock:
                self._writers = [w for w in self._writers if w not in ended]
                retired = self._retired
                for writer in ended:
                    for key, total in writer.last.items():
                        kept = retired.get(key)
                        retired[key] = total if kept is None else plus(kept, total)
        return out

    def grand_totals(self) -> Totals:
        """Everything ever added, per key (for statistics; any thread)."""
        with self._lock:
            out = dict(self._retired)
            writers = list(self._writers)
        for writer in writers:
            for key, total in self._snapshot(writer.totals).items():
                kept = out.get(key)
                out[key] = total if kept is None else plus(kept, total)
        return out

    @property
    def threads(self) -> int:
        """Threads whose dicts are read (ended ones until their last harvest)."""
        with self._lock:
            return len(self._writers)
