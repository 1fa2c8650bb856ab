"""A bounded queue drained in batches by one daemon worker thread.

Modelled on the SDK's ``BatchProcessor`` (opentelemetry/sdk/_shared_internal), with the
parts that matter for a cost pipeline done differently:

- ``put`` is the only thing the application thread runs: a length check and a deque append,
  no lock, no ``os.getpid()``, and in C where built (``compiled=True``). A full queue
  refuses the *new* item and counts it; memory is bounded by ``max_queue_size`` (plus at
  most one item per racing application thread).
- ``force_flush(timeout)`` and ``shutdown(timeout)`` return within their timeout even when the
  handler is stuck: the export runs on the worker, callers only wait on an event with a
  deadline. A flush covers exactly the items queued before it was requested, so it finishes
  under sustained load too. The SDK's ``force_flush`` ignores its timeout.
- Every wake-up first lets the handler ``collect`` what it keeps outside the queue (the
  processor's sums, kept by the threads that price spans), then drains the queue
  completely, so the queue only grows when the handler is slower than the application;
  but in slices of about ``SLICE_CPU_SECONDS`` of the worker's
  CPU (at most ``max_batch_size`` items, sized from the handler's measured cost per item),
  with the GIL released between slices. The worker shares the GIL with the application: a
  pure-Python loop over a whole batch makes every application thread that wants the GIL
  back (after any I/O) wait out the interpreter's switch interval (5 ms) behind it, once per
  wait, for as long as the batch runs. Unless a flush or shutdown waits for the drain, or
  the queue holds a full batch, the worker also stays off the GIL between slices for as long
  as the last slice took, so the application runs freely in between.
- Instrumentation is suppressed on the worker, so a Redis or Kafka client instrumentation
  does not trace the exporters (and feed their spans back into this queue).
- After ``os.fork`` the child gets a new lock, event and worker; the parent's queued items
  are discarded in the child (the parent exports them) and the child's counters start at 0.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, Protocol, TypeVar

from opentelemetry import context

from otelcost._fork import in_forked_child

try:  # put() in C (setup.py builds it where a C compiler is)
    from otelcost.costing import _speedups
except ImportError:
    _speedups = None  # type: ignore[assignment]

__all__ = ["BatchHandler", "BatchPipeline", "PipelineStats"]

_logger = logging.getLogger(__name__)

# The worker's CPU per handler call that the slice size aims at: well under the switch
# interval, and long enough that a call's fixed cost (one export per exporter) stays small.
SLICE_CPU_SECONDS = 0.001
# The shortest sleep that hands the GIL to a thread waiting for it: on 3.11+ a zero sleep
# does; on 3.10 it returns before the waiter takes the GIL (tests/costing/test_pipeline.py
# shows both), and a microsecond's sleep (~50-60 us in practice) does.
_HANDOVER_S = 0.0 if sys.version_info >= (3, 11) else 1e-6
_FIRST_SLICE = 64
_MIN_SLICE = 16

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

# The SDK's key, the HTTP-only key and the plain string older instrumentations check.
_SUPPRESS_KEYS = (
    context._SUPPRESS_INSTRUMENTATION_KEY,
    context._SUPPRESS_HTTP_INSTRUMENTATION_KEY,
    "suppress_instrumentation",
)


class BatchHandler(Protocol[T_contra]):
    """What the worker calls. All four run on the worker thread only."""

    def collect(self) -> None:
        """Gather what is kept outside the queue (sums kept where spans are priced): once per
        wake-up, and again after each flush request is taken, so a flush covers it too.
        Exceptions are caught, logged and counted like ``process``'s."""

    def process(self, batch: Sequence[T_contra]) -> None:
        """Handle one batch. Exceptions are caught, logged and counted by the pipeline."""

    def flush(self, timeout_millis: int) -> bool:
        """Flush downstream after the queued items went through ``process``."""

    def close(self, timeout_millis: int) -> None:
        """Release downstream resources; called once, after the final drain."""


