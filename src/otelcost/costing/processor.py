"""CostSpanProcessor: prices every span as it ends and accounts its cost in the background.

Two paths, chosen once per process (``stats()["pricing_path"]``, logged at INFO):

``ending_hook`` (OpenTelemetry SDK >= 1.40, which calls ``SpanProcessor._on_ending``)::

    app thread, span.end() -> _on_ending, before any processor's on_end:
        service, operation (memoized), price (memoized per table), cost
        -> cost.* written into the span itself (the user's processors see it, no copy)
        -> the cost added to this thread's running totals (no lock, nothing queued)
        -> one SpanCost (a small tuple) queued, only if a record exporter asks
    export worker, once a second and on flush: what the totals grew by, per (service,
        operation, currency) -> CostSumExporters; queued SpanCosts -> CostRecords ->
        CostExporters

``copy`` (older SDKs: no ending hook)::

    app thread: on_end appends the ended span to a bounded queue (nothing else)
    pricing worker: the same pricing -> its running totals (and a SpanCost queued for
        record exporters), and an enriched copy of the span with the cost.* attributes ->
        the processors in ``span_processors``
    export worker: as above

Pricing never does I/O (the PricingCache refreshes on its own thread) and never raises
into the application. The span's attributes, the record and the sums are all built from
one SpanCost, so ``cost.amount`` equals the record's ``cost_amount`` and what the sums
add, to the nano-unit.
"""

from __future__ import annotations

import dis
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable, Sequence
from operator import itemgetter
from types import CodeType
from typing import Any, Final, Literal, TypeAlias, cast

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanContext

from otelcost import environment
from otelcost._fork import in_forked_child
from otelcost.costing._ending import ending_hook_supported
from otelcost.costing._pipeline import BatchPipeline
from otelcost.costing._tally import Tally, Total, plus
from otelcost.costing.coster import (
    NO_USAGE,
    Binding,
    Coster,
    CostFields,
    Named,
    _Shape,
    cost_record,
    plain_attributes,
    span_ids,
)
from otelcost.costing.enrich import enriched_copy
from otelcost.exporters.base import (
    CostExporter,
    CostExportResult,
    CostSum,
    CostSumExporter,
    CostSums,
)
from otelcost.money import DEFAULT_CURRENCY, NANOS_PER_UNIT
from otelcost.pricing import PricingCache
from otelcost.pricing.sources import SourceLike
from otelcost.record import _MIN_TS_MS

try:  # the compiled planner (setup.py builds it where a C compiler is); else pure Python
    from otelcost.costing import _speedups
except ImportError:
    _speedups = None  # type: ignore[assignment]

__all__ = ["REGION_ENV", "CostSpanProcessor", "PricingLike", "PricingPath", "prewarm"]

_logger = logging.getLogger(__name__)

PricingLike = PricingCache | SourceLike
"""What ``pricing`` accepts: a PricingCache, or anything a PricingCache is built from."""

PricingPath = Literal["auto", "ending_hook", "copy"]
"""Where spans are priced: ``auto`` picks ``ending_hook`` when the SDK offers it."""

REGION_ENV: Final = environment.REGION
DEFAULT_MAX_QUEUE_SIZE: Final = 65_536
# Also the backlog that wakes the export worker. 512 (the SDK BatchSpanProcessor's) kept
# every queued cost tuple on CPython's free list, the young collections the SDK's own, but
# woke the worker four times as often and read a worse p99 at half load with every exporter
# (docs/design-decisions.md §1, "The export worker's backlog").
DEFAULT_MAX_EXPORT_BATCH_SIZE: Final = 4_096
DEFAULT_SCHEDULE_DELAY_MILLIS: Final = 1_000
DEFAULT_EXPORT_TIMEOUT_MILLIS: Final = 30_000
DEFAULT_MAX_SPAN_QUEUE_SIZE: Final = 16_384
# The copy path's pricing stage is CPU-only, so it runs often and in moderate batches:
# spans (which are much larger than SpanCosts) are held for at most this long.
_SPAN_SCHEDULE_DELAY_MILLIS: Final = 200
_SPAN_BATCH_SIZE: Final = 1_024
# A start time after this one, with the end before the table's stale time, makes the end
# time's milliseconds a valid record timestamp (Coster.price's check, as one comparison).
_MIN_START_NS: Final = (_MIN_TS_MS + 1) * 1_000_000
# Every priced span carries it; on the ending-hook path its absence in on_end means the
# span skipped the hook.
_SOURCE_KEY: Final = "cost.source"
_CONTEXT: Final = itemgetter(9)  # of a CostFields


