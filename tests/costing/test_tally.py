"""Running totals kept per pricing thread and read as deltas: exact with no lock."""

from __future__ import annotations

import os
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otelcost.costing._tally import Tally, Total, minus, plus


@given(
    parts=st.lists(
        st.tuples(st.integers(-(10**30), 10**30), st.integers(0, 10**20)), min_size=1, max_size=20
    )
)
def test_totals_add_and_subtract_exactly(parts: list[tuple[int, int]]) -> None:
    total: Total = parts[0]
    for part in parts[1:]:
        total = plus(total, part)
    assert total == (sum(n for n, _ in parts), sum(s for _, s in parts))
    rest = (sum(n for n, _ in parts[1:]), sum(s for _, s in parts[1:]))
    assert minus(total, parts[0]) == (rest if rest != (0, 0) else None)
    assert minus(total, None) == total
    counts = [s for _, s in parts]
    assert plus(counts[0], sum(counts[1:])) == sum(counts)
    assert minus(sum(counts), counts[0]) == (sum(counts[1:]) or None)


def _add_one(totals: dict[object, Total], key: object, nanos: int) -> None:
    """What a pricing thread does per span: a new (nanos, spans) pair, one store."""
    total = totals.get(key)
    totals[key] = (nanos, 1) if total is None else plus(total, (nanos, 1))


def _add(tally: Tally, key: object, nanos: int, times: int) -> None:
    totals = tally.totals()
    for _ in range(times):
        _add_one(totals, key, nanos)


def test_harvest_returns_what_grew_since_the_last_harvest() -> None:
    tally = Tally()
    _add(tally, "a", 5, 3)
    assert tally.harvest() == {"a": (15, 3)}
    assert tally.harvest() == {}
    _add(tally, "a", 5, 1)
    _add(tally, "b", 7, 2)
    assert tally.harvest() == {"a": (5, 1), "b": (14, 2)}
    assert tally.grand_totals() == {"a": (20, 4), "b": (14, 2)}


def test_each_thread_has_its_own_totals_and_ended_threads_are_read_once_more() -> None:
    tally = Tally()
    _add(tally, "a", 1, 1)
    workers = [threading.Thread(target=_add, args=(tally, "a", 2, 1000)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert tally.threads == 5
    assert tally.harvest() == {"a": (1 + 8000, 4001)}
    assert tally.threads == 1  # the ended threads were read for the last time, then dropped
    assert tally.harvest() == {}
    assert tally.grand_totals() == {"a": (8001, 4001)}


def test_harvests_racing_with_writers_add_up_to_every_span() -> None:
    """Writers add while the reader harvests: nothing counted twice, nothing lost."""
    tally = Tally()
    stop = threading.Event()
    per_thread, threads = 20_000, 4

    def write(index: int) -> None:
        totals = tally.totals()
        key = index % 2
        for i in range(per_thread):
            _add_one(totals, key, i)

    harvested: dict[object, Total] = {}

    def read() -> None:
        while not stop.is_set():
            for key, delta in tally.harvest().items():
                kept = harvested.get(key)
                harvested[key] = delta if kept is None else plus(kept, delta)

    reader = threading.Thread(target=read)
    reader.start()
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        writers = [threading.Thread(target=write, args=(i,)) for i in range(threads)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
    finally:
        sys.setswitchinterval(old)
        stop.set()
        reader.join()
    for key, delta in tally.harvest().items():
        kept = harvested.get(key)
        harvested[key] = delta if kept is None else plus(kept, delta)
    expected = (sum(range(per_thread)) * (threads // 2), per_thread * (threads // 2))
    assert harvested == {0: expected, 1: expected}
    assert tally.grand_totals() == harvested


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_a_forked_child_starts_from_nothing() -> None:
    tally = Tally()
    _add(tally, "a", 3, 2)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's totals are the parent's to export
        try:
            ok = tally.grand_totals() == {} and tally.harvest() == {}
            _add(tally, "a", 1, 1)
            ok = ok and tally.harvest() == {"a": (1, 1)}
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    assert tally.harvest() == {"a": (6, 2)}