class PipelineStats(dict[str, int]):
    """Counters of one pipeline (a plain dict subclass so it prints and serialises as one).

    Keys: ``queued`` (accepted by ``put``), ``processed`` (went through the handler),
    ``queue_size``, ``dropped_queue_full``, ``dropped_after_shutdown``,
    ``dropped_shutdown_timeout`` (still queued when the shutdown deadline passed),
    ``handler_errors`` (``process`` or ``collect`` calls that raised), ``batches``.
    """


class _FlushRequest:
    __slots__ = ("deadline", "done", "ok")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.done = threading.Event()
        self.ok = False


class BatchPipeline(Generic[T]):
    """Queue items from any thread with ``put``; one daemon thread hands them to ``handler``.

    Args:
        handler: receives batches in FIFO order on the worker thread.
        name: the worker thread's name.
        max_queue_size: items held at most; ``put`` on a full queue drops and counts.
        max_batch_size: items per ``handler.process`` call at most (fewer when the handler
            is slow per item: see the module docstring); a queue this long wakes the worker
            before ``schedule_delay_millis``.
        schedule_delay_millis: the longest an item waits before the worker drains the queue.
        export_timeout_millis: budget of the handler's ``flush`` when flushing on shutdown,
            and the duration above which one ``process`` call is logged as slow.
        compiled: ``put`` in C where it is built (the same behaviour, no Python frame per
            item on the application's threads).
    """

    def __init__(
        self,
        handler: BatchHandler[T],
        *,
        name: str,
        max_queue_size: int,
        max_batch_size: int,
        schedule_delay_millis: float,
        export_timeout_millis: float,
        compiled: bool = False,
    ) -> None:
        if max_queue_size <= 0:
            raise ValueError("max_queue_size must be a positive integer")
        if not 0 < max_batch_size <= max_queue_size:
            raise ValueError("max_batch_size must be positive and at most max_queue_size")
        if schedule_delay_millis <= 0:
            raise ValueError("schedule_delay_millis must be positive")
        if export_timeout_millis <= 0:
            raise ValueError("export_timeout_millis must be positive")
        self._handler = handler
        self._name = name
        self._max_queue_size = max_queue_size
        self._max_batch_size = max_batch_size
        self._delay = schedule_delay_millis / 1e3
        self._export_timeout = export_timeout_millis / 1e3
        self._queue: collections.deque[T] = collections.deque()
        # put() compares against _capacity; shutdown sets it to 0 so late items are refused.
        self._capacity = max_queue_size
        self._shutdown_deadline = 0.0
        self._closing = False
        self._compiled_put: _speedups.QueuePut | None = None
        if compiled and _speedups is not None:
            # Its capacity follows _capacity (shutdown sets both); wake and drop are methods,
            # so a forked child's new event and lock are the ones used.
            self._compiled_put = _speedups.QueuePut(
                self._queue, max_queue_size, max_batch_size, self._wake_worker, self._drop
            )
            self.put = self._compiled_put  # type: ignore[method-assign, assignment]
        self._init_process_state()
        in_forked_child(self, BatchPipeline._after_fork_in_child)

    def _init_process_state(self) -> None:
        """Locks, counters and the worker: everything that does not survive a fork."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._requests: list[_FlushRequest] = []
        self._taken = 0  # items popped for processing (the batch in flight included)
        self._processed = 0
        self._batches = 0
        self._slice = min(_FIRST_SLICE, self._max_batch_size)
        self._handler_errors = 0
        self._dropped_full = 0
        self._dropped_closed = 0
        self._dropped_timeout = 0
        self._warned_full = False
        self._worker = threading.Thread(target=self._run, name=self._name, daemon=True)
        if self._closing:
            self._stopped.set()
        else:
            self._worker.start()

    def _after_fork_in_child(self) -> None:
        self._queue.clear()
        self._init_process_state()

    # -- application threads -------------------------------------------------------------

    def put(self, item: T) -> bool:
        """Queue one item; False if it was dropped (and counted). Never blocks or raises.

        The hot path of ``CostSpanProcessor.on_end``.
        """
        queue = self._queue
        n = len(queue)
        if n < self._capacity:
            queue.append(item)
            if n == self._max_batch_size:
                self._wake.set()
            return True
        self._drop(1)
        return False

    def _wake_worker(self) -> None:
        self._wake.set()

    def put_many(self, items: Sequence[T]) -> int:
        """Queue as many of ``items`` as fit; the rest are dropped and counted. Returns the
        number queued."""
        queue = self._queue
        n = len(queue)
        room = max(self._capacity - n, 0)
        if room >= len(items):
            queue.extend(items)
        else:
            queue.extend(items[:room])
            self._drop(len(items) - room)
        if n <= self._max_batch_size < n + min(room, len(items)):
            self._wake.set()
        return min(room, len(items))

    def _drop(self, count: int) -> None:
        with self._lock:
            if self._closing:
                self._dropped_closed += count
                return
            self._dropped_full += count
            warn = not self._warned_full
            self._warned_full = True
        if warn:
            _logger.warning(
                "otelcost: queue of %s is full (%d items); dropping and counting until it drains",
                self._name,
                self._max_queue_size,
            )

    def force_flush(self, timeout_millis: float = 30_000) -> bool:
        """Process everything queued before this call and flush the handler.

        Returns False if that did not finish within ``timeout_millis`` (the work goes on in
        the background), after shutdown, or when called from the worker thread itself.
        """
        if self._closing or threading.current_thread() is self._worker:
            return False
        request = _FlushRequest(time.monotonic() + max(timeout_millis, 0) / 1e3)
        with self._lock:
            self._requests.append(request)
        self._wake.set()
        request.done.wait(max(timeout_millis, 0) / 1e3)
        return request.done.is_set() and request.ok

    def shutdown(self, timeout_millis: float = 30_000) -> bool:
        """Refuse new items, drain the queue, close the handler; wait at most the timeout.

        Items still queued when the deadline passes are dropped and counted. Returns True
        when the worker finished (including ``handler.close``) within the timeout. A second
        call only waits for the first one's work.
        """
        timeout = max(timeout_millis, 0) / 1e3
        with self._lock:
            first = not self._closing
            if first:
                self._closing = True
                self._capacity = 0
                if self._compiled_put is not None:
                    self._compiled_put.capacity = 0
                self._shutdown_deadline = time.monotonic() + timeout
        if first:
            self._wake.set()
        if threading.current_thread() is self._worker:
            return False
        return self._stopped.wait(timeout)

    def stats(self) -> PipelineStats:
        """A snapshot of the counters (see ``PipelineStats``); exact once the queue is idle."""
        with self._lock:
            queue_size = len(self._queue)
            return PipelineStats(
                queued=self._taken + queue_size + self._dropped_timeout,
                processed=self._processed,
                queue_size=queue_size,
                dropped_queue_full=self._dropped_full,
                dropped_after_shutdown=self._dropped_closed,
                dropped_shutdown_timeout=self._dropped_timeout,
                handler_errors=self._handler_errors,
                batches=self._batches,
            )

    # -- worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        with _suppressed():
            try:
                while not self._closing:
                    self._wake.wait(self._delay)
                    self._wake.clear()
                    self._drain()
                self._drain()
                remaining = self._shutdown_deadline - time.monotonic()
                self._close_handler(min(max(remaining, 0.0), self._export_timeout))
            finally:
                self._stopped.set()

    def _drain(self) -> None:
        """Process until the queue is empty, finishing flush requests as their items pass."""
        # Each pending request waits for the items that were queued when it was taken.
        pending: list[tuple[int, _FlushRequest]] = []
        queue = self._queue
        collected = False
        while True:
            with self._lock:
                taken, self._requests = self._requests, []
            if taken or not collected:
                self._collect()
                collected = True
            ahead = len(queue)
            pending.extend((ahead, request) for request in taken)
            if queue:
                if self._closing and time.monotonic() > self._shutdown_deadline:
                    self._discard_rest()
                else:
                    done, cpu = self._process_one_batch()
                    pending = [(left - done, request) for left, request in pending]
                    if queue:
                        self._yield(cpu, hurry=bool(pending or self._requests))
            due = [request for left, request in pending if left <= 0 or not queue]
            if due:
                pending = [(left, r) for left, r in pending if left > 0 and queue]
                self._finish(due)
            if not queue and not pending:
                return

    def _yield(self, cpu: float, *, hurry: bool) -> None:
        """Release the GIL between slices, so that an application thread waiting for it runs
        now rather than after the switch interval. Unless someone waits for the drain (a
        flush, shutdown) or the queue holds a full batch, stay off for as long as the slice
        took: the application then runs freely between slices, and a drain takes at most
        about half the CPU while it lasts."""
        if hurry or self._closing or len(self._queue) >= self._max_batch_size:
            time.sleep(_HANDOVER_S)
        else:
            time.sleep(min(cpu, 2 * SLICE_CPU_SECONDS))

    def _collect(self) -> None:
        try:
            self._handler.collect()
        except Exception:
            with self._lock:
                self._handler_errors += 1
            _logger.exception("otelcost: %s failed to collect", self._name)

    def _process_one_batch(self) -> tuple[int, float]:
        queue = self._queue
        with self._lock:  # so stats() never misses the batch in flight
            batch = [queue.popleft() for _ in range(min(self._slice, len(queue)))]
            self._taken += len(batch)
        started = time.monotonic()
        cpu = time.thread_time()
        try:
            self._handler.process(batch)
        except Exception:
            with self._lock:
                self._handler_errors += 1
            _logger.exception("otelcost: %s failed to process a batch", self._name)
        cpu = time.thread_time() - cpu
        self._slice = _next_slice(len(batch), cpu, self._max_batch_size)
        elapsed = time.monotonic() - started
        if elapsed > self._export_timeout:
            _logger.warning(
                "otelcost: %s took %.1f s for one batch of %d", self._name, elapsed, len(batch)
            )
        with self._lock:
            self._processed += len(batch)
            self._batches += 1
        return len(batch), cpu

    def _discard_rest(self) -> None:
        with self._lock:
            n = len(self._queue)
            self._queue.clear()
            self._dropped_timeout += n
        _logger.warning("otelcost: %s shutdown timed out; dropped %d queued items", self._name, n)

    def _finish(self, requests: list[_FlushRequest]) -> None:
        remaining = min(r.deadline for r in requests) - time.monotonic()
        try:
            ok = self._handler.flush(max(int(remaining * 1e3), 0))
        except Exception:
            _logger.exception("otelcost: %s failed to flush", self._name)
            ok = False
        for request in requests:
            request.ok = ok
            request.done.set()

    def _close_handler(self, timeout: float) -> None:
        try:
            self._handler.close(int(timeout * 1e3))
        except Exception:
            _logger.exception("otelcost: %s failed to close", self._name)


def _next_slice(items: int, cpu_seconds: float, max_batch_size: int) -> int:
    """Items for the next slice, from the CPU the last one took. It at most doubles (or
    grows to ``_FIRST_SLICE``), so a cheap call on a few items does not buy a long one."""
    grown = max(2 * items, _FIRST_SLICE)
    fit = int(items * SLICE_CPU_SECONDS / cpu_seconds) if cpu_seconds > 0 else grown
    return max(min(fit, grown, max_batch_size), min(_MIN_SLICE, max_batch_size))


@contextmanager
def _suppressed() -> Iterator[None]:
    ctx = context.get_current()
    for key in _SUPPRESS_KEYS:
        ctx = context.set_value(key, True, ctx)
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)