class CostSpanProcessor(SpanProcessor):
    """An OpenTelemetry SDK SpanProcessor that prices every ended span.

    Register it on the TracerProvider like any processor. With the SDK's ending hook
    (SDK >= 1.40) every span carries its ``cost.*`` attributes by the time any processor's
    ``on_end`` sees it, so the application's own processors stay on the provider.

    Args:
        pricing: a PricingCache (used as is: the caller refreshes and starts it), or a
            pricing document (dict), JSON path, http(s) URL, PricingTable or PricingSource,
            from which a PricingCache is built, loaded once here (a failure is logged and
            spans get ``cost.error`` until a refresh succeeds), refreshed in the background
            and stopped on shutdown.
        exporters: where costs go, on the export worker: CostSumExporters receive the sums
            of each batch, other CostExporters the per-span CostRecords (built only when
            one of them is there).
        region: ``cost.pricing_region`` and the record's region; default ``OTELCOST_REGION``,
            else the pricing table's region.
        currency: the currency costs are accounted in; default ``OTELCOST_CURRENCY``, else
            USD. Records carry the table's currency;
            if the table is in another currency every span is left unpriced with
            ``cost.error`` = ``currency_mismatch: ...`` (amounts in two currencies are
            never mixed silently). Tables without a ``currency`` are USD.
        max_queue_size: span costs waiting for the record exporters at most (a full queue
            drops the newest and counts it in ``records_dropped``; the sums for
            CostSumExporters are kept apart and never dropped).
        max_export_batch_size: span costs per record export call at most, and the
            backlog that wakes the export worker before ``schedule_delay_millis``.
        schedule_delay_millis: the longest a cost waits before it is exported.
        export_timeout_millis: the flush budget of the exporters at shutdown; an export
            call longer than this is logged.
        max_span_queue_size: copy path only: ended spans waiting to be priced at most. When
            it is full the span is not priced (counted in ``spans_dropped``) and is handed
            unenriched to ``span_processors``, so traces never lose a span.
        max_operations_per_service: distinct operations per service before new ones are
            folded into ``OTHER`` (counted in ``operations_folded``).
        normalizer: ``str -> str`` applied to URL paths and span names when deriving the
            operation; default ``otelcost.normalize_path``.
        span_processors: SDK span processors (e.g. a BatchSpanProcessor around a
            SpanExporter) fed by this processor with every span and its ``cost.*``
            attributes: the span itself on the ``ending_hook`` path, an enriched copy on the
            ``copy`` path. Register them here *instead of* on the provider. On the
            ``ending_hook`` path, processors registered on the provider receive priced
            spans too.
        pricing_path: ``auto`` (default): ``ending_hook`` when this SDK calls it, else
            ``copy``. Forcing ``ending_hook`` on an SDK without it raises ValueError.
        environ: where ``OTELCOST_REGION`` and ``OTELCOST_CURRENCY`` are read, once, here
            (default ``os.environ``; see ``otelcost.environment``).
    """

    # Read by the compiled ending hook per span: as members at fixed offsets they cost it
    # one line of this object each, where the instance dict costs five or six lines, all
    # cold in a server between spans (docs/design-decisions.md §1). The rest stays in the
    # instance dict (the SDK's SpanProcessor has one).
    __slots__ = ("_pricing_in_hook", "_put_cost", "_queue_records", "_shutdown")

    def __init__(
        self,
        pricing: PricingLike,
        exporters: Sequence[CostExporter] = (),
        *,
        region: str | None = None,
        currency: str | None = None,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE,
        schedule_delay_millis: float = DEFAULT_SCHEDULE_DELAY_MILLIS,
        export_timeout_millis: float = DEFAULT_EXPORT_TIMEOUT_MILLIS,
        max_span_queue_size: int = DEFAULT_MAX_SPAN_QUEUE_SIZE,
        max_operations_per_service: int = 1000,
        normalizer: Callable[[str], str] | None = None,
        span_processors: Sequence[SpanProcessor] = (),
        pricing_path: PricingPath = "auto",
        environ: environment.Environ | None = None,
    ) -> None:
        currency = environment.choose(currency, environment.CURRENCY, DEFAULT_CURRENCY, environ)
        if not currency or not isinstance(currency, str):
            raise ValueError(f"currency must be a non-empty string, got {currency!r}")
        if max_operations_per_service < 1:
            raise ValueError("max_operations_per_service must be >= 1")
        self._hook = _choose_path(pricing_path)
        self._pricing, self._owns_pricing = _as_cache(pricing)
        self._exporters = tuple(exporters)
        self._exporter_names = _names(self._exporters)
        self._sum_exporters = tuple(
            (e, n)
            for e, n in zip(self._exporters, self._exporter_names, strict=True)
            if isinstance(e, CostSumExporter)
        )
        self._record_exporters = tuple(
            (e, n, _export_costs_of(e))
            for e, n in zip(self._exporters, self._exporter_names, strict=True)
            if not isinstance(e, CostSumExporter)
        )
        self._span_processors = tuple(span_processors)
        # The processors' span-start and span-ending calls that do something: the SDK's
        # own processors' are empty methods, and a call is a Python frame per span.
        self._starting = tuple(
            p for p in self._span_processors if not _empty(getattr(p, "on_start", None))
        )
        self._on_ending_hooks = tuple(
            hook
            for hook in (getattr(p, "_on_ending", None) for p in self._span_processors)
            if hook is not None and not _empty(hook)
        )
        # OTELCOST_PURE_PYTHON: no compiled code, where it is built (the same results).
        pure = environment.flag(environment.PURE_PYTHON, environ)
        self._coster = Coster(
            self._pricing,
            currency=currency,
            region=environment.choose(region, environment.REGION, None, environ),
            max_operations_per_service=max_operations_per_service,
            normalizer=normalizer,
            compiled=not pure,
        )
        self._shutdown = False
        # Pricing in the ending hook until shutdown (one attribute read per span).
        self._pricing_in_hook = self._hook
        self._shutdown_lock = threading.Lock()
        # Each pricing thread's running totals: keys are a Named (priced and billable:
        # nanos and spans) or (Named, reason) (unpriced; reason None: not billable). The
        # compiled planner adds into cells, which the C snapshot reads.
        self._tally = Tally(snapshot=dict.copy if pure or _speedups is None else _speedups.snapshot)
        # Per-span costs are queued only for record exporters.
        self._queue_records = bool(self._record_exporters)
        self._reset_counters()
        # Registered before the pipelines create their hooks, so in a forked child the
        # counters and the guard are fresh before the new workers start.
        in_forked_child(self, CostSpanProcessor._after_fork_in_child)
        self._costs: BatchPipeline[CostFields] = BatchPipeline(
            _ExportStage(self),
            name="otelcost-export",
            max_queue_size=max_queue_size,
            max_batch_size=max_export_batch_size,
            schedule_delay_millis=schedule_delay_millis,
            export_timeout_millis=export_timeout_millis,
            compiled=not pure,
        )
        self._put_cost = self._costs.put
        self._planner: _speedups.Planner | None = None
        self._spans: BatchPipeline[ReadableSpan] | None = None
        if not self._hook:
            self._spans = BatchPipeline(
                _PricingStage(self),
                name="otelcost-pricing",
                max_queue_size=max_span_queue_size,
                max_batch_size=min(_SPAN_BATCH_SIZE, max_span_queue_size),
                schedule_delay_millis=_SPAN_SCHEDULE_DELAY_MILLIS,
                export_timeout_millis=export_timeout_millis,
                compiled=not pure,
            )
            self._put_span = self._spans.put
        # The compiled planner replaces _price_planned and _on_ending (same results, see
        # _use_compiled) unless OTELCOST_PURE_PYTHON is set or it was not built.
        self._compiled = self._hook and not pure and self._use_compiled()
        _logger.info(
            "otelcost: pricing spans %s",
            "in the SDK's ending hook (cost.* written into each span; pricing_path=ending_hook, "
            + ("compiled planner)" if self._compiled else "pure Python)")
            if self._hook
            else "on a worker, enriched copies to span_processors (no ending hook in this "
            "SDK; pricing_path=copy)",
        )
        if self._owns_pricing:
            prewarm(self._pricing)

    def _reset_counters(self) -> None:
        # Each counter is written by one thread only (noted per group) and read by stats().
        self._bypassed = 0  # app threads, under _shutdown_lock (only when the queue is full)
        self._hook_errors = 0  # app threads, best effort (a lost increment is tolerable)
        self._late = 0  # app threads after shutdown (ending_hook path), best effort
        self._forwarded = 0  # copy path: pricing worker
        self._forward_errors = 0
        self._pricing_errors = 0
        self._export_failures = 0  # export worker
        self._per_exporter: dict[str, list[int]] = {}
        self._collected = 0

    def _after_fork_in_child(self) -> None:
        self._shutdown_lock = threading.Lock()
        self._reset_counters()
        # The parent's threads may have held the guard's lock at fork time.
        self._coster.reset_guard()
        if self._planner is not None:  # it keeps the parent's threads' totals dicts
            self._planner.forget_threads()

    # -- SpanProcessor, on the application threads --------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Forward to ``span_processors`` (nothing else happens at span start)."""
        for processor in self._starting:
            try:
                processor.on_start(span, parent_context=parent_context)
            except Exception:
                self._hook_error()

    def _on_ending(self, span: Span) -> None:
        """The SDK's ending hook: price the span and write ``cost.*`` into it. Never raises."""
        if self._pricing_in_hook:
            try:
                if not self._price_planned(span):
                    self._price_in_place(span)
            except Exception:
                self._pricing_error()
        for hook in self._on_ending_hooks:
            try:
                hook(span)
            except Exception:
                self._hook_error()

    def _use_compiled(self) -> bool:
        """Put the compiled planner (``otelcost.costing._speedups``) in place: an instance
        attribute ``_price_planned`` that does what the method does, and ``_on_ending``
        around it, so the SDK calls C directly. Both read the same state as the Python code
        on every span and call it for any value outside their fast path. False (pure
        Python) when the module is not built or a subclass overrides either method. Also
        ``on_start`` and ``on_end`` in C, unless a subclass overrides them."""
        cls = type(self)
        if (
            _speedups is None
            or cls._on_ending is not CostSpanProcessor._on_ending
            or cls._price_planned is not CostSpanProcessor._price_planned
        ):
            return False
        planner = _speedups.Planner(
            self,
            self._coster,
            self._pricing,
            self._tally,
            CostSpanProcessor._price_planned,
            Binding,
            tuple(
                Binding._fields.index(field)
                for field in ("snapshot", "nested", "entry_plan", "nested_plan")
            ),
            SpanContext,
            NO_USAGE,
            NANOS_PER_UNIT,
            _MIN_START_NS,
            _Shape,
            Named,
        )
        self._planner = planner
        self._price_planned = planner  # type: ignore[method-assign, assignment]
        self._on_ending = _speedups.EndingHook(  # type: ignore[method-assign, assignment]
            planner, self, self._on_ending_hooks
        )
        # on_start and on_end forward to span_processors without a Python frame per span
        # (on_end calls the method for any span it would do more than forward).
        if cls.on_start is CostSpanProcessor.on_start:
            self.on_start = _speedups.Forwarder(  # type: ignore[method-assign, assignment]
                self, self._starting, None
            )
        if cls.on_end is CostSpanProcessor.on_end:
            self.on_end = _speedups.Forwarder(  # type: ignore[method-assign, assignment]
                self, self._span_processors, CostSpanProcessor.on_end, planner
            )
        return True

    def _price_planned(self, span: Span) -> bool:
        """Most spans: Coster.price's result without calling it. A memo hit (the naming
        memo inlined, see Coster._named), a table fresh at the span's end, a plain shape,
        valid times and a binding whose plan decides the charge; False (nothing done)
        otherwise. tests/costing/test_planned.py holds this equal to Coster.price, and the
        compiled planner (_use_compiled) equal to this."""
        coster = self._coster
        held, snap, stale_ns = coster.live
        if held is not self._pricing.held:
            return False
        # cost.* go into the dict inside the span's BoundedAttributes. The SDK has set the
        # end time, so set_attribute refuses and the mapping is marked immutable; but the
        # span still belongs to this thread and no processor has seen it (the layout
        # ending_hook_supported() checked): never counted as drops, never evicting one of
        # the span's own attributes.
        inner = span._attributes._dict  # type: ignore[union-attr]
        shape = coster._shapes.get(tuple(inner))
        # The shape of this resource and kind (another provider's, another kind's, further
        # on in the chain): compared by identity.
        resource, kind = span._resource, span._kind
        while shape is not None and (shape.resource is not resource or shape.kind is not kind):
            shape = shape.next
        if shape is None or not shape.plain:
            return False
        try:
            values = shape.reader(inner)
            named = shape.memo.get(values)
            if named is None:  # named after the span's name (the fallback rule)
                named = shape.by_name.get((span._name, values))
            if named is None:
                rule = shape.path_rule
                if rule is None:
                    return False
                # A raw path or URL names it (new for every id): its rule's operation.
                named = coster._by_path(rule, kind, inner, shape, values)
                if named is None:
                    return False
        except Exception:  # an unhashable value: Coster.price names it without the memo
            return False
        binding = named.binding
        if binding.snapshot is not snap:
            return False
        parent = span._parent
        entry = named.entry_kind or parent is None or parent.is_remote
        plan = binding.entry_plan if entry else binding.nested_plan
        # Both set: Span.end() calls the hook after setting the end time.
        start: int = span._start_time  # type: ignore[assignment]
        end: int = span._end_time  # type: ignore[assignment]
        # Coster.price's valid times (epoch nanoseconds, end after start), and a table
        # still fresh when the span ended (the SDK's clock is the cache's: see Coster.live).
        if plan is None or not _MIN_START_NS < start <= end <= stale_ns:
            return False
        duration_ms = (end - start) / 1e6
        attributes, per_request, per_ms, price = plan
        if price is None:
            nanos, billable = 0, False
        else:
            # price.flat_nanos(duration_ms), inline: its quick case, else the call.
            scaled = (per_request + per_ms * duration_ms) * NANOS_PER_UNIT
            if not (
                0.0 <= scaled < 1e7 and -0.499998 < scaled - (nanos := round(scaled)) < 0.499998
            ):
                nanos = price.flat_nanos(duration_ms)
            billable = True
        inner.update(attributes)
        inner["cost.duration_ms"] = duration_ms
        try:
            totals = self._tally.local.totals
        except AttributeError:  # this thread's first span
            totals = self._tally.totals()
        if billable:
            inner["cost.amount"] = nanos / NANOS_PER_UNIT  # from_nanos(), inline
            total = totals.get(named)  # (nanos, spans) or a Cell read as one: see _tally
            totals[named] = (nanos, 1) if total is None else (total[0] + nanos, total[1] + 1)
        else:
            key = named.not_billable
            totals[key] = totals.get(key, 0) + 1
        if self._queue_records:
            if not entry and binding.nested is not None:
                binding = binding.nested
            self._put_cost(
                (
                    named,
                    binding,
                    nanos,
                    duration_ms,
                    end // 1_000_000,
                    NO_USAGE,
                    None,
                    entry,
                    billable,
                    span._context,
                )
            )
        return True

    def _price_in_place(self, span: Span) -> None:
        """Every other span: Coster.price, then the same writes and accounting."""
        cost = self._coster.price(span)
        _, binding, nanos, duration_ms, _, _, error, _, billable, _ = cost
        inner = span._attributes._dict  # type: ignore[union-attr]
        inner.update(binding.attributes)
        inner["cost.duration_ms"] = duration_ms
        if error is not None:
            inner["cost.error"] = error
        elif billable:
            inner["cost.amount"] = nanos / NANOS_PER_UNIT
        self._account(self._tally.totals(), cost)

    def on_end(self, span: ReadableSpan) -> None:
        """ending_hook: hand the priced span to ``span_processors``; copy: queue it for
        pricing. Never blocks, never raises."""
        if self._hook:
            if self._shutdown:
                self._late += 1
                return
            try:
                try:
                    priced = _SOURCE_KEY in span._attributes._dict  # type: ignore[union-attr]
                except AttributeError:  # not the SDK's BoundedAttributes: a hand-built span
                    priced = _SOURCE_KEY in plain_attributes(span)
                if not priced:
                    span = self._price_now(span)
            except Exception:
                self._pricing_error()
            if self._span_processors:
                self._forward(span)
            return
        try:
            if not self._put_span(span) and self._span_processors:
                self._bypass(span)
        except Exception:
            self._hook_error()

    def _price_now(self, span: ReadableSpan) -> ReadableSpan:
        """A span that did not go through the ending hook (handed to ``on_end`` directly,
        or by a wrapper that does not forward ``_on_ending``): price it here, return an
        enriched copy."""
        cost = self._coster.cost(span)
        self._account(self._tally.totals(), cost)
        return enriched_copy(span, cost.attributes())

    def _account(self, totals: dict[Any, Total], cost: CostFields) -> None:
        """Add one span's cost to ``totals`` (this thread's) and queue it for the record
        exporters if there are any (the ending hook does the same inline)."""
        named, _, nanos, _, _, _, error, _, billable, _ = cost
        if error is None and billable:
            totals[named] = plus(totals[named], (nanos, 1)) if named in totals else (nanos, 1)
        else:
            _count_apart(totals, named, error)
        if self._queue_records:
            self._put_cost(cost)

    def _bypass(self, span: ReadableSpan) -> None:
        """The span queue is full: the user's processors still get the span, unenriched."""
        if self._shutdown:
            return
        with self._shutdown_lock:
            self._bypassed += 1
        self._forward(span)

    def _hook_error(self) -> None:
        self._hook_errors += 1
        if self._hook_errors == 1:
            _logger.exception("otelcost: error in a span hook (counted in stats()['errors'])")

    def _pricing_error(self) -> None:
        # A bug or hostile span data: the span goes on unpriced, the app never sees it.
        self._pricing_errors += 1
        if self._pricing_errors == 1:
            _logger.exception("otelcost: could not price a span (counted as an error)")

    # -- lifecycle ------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Account for, export and forward everything ended before this call; flush the
        exporters and ``span_processors``. False if that did not finish in time."""
        deadline = time.monotonic() + max(timeout_millis, 0) / 1e3
        first = self._spans if self._spans is not None else self._costs
        ok = first.force_flush(_millis_left(deadline))
        for processor in self._span_processors:
            flushed = _call_with_deadline(
                functools.partial(processor.force_flush, int(_millis_left(deadline))), deadline
            )
            # Older SDKs return None from SpanProcessor.force_flush: not a failure.
            ok = flushed is not _FAILED and flushed is not False and ok
        return ok

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Drain and stop the workers, shut down the exporters and ``span_processors``
        (and the PricingCache if this processor built it), all within ``timeout_millis``.

        Spans ended afterwards are counted as dropped. Idempotent.
        """
        with self._shutdown_lock:
            if self._shutdown:
                return
            self._shutdown = True
            self._pricing_in_hook = False
        deadline = time.monotonic() + max(timeout_millis, 0) / 1e3
        if self._spans is not None:
            # The pricing stage's close() shuts the export stage down after its final drain.
            self._spans.shutdown(_millis_left(deadline))
        self._costs.shutdown(_millis_left(deadline))
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
    def pricing_path(self) -> Literal["ending_hook", "copy"]:
        """Where spans are priced: in the SDK's ending hook, or on a worker (copies)."""
        return "ending_hook" if self._hook else "copy"

    @property
    def exporters(self) -> tuple[CostExporter, ...]:
        return self._exporters

    @property
    def span_processors(self) -> tuple[SpanProcessor, ...]:
        return self._span_processors

    def stats(self) -> dict[str, Any]:
        """Counters for operators; exact once the pipeline is idle (e.g. after force_flush).

        - ``pricing_path``: ``ending_hook`` or ``copy`` (see the module docstring);
        - ``compiled``: spans are priced by the compiled planner (ending_hook path, where it
          was built and ``OTELCOST_PURE_PYTHON`` is not set), else in pure Python;
        - ``spans_seen``: spans handed to the processor (all of them, sampled or not);
        - ``spans_priced`` / ``spans_unpriced`` (by reason in ``unpriced``: the text of
          ``cost.error`` before ":", e.g. ``pricing_stale``, ``pricing_not_found``);
        - ``spans_not_billable``: nested spans no key targets (docs/pricing.md): no amount, no
          error, not in the sums; ``genai_duplicates`` of them are other root spans of a
          GenAI call already charged (same ``gen_ai.response.id``);
        - ``spans_dropped``: not priced because the span queue was full (copy path), the
          processor was shut down, or the shutdown deadline passed (by cause in ``dropped``);
        - ``spans_forwarded``: spans handed to ``span_processors`` (copy path: enriched
          copies); ``spans_bypassed``: handed to them unenriched because the queue was full;
        - ``exporters``: per exporter, the spans whose costs it accepted (records, or sums
          covering them) and those whose export failed; ``records_exported``: the least
          any exporter accepted (with no exporter: spans whose sums were collected);
          ``export_failures``: (exporter, batch) pairs that failed or raised;
          ``records_dropped``: span costs lost to a full record queue, shutdown or its
          deadline (record exporters only: sums are kept apart and never dropped);
        - ``operations_folded``: spans whose operation was folded into ``OTHER``;
        - ``queue_size`` / ``record_queue_size``: spans and span costs waiting now;
        - ``errors``: exceptions caught in hooks, pricing or forwarding (all logged).
        """
        costs = self._costs.stats()
        priced = not_billable = folded = 0
        unpriced: dict[str, int] = {}
        for key, total in self._tally.grand_totals().items():
            if type(key) is Named:
                named, count = key, cast(tuple[int, int], total)[1]
                priced += count
            else:
                (named, reason), count = cast(_Apart, key), cast(int, total)
                if reason is None:
                    not_billable += count
                else:
                    unpriced[reason] = unpriced.get(reason, 0) + count
            if named.folded:
                folded += count
        if self._spans is not None:
            spans = self._spans.stats()
            dropped = {
                "queue_full": spans["dropped_queue_full"],
                "after_shutdown": spans["dropped_after_shutdown"],
                "shutdown_timeout": spans["dropped_shutdown_timeout"],
            }
            seen = spans["queued"] + dropped["queue_full"] + dropped["after_shutdown"]
            queue_size, span_errors = spans["queue_size"], spans["handler_errors"]
        else:
            dropped = {"queue_full": 0, "after_shutdown": self._late, "shutdown_timeout": 0}
            seen = (
                priced + sum(unpriced.values()) + not_billable + self._pricing_errors + self._late
            )
            queue_size, span_errors = 0, 0
        per_exporter = {
            name: {"exported": ok, "failed": failed}
            for name, (ok, failed) in dict(self._per_exporter).items()
        }
        return {
            "pricing_path": self.pricing_path,
            "compiled": self._compiled,
            "spans_seen": seen,
            "spans_priced": priced,
            "spans_unpriced": sum(unpriced.values()),
            "unpriced": unpriced,
            "spans_not_billable": not_billable,
            "genai_duplicates": self._coster.calls.duplicates,
            "spans_dropped": sum(dropped.values()),
            "dropped": dropped,
            "spans_forwarded": self._forwarded,
            "spans_bypassed": self._bypassed,
            "records_exported": min(
                (
                    per_exporter.get(name, {"exported": 0})["exported"]
                    for name in self._exporter_names
                ),
                default=self._collected,
            ),
            "export_failures": self._export_failures,
            "records_dropped": costs["dropped_queue_full"]
            + costs["dropped_after_shutdown"]
            + costs["dropped_shutdown_timeout"],
            "exporters": per_exporter,
            "operations_folded": folded,
            "queue_size": queue_size,
            "record_queue_size": costs["queue_size"],
            "errors": self._hook_errors
            + self._pricing_errors
            + self._forward_errors
            + span_errors
            + costs["handler_errors"],
        }

    # -- workers --------------------------------------------------------------------------

    def _price_batch(self, spans: Sequence[ReadableSpan]) -> None:
        """Copy path, pricing worker: one table snapshot for the whole batch."""
        coster = self._coster
        snap = coster.snapshot()
        forward = bool(self._span_processors)
        totals = self._tally.totals()
        account = self._account
        for span in spans:
            try:
                cost = coster.cost(span, snap)
            except Exception:
                self._pricing_error()
                if forward:
                    self._forward(span)
                continue
            account(totals, cost)
            context = span.context
            if forward and context is not None and context.trace_flags.sampled:
                self._forward(enriched_copy(span, cost.attributes()))
                self._forwarded += 1

    def _forward(self, span: ReadableSpan) -> None:
        for processor in self._span_processors:
            try:
                processor.on_end(span)
            except Exception:
                self._forward_error()

    def _forward_error(self) -> None:
        self._forward_errors += 1
        if self._forward_errors == 1:
            _logger.exception("otelcost: a span processor failed in on_end")

    def _collect_sums(self) -> None:
        """Export worker: what every pricing thread's totals grew by since the last call,
        summed per (service, operation, currency), to the CostSumExporters."""
        grown = self._tally.harvest()
        if not grown:
            return
        # Every snapshot of one Coster is in the Coster's currency.
        currency = self._coster.currency
        sums: dict[tuple[str, str, str], list[int]] = {}
        unpriced: dict[tuple[str, str], int] = {}
        spans = 0
        for key, delta in grown.items():
            if type(key) is Named:
                nanos, count = cast(tuple[int, int], delta)
                total = sums.setdefault((key.service, key.operation, currency), [0, 0])
                total[0] += nanos
                total[1] += count
            else:
                (named, reason), count = cast(_Apart, key), cast(int, delta)
                if reason is not None:
                    where = (named.service, reason)
                    unpriced[where] = unpriced.get(where, 0) + count
            spans += count
        self._collected += spans
        if self._sum_exporters and (sums or unpriced):
            batch_sums = CostSums({k: CostSum(*v) for k, v in sums.items()}, unpriced)
            for sum_exporter, name in self._sum_exporters:
                self._export_one(name, spans, sum_exporter.export_sums, batch_sums)

    def _export_batch(self, batch: Sequence[CostFields]) -> None:
        """Export worker: queued span costs to every record exporter, as CostRecords, or as
        the tuples themselves to those of otelcost's exporters that read them
        (``_export_costs``: no record built per span)."""
        costs = batch
        if None in map(_CONTEXT, batch):  # C loops; a context is missing only on odd spans
            costs = [cost for cost in batch if cost[9] is not None]
        records = None
        for exporter, name, export_costs in self._record_exporters:
            if export_costs is not None:
                self._export_one(name, len(batch), export_costs, costs)
                continue
            if records is None:
                records = [cost_record(cost, *span_ids(cost[9])) for cost in costs]
            self._export_one(name, len(batch), exporter.export, records)

    def _export_one(
        self, name: str, count: int, export: Callable[[Any], CostExportResult], data: object
    ) -> bool:
        try:
            ok = export(data) is CostExportResult.SUCCESS
        except Exception:
            ok = False
            _logger.exception("otelcost: %s export raised", name)
        counts = self._per_exporter.setdefault(name, [0, 0])
        if ok:
            counts[0] += count
        else:
            counts[1] += count
            self._export_failures += 1
        return ok

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
    """BatchHandler of the span queue (copy path)."""

    def __init__(self, processor: CostSpanProcessor) -> None:
        self._processor = processor

    def collect(self) -> None:
        pass  # the export stage collects the sums

    def process(self, batch: Sequence[ReadableSpan]) -> None:
        self._processor._price_batch(batch)

    def flush(self, timeout_millis: int) -> bool:
        return self._processor._costs.force_flush(timeout_millis)

    def close(self, timeout_millis: int) -> None:
        self._processor._costs.shutdown(timeout_millis)


