"""CostSpanProcessor: prices every ended span in the background and streams CostRecords.

Data flow (see docs/design-decisions.md for the measurements behind it)::

    app thread: span.end() -> on_end: append the ended span to a bounded queue (nothing else)
    pricing worker: service, operation (+ cardinality guard), price, cost -> SpanCost
        -> CostRecord -> record queue
        -> enriched copy with cost.* attributes -> downstream span processors (sampled spans)
    export worker: record batches -> every CostExporter

Pricing never does I/O (the PricingCache refreshes on its own thread), so the pricing
worker keeps up with the application and a slow or stuck cost exporter only ever holds
records, never spans or the user's traces. The record and the enriched span are built from
one SpanCost, so ``cost.amount`` equals the record's ``cost_amount`` exactly.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from otelcost.costing._pipeline import BatchPipeline
from otelcost.costing.coster import Coster, SpanCost
from otelcost.costing.enrich import enriched_copy
from otelcost.exporters.base import CostExporter, CostExportResult
from otelcost.pricing import PricingCache
from otelcost.pricing.sources import SourceLike
from otelcost.record import CostRecord

__all__ = ["REGION_ENV", "CostSpanProcessor", "PricingLike", "prewarm"]

_logger = logging.getLogger(__name__)

PricingLike = PricingCache | SourceLike
"""What ``pricing`` accepts: a PricingCache, or anything a PricingCache is built from."""

REGION_ENV: Final = "OTELCOST_REGION"
DEFAULT_MAX_QUEUE_SIZE: Final = 65_536
DEFAULT_MAX_EXPORT_BATCH_SIZE: Final = 4_096
DEFAULT_SCHEDULE_DELAY_MILLIS: Final = 1_000
DEFAULT_EXPORT_TIMEOUT_MILLIS: Final = 30_000
DEFAULT_MAX_SPAN_QUEUE_SIZE: Final = 16_384
# The pricing stage is CPU-only, so it runs often and in moderate batches: spans (which
# are much larger than records) are held for at most this long.
_SPAN_SCHEDULE_DELAY_MILLIS: Final = 200
_SPAN_BATCH_SIZE: Final = 1_024


class CostSpanProcessor(SpanProcessor):
    """An OpenTelemetry SDK SpanProcessor that prices every ended span.

    Args:
        pricing: a PricingCache (used as is: the caller refreshes and starts it), or a
            pricing document (dict), JSON path, http(s) URL, PricingTable or PricingSource,
            from which a PricingCache is built, loaded once here (a failure is logged and
            spans get ``cost.error`` until a refresh succeeds), refreshed in the background
            and stopped on shutdown.
        exporters: CostExporters that receive every CostRecord, on the export worker.
        region: ``cost.pricing_region`` and the record's region; default ``OTELCOST_REGION``,
            else the pricing table's region.
        currency: the currency costs are accounted in. Records carry the table's currency;
            if the table is in another currency every span is left unpriced with
            ``cost.error`` = ``currency_mismatch: ...`` (amounts in two currencies are
            never mixed silently). Tables without a ``currency`` are USD.
        max_queue_size: records waiting for the exporters at most (a full queue drops the
            newest record and counts it).
        max_export_batch_size: records per ``CostExporter.export`` call at most.
        schedule_delay_millis: the longest a record waits before it is exported.
        export_timeout_millis: the flush budget of the exporters at shutdown; an export
            call longer than this is logged.
        max_span_queue_size: ended spans waiting to be priced at most. When it is full the
            span is not priced (counted in ``spans_dropped``) and is handed unenriched to
            ``span_processors``, so traces never lose a span because of cost accounting.
        max_operations_per_service: distinct operations per service before new ones are
            folded into ``OTHER`` (counted in ``operations_folded``).
        normalizer: ``str -> str`` applied to URL paths and span names when deriving the
            operation; default ``otelcost.normalize_path``.
        span_processors: SDK span processors (typically a BatchSpanProcessor around the
            user's SpanExporter) that receive every sampled span as an enriched copy with
            the ``cost.*`` attributes. Register them here *instead of* on the provider.
    """

    def __init__(
        self,
        pricing: PricingLike,
        exporters: Sequence[CostExporter] = (),
        *,
        region: str | None = None,
        currency: str = "USD",
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE,
        schedule_delay_millis: float = DEFAULT_SCHEDULE_DELAY_MILLIS,
        export_timeout_millis: float = DEFAULT_EXPORT_TIMEOUT_MILLIS,
        max_span_queue_size: int = DEFAULT_MAX_SPAN_QUEUE_SIZE,
        max_operations_per_service: int = 1000,
        normalizer: Callable[[str], str] | None = None,
        span_processors: Sequence[SpanProcessor] = (),
    ) -> None:
        if not currency or not isinstance(currency, str):
            raise ValueError(f"currency must be a non-empty string, got {currency!r}")
        if max_operations_per_service < 1:
            raise ValueError("max_operations_per_service must be >= 1")
        self._pricing, self._owns_pricing = _as_cache(pricing)
        self._exporters = tuple(exporters)
        self._exporter_names = _names(self._exporters)
        self._span_processors = tuple(span_processors)
        self._on_ending_hooks = tuple(
            hook
            for hook in (getattr(p, "_on_ending", None) for p in self._span_processors)
            if hook is not None
        )
        self._coster = Coster(
            self._pricing,
            currency=currency,
            region=region
            if region is not None
            else (os.environ.get(REGION_ENV, "").strip() or None),
            max_operations_per_service=max_operations_per_service,
            normalizer=normalizer,
        )
        self._shutdown = False
        self._shutdown_lock = threading.Lock()
        self._reset_counters()
        # Registered before the pipelines create their hooks, so in a forked child the
        # counters and the guard are fresh before the new workers start.
        if hasattr(os, "register_at_fork"):
            weak_self = weakref.ref(self)

            def _after_in_child() -> None:
                processor = weak_self()
                if processor is not None:
                    processor._after_fork_in_child()

            os.register_at_fork(after_in_child=_after_in_child)
        self._records: BatchPipeline[CostRecord] = BatchPipeline(
            _ExportStage(self),
            name="otelcost-export",
            max_queue_size=max_queue_size,
            max_batch_size=max_export_batch_size,
            schedule_delay_millis=schedule_delay_millis,
            export_timeout_millis=export_timeout_millis,
        )
        self._spans: BatchPipeline[ReadableSpan] = BatchPipeline(
            _PricingStage(self),
            name="otelcost-pricing",
            max_queue_size=max_span_queue_size,
            max_batch_size=min(_SPAN_BATCH_SIZE, max_span_queue_size),
            schedule_delay_millis=_SPAN_SCHEDULE_DELAY_MILLIS,
            export_timeout_millis=export_timeout_millis,
        )
        self._put = self._spans.put
        if self._owns_pricing:
            prewarm(self._pricing)

    def _reset_counters(self) -> None:
        # Each counter is written by one thread only (noted per group) and read by stats().
        self._bypassed = 0  # app threads, under _shutdown_lock (only when the queue is full)
        self._hook_errors = 0  # app threads, best effort (a lost increment is tolerable)
        self._priced = 0  # pricing worker
        self._unpriced: dict[str, int] = {}
        self._forwarded = 0
        self._forward_errors = 0
        self._pricing_errors = 0
        self._exported = 0  # export worker
        self._export_failures = 0
        self._per_exporter: dict[str, list[int]] = {}

    def _after_fork_in_child(self) -> None:
        self._shutdown_lock = threading.Lock()
        self._reset_counters()
        # The parent's pricing worker may have held the guard's lock at fork time.
        self._coster.reset_guard()

    # -- SpanProcessor, on the application threads --------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Forward to ``span_processors`` (nothing else happens at span start)."""
        for processor in self._span_processors:
            try:
                processor.on_start(span, parent_context=parent_context)
            except Exception:
                self._hook_error()

    def _on_ending(self, span: Span) -> None:
        for hook in self._on_ending_hooks:
            try:
                hook(span)
            except Exception:
                self._hook_error()

    def on_end(self, span: ReadableSpan) -> None:
        """Queue the ended span for pricing. Never blocks, never raises."""
        try:
            if not self._put(span) and self._span_processors:
                self._bypass(span)
        except Exception:
            self._hook_error()

    def _bypass(self, span: ReadableSpan) -> None:
        """The span queue is full: the user's processors still get the span, unenriched."""
        if self._shutdown:
            return
        with self._shutdown_lock:
            self._bypassed += 1
        for processor in self._span_processors:
            try:
                processor.on_end(span)
            except Exception:
                self._hook_error()

    def _hook_error(self) -> None:
        self._hook_errors += 1
        if self._hook_errors == 1:
            _logger.exception("otelcost: error in a span hook (counted in stats()['errors'])")

    # -- lifecycle ------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Price, export and forward everything ended before this call; flush the exporters
        and ``span_processors``. False if that did not finish within the timeout."""
        deadline = time.monotonic() + max(timeout_millis, 0) / 1e3
        ok = self._spans.force_flush(_millis_left(deadline))
        for processor in self._span_processors:
            flushed = _call_with_deadline(
                functools.partial(processor.force_flush, int(_millis_left(deadline))), deadline
            )
            ok = flushed is True and ok
        return ok

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Drain and stop both workers, shut down the exporters and ``span_processors``
        (and the PricingCache if this processor built it), all within ``timeout_millis``.

        Spans ended afterwards are counted as dropped. Idempotent.
        """
        with self._shutdown_lock:
            if self._shutdown:
                return
            self._shutdown = True
        deadline = time.monotonic() + max(timeout_millis, 0) / 1e3
        # The pricing stage's close() shuts the export stage down after its final drain.
        self._spans.shutdown(_millis_left(deadline))
        self._records.shutdown(_millis_left(deadline))
        for processor in self._span_processors:
            _call_with_deadline(processor.shutdown, deadline)
        if self._owns_pricing:
            self._pricing.stop(timeout=max(deadline - time.monotonic(), 0.0))

    # -- introspection --------------------------------------------------------------------

    @property
    def is_shutdown(self) -> bool:
        """Whether ``shutdown`` was called."""
        return self._shutdown

    @property
    def pricing(self) -> PricingCache:
        """The PricingCache this processor reads."""
        return self._pricing

    @property
    def exporters(self) -> tuple[CostExporter, ...]:
        return self._exporters

    @property
    def span_processors(self) -> tuple[SpanProcessor, ...]:
        return self._span_processors

    def stats(self) -> dict[str, Any]:
        """Counters for operators; exact once the pipeline is idle (e.g. after force_flush).

        - ``spans_seen``: spans handed to ``on_end`` (all of them, sampled or not);
        - ``spans_priced`` / ``spans_unpriced`` (by reason in ``unpriced``: the text of
          ``cost.error`` before ":", e.g. ``pricing_stale``, ``pricing_not_found``);
        - ``spans_dropped``: not priced because the span queue was full, the processor was
          shut down, or the shutdown deadline passed (by cause in ``dropped``);
        - ``spans_forwarded``: enriched copies handed to ``span_processors``;
          ``spans_bypassed``: spans handed to them unenriched because the queue was full;
        - ``records_exported``: records every exporter accepted; ``export_failures``:
          (exporter, batch) pairs that failed or raised; ``records_dropped``: records lost
          to a full record queue, shutdown or its deadline; ``exporters``: per exporter;
        - ``operations_folded``: spans whose operation was folded into ``OTHER``;
        - ``queue_size`` / ``record_queue_size``: spans and records waiting now;
        - ``errors``: exceptions caught in hooks, pricing or forwarding (all logged).
        """
        spans = self._spans.stats()
        records = self._records.stats()
        unpriced = dict(self._unpriced)
        dropped = {
            "queue_full": spans["dropped_queue_full"],
            "after_shutdown": spans["dropped_after_shutdown"],
            "shutdown_timeout": spans["dropped_shutdown_timeout"],
        }
        return {
            "spans_seen": spans["queued"] + dropped["queue_full"] + dropped["after_shutdown"],
            "spans_priced": self._priced,
            "spans_unpriced": sum(unpriced.values()),
            "unpriced": unpriced,
            "spans_dropped": sum(dropped.values()),
            "dropped": dropped,
            "spans_forwarded": self._forwarded,
            "spans_bypassed": self._bypassed,
            "records_exported": self._exported,
            "export_failures": self._export_failures,
            "records_dropped": records["dropped_queue_full"]
            + records["dropped_after_shutdown"]
            + records["dropped_shutdown_timeout"],
            "exporters": {
                name: {"exported": ok, "failed": failed}
                for name, (ok, failed) in dict(self._per_exporter).items()
            },
            "operations_folded": self._coster.guard.folded,
            "queue_size": spans["queue_size"],
            "record_queue_size": records["queue_size"],
            "errors": self._hook_errors
            + self._pricing_errors
            + self._forward_errors
            + spans["handler_errors"]
            + records["handler_errors"],
        }

    # -- workers --------------------------------------------------------------------------

    def _price_batch(self, spans: Sequence[ReadableSpan]) -> None:
        """Pricing worker: one table snapshot for the whole batch."""
        coster = self._coster
        snap = coster.snapshot()
        build_records = bool(self._exporters)
        forward = bool(self._span_processors)
        records: list[CostRecord] = []
        for span in spans:
            try:
                cost = coster.cost(span, snap)
            except Exception:  # a bug or hostile span data: the trace still gets the span
                self._pricing_errors += 1
                if self._pricing_errors == 1:
                    _logger.exception("otelcost: could not price a span (counted as an error)")
                if forward:
                    self._forward(span)
                continue
            self._count(cost)
            context = span.context
            if build_records and context is not None:
                records.append(cost.record(context.trace_id, context.span_id))
            if forward and context is not None and context.trace_flags.sampled:
                self._forward(enriched_copy(span, cost.attributes()))
                self._forwarded += 1
        if records:
            self._records.put_many(records)

    def _count(self, cost: SpanCost) -> None:
        reason = cost.reason
        if reason is None:
            self._priced += 1
        else:
            self._unpriced[reason] = self._unpriced.get(reason, 0) + 1

    def _forward(self, span: ReadableSpan) -> None:
        for processor in self._span_processors:
            try:
                processor.on_end(span)
            except Exception:
                self._forward_errors += 1
                if self._forward_errors == 1:
                    _logger.exception("otelcost: a span processor failed in on_end")

    def _export_batch(self, records: Sequence[CostRecord]) -> None:
        """Export worker: every exporter gets every batch; failures are counted, not raised."""
        all_ok = True
        for exporter, name in zip(self._exporters, self._exporter_names, strict=True):
            try:
                ok = exporter.export(records) is CostExportResult.SUCCESS
            except Exception:
                ok = False
                _logger.exception("otelcost: %s.export raised", name)
            counts = self._per_exporter.setdefault(name, [0, 0])
            if ok:
                counts[0] += len(records)
            else:
                counts[1] += len(records)
                self._export_failures += 1
                all_ok = False
        if all_ok:
            self._exported += len(records)

    def _flush_exporters(self, timeout_millis: int) -> bool:
        deadline = time.monotonic() + timeout_millis / 1e3
        ok = True
        for exporter in self._exporters:
            try:
                ok = exporter.force_flush(int(_millis_left(deadline))) and ok
            except Exception:
                _logger.exception("otelcost: %s.force_flush raised", type(exporter).__name__)
                ok = False
        return ok

    def _close_exporters(self, timeout_millis: int) -> None:
        deadline = time.monotonic() + timeout_millis / 1e3
        for exporter in self._exporters:
            try:
                exporter.shutdown(int(_millis_left(deadline)))
            except Exception:
                _logger.exception("otelcost: %s.shutdown raised", type(exporter).__name__)


class _PricingStage:
    """BatchHandler of the span queue."""

    def __init__(self, processor: CostSpanProcessor) -> None:
        self._processor = processor

    def process(self, batch: Sequence[ReadableSpan]) -> None:
        self._processor._price_batch(batch)

    def flush(self, timeout_millis: int) -> bool:
        return self._processor._records.force_flush(timeout_millis)

    def close(self, timeout_millis: int) -> None:
        self._processor._records.shutdown(timeout_millis)


class _ExportStage:
    """BatchHandler of the record queue."""

    def __init__(self, processor: CostSpanProcessor) -> None:
        self._processor = processor

    def process(self, batch: Sequence[CostRecord]) -> None:
        self._processor._export_batch(batch)

    def flush(self, timeout_millis: int) -> bool:
        return self._processor._flush_exporters(timeout_millis)

    def close(self, timeout_millis: int) -> None:
        self._processor._close_exporters(timeout_millis)


def _as_cache(pricing: PricingLike) -> tuple[PricingCache, bool]:
    if isinstance(pricing, PricingCache):
        return pricing, False
    return PricingCache(pricing), True


def prewarm(cache: PricingCache) -> None:
    """Load a table now unless one is loaded, then start the background refresher.

    A failed load is logged, not raised: spans get ``cost.error`` (``pricing_stale``)
    until the refresher succeeds.
    """
    if cache.last_sync is None:
        try:
            cache.refresh()
        except Exception as exc:
            _logger.error(
                "otelcost: could not load pricing (%s); spans get cost.error until a "
                "refresh succeeds",
                exc,
            )
    cache.start()


def _names(exporters: tuple[CostExporter, ...]) -> tuple[str, ...]:
    """Class names, numbered where a class occurs more than once (stats keys)."""
    names = [type(e).__name__ for e in exporters]
    return tuple(
        name if names.count(name) == 1 else f"{name}#{names[:i].count(name)}"
        for i, name in enumerate(names)
    )


def _millis_left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0) * 1e3


def _call_with_deadline(fn: Callable[[], object], deadline: float) -> object:
    """Run ``fn`` on a helper thread and wait for it until ``deadline``.

    SDK span processors do not all honour a timeout (BatchSpanProcessor.force_flush ignores
    it), so a stuck user exporter must not hold our caller past its deadline. Returns fn's
    result, or None on timeout or error. Runs inline where threads cannot start (at
    interpreter exit).
    """
    result: list[object] = []

    def run() -> None:
        try:
            result.append(fn())
        except Exception:
            _logger.exception("otelcost: error while flushing or shutting down a span processor")

    helper = threading.Thread(target=run, name="otelcost-downstream", daemon=True)
    try:
        helper.start()
    except RuntimeError:
        run()
    else:
        helper.join(max(deadline - time.monotonic(), 0.0))
    return result[0] if result else None