class _ExportStage:
    """BatchHandler of the cost queue (records) and collector of the sums."""

    def __init__(self, processor: CostSpanProcessor) -> None:
        self._processor = processor

    def collect(self) -> None:
        self._processor._collect_sums()

    def process(self, batch: Sequence[CostFields]) -> None:
        self._processor._export_batch(batch)

    def flush(self, timeout_millis: int) -> bool:
        return self._processor._flush_exporters(timeout_millis)

    def close(self, timeout_millis: int) -> None:
        self._processor._close_exporters(timeout_millis)


def _choose_path(path: PricingPath) -> bool:
    """True for the ending-hook path."""
    if path == "copy":
        return False
    supported = ending_hook_supported()
    if path == "ending_hook" and not supported:
        raise ValueError(
            "pricing_path='ending_hook' needs an OpenTelemetry SDK that calls "
            "SpanProcessor._on_ending (opentelemetry-sdk >= 1.40)"
        )
    if path not in ("auto", "ending_hook"):
        raise ValueError(f"pricing_path must be 'auto', 'ending_hook' or 'copy', got {path!r}")
    return supported


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


_Apart: TypeAlias = tuple[Named, str | None]
"""A tally key of spans outside the sums: (Named, reason of the error; None: not billable)."""


def _count_apart(totals: dict[Any, Total], named: Named, error: str | None) -> None:
    """Count a span that adds nothing to the sums: unpriced (by the reason of its error) or
    not billable (reason None)."""
    key = (named, None if error is None else error.split(":", 1)[0])
    totals[key] = cast(int, totals.get(key, 0)) + 1


def _empty(method: Callable[..., object] | None) -> bool:
    """Whether ``method`` is a Python function or method whose body does nothing (only
    ``pass``, a docstring or ``return None``): calling it can be skipped."""
    code = getattr(getattr(method, "__func__", method), "__code__", None)
    if not isinstance(code, CodeType) or code.co_flags & _GENERATOR_FLAGS:
        return False
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("RESUME", "NOP", "RETURN_VALUE") or (
            instruction.opname in ("LOAD_CONST", "RETURN_CONST") and instruction.argval is None
        ):
            continue
        return False
    return True


_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _export_costs_of(exporter: CostExporter) -> Callable[[Sequence[CostFields]], Any] | None:
    """The exporter's ``_export_costs`` (otelcost's own exporters: export the per-span cost
    tuples without a CostRecord each), unless a subclass overrides ``export``, which then
    must see every record."""
    cls = type(exporter)
    owner = next((c for c in cls.__mro__ if "_export_costs" in vars(c)), None)
    if owner is None or cls.export is not owner.export:  # type: ignore[attr-defined]
        return None
    export_costs: Callable[[Sequence[CostFields]], Any] = exporter._export_costs  # type: ignore[attr-defined]
    return export_costs


def _names(exporters: tuple[CostExporter, ...]) -> tuple[str, ...]:
    """Class names, numbered where a class occurs more than once (stats keys)."""
    names = [type(e).__name__ for e in exporters]
    return tuple(
        name if names.count(name) == 1 else f"{name}#{names[:i].count(name)}"
        for i, name in enumerate(names)
    )


def _millis_left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0) * 1e3


_FAILED: Final = object()


def _call_with_deadline(fn: Callable[[], object], deadline: float) -> object:
    """Run ``fn`` on a helper thread and wait for it until ``deadline``.

    SDK span processors do not all honour a timeout (BatchSpanProcessor.force_flush ignores
    it), so a stuck user exporter must not hold our caller past its deadline. Returns fn's
    result, or ``_FAILED`` on timeout or error. Runs inline where threads cannot start (at
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
    return result[0] if result else _FAILED
