"""MetricsCostExporter: costs as OpenTelemetry metrics (Prometheus, Grafana) without Kafka.

Precision: the OTel counter API takes floats, and a float running sum drifts once millions
of tiny amounts are added to a large total. So this exporter keeps every total as an exact
integer of nano-units and reports it through *observable* (asynchronous) counters: each
collection observes ``from_nanos(total)``, the float nearest to the exact cumulative
amount, so the exported value never accumulates rounding error however long it runs.

Cardinality is bounded here as well as upstream: at most ``max_series`` distinct attribute
sets per counter. Past that, a new (service, operation) folds into (service, "OTHER") when
that series already exists, else into ("OTHER", "OTHER"); the number of folded spans is
in ``stats()["folded"]``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from otelcost._fork import in_forked_child
from otelcost._version import __version__
from otelcost.budget.store import BudgetStore
from otelcost.exporters._budget_poll import BudgetPoller
from otelcost.exporters.base import CostExportResult, CostSumExporter, CostSums
from otelcost.money import from_nanos

__all__ = [
    "BUDGET_LIMIT",
    "BUDGET_SPEND",
    "BUDGET_THROTTLED",
    "BUDGET_UTILIZATION",
    "COST",
    "SPANS_PRICED",
    "SPANS_UNPRICED",
    "MetricsCostExporter",
]


COST: Final = "otelcost.cost"
SPANS_PRICED: Final = "otelcost.spans.priced"
SPANS_UNPRICED: Final = "otelcost.spans.unpriced"
BUDGET_UTILIZATION: Final = "otelcost.budget.utilization"
BUDGET_SPEND: Final = "otelcost.budget.spend"
BUDGET_LIMIT: Final = "otelcost.budget.limit"
BUDGET_THROTTLED: Final = "otelcost.budget.throttled"

OTHER: Final = "OTHER"
CURRENCY_MISMATCH: Final = "currency_mismatch"
_MAX_REASON = 64

_Key = tuple[str, str]


class _Totals:
    """Integer totals per two-part attribute key, bounded to ``limit`` keys."""

    __slots__ = ("folded", "limit", "values")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.values: dict[_Key, int] = {}
        self.folded = 0

    def add(self, key: _Key, amount: int, weight: int, folds: tuple[_Key, _Key]) -> None:
        """Add ``amount`` under ``key``; a new key past the limit goes to the first of
        ``folds`` that exists, else the second (so at most ``limit + 1`` keys)."""
        values = self.values
        if key not in values and len(values) >= self.limit:
            self.folded += weight
            key = folds[0] if folds[0] in values else folds[1]
        values[key] = values.get(key, 0) + amount


class MetricsCostExporter(CostSumExporter):
    """Records costs through the OpenTelemetry metrics API.

    Instruments (meter ``otelcost``):

    - ``otelcost.cost`` (observable counter, unit = ``currency``; ``service``, ``operation``):
      cumulative cost of priced spans. Prometheus: ``otelcost_cost_USD_total``.
    - ``otelcost.spans.priced`` (observable counter, ``{span}``; ``service``).
    - ``otelcost.spans.unpriced`` (observable counter, ``{span}``; ``service``, ``reason``):
      ``reason`` is the record's error up to the first ``:`` (e.g. ``pricing_stale``), or
      ``currency_mismatch`` for a record priced in another currency than ``currency``.
    - with a ``budget_store``: ``otelcost.budget.utilization`` (gauge, ratio 0..1 of rolling
      spend to limit, unit ``1``; ``service``, ``period``), ``otelcost.budget.spend`` and
      ``otelcost.budget.limit`` (gauges in ``currency``), ``otelcost.budget.throttled``
      (gauge, 1 or 0; ``service``). Grafana's ``budget_utilization_pct`` is
      ``100 * otelcost_budget_utilization``.

    Budget gauges read ``budget_store.services()`` and ``status(service)`` on a helper
    thread at most every ``budget_refresh_interval`` seconds; a collection waits at most
    ``budget_timeout`` seconds for it and otherwise reports the previous values. After
    ``budget_stale_after`` seconds without a successful read it reports nothing rather than
    old numbers. Store errors are counted (``stats()["budget_errors"]``), never raised.

    ``export`` never raises. Records exported after ``shutdown`` are dropped and counted.
    A forked child starts from zero totals, so parent and child never report the same cost.
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        budget_store: BudgetStore | None = None,
        currency: str = "USD",
        max_series: int = 10_000,
        budget_refresh_interval: float = 5.0,
        budget_timeout: float = 0.5,
        budget_stale_after: float = 300.0,
    ) -> None:
        if max_series < 2:
            raise ValueError("max_series must be >= 2 (room for the OTHER series)")
        self._currency = currency
        self._max_series = max_series
        self._lock = threading.Lock()
        self._reset()
        self._shutdown = False
        self._budgets = (
            BudgetPoller(
                budget_store,
                refresh_interval=budget_refresh_interval,
                timeout=budget_timeout,
                stale_after=budget_stale_after,
            )
            if budget_store is not None
            else None
        )

        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter("otelcost", __version__)
        meter.create_observable_counter(
            COST,
            callbacks=[self._observe_cost],
            unit=currency,
            description="Cost of priced spans, by service and operation.",
        )
        meter.create_observable_counter(
            SPANS_PRICED,
            callbacks=[self._observe_priced],
            unit="{span}",
            description="Spans that were priced.",
        )
        meter.create_observable_counter(
            SPANS_UNPRICED,
            callbacks=[self._observe_unpriced],
            unit="{span}",
            description="Spans left unpriced (cost.error set), by reason.",
        )
        if self._budgets is not None:
            _register_budget_gauges(meter, self._budgets, currency)
        # The child inherits the parent's totals; reporting them again would double count.
        in_forked_child(self, _reinit)

    def _reset(self) -> None:
        self._cost = _Totals(self._max_series)
        self._priced = _Totals(self._max_series)
        self._unpriced = _Totals(self._max_series)
        self._spans = 0
        self._mismatch = 0
        self._dropped = 0

    def export_sums(self, sums: CostSums) -> CostExportResult:
        """Add a batch's deltas to the totals (O(series in the batch), no I/O)."""
        with self._lock:
            spans = sum(total.spans for total in sums.costs.values())
            spans += sum(sums.unpriced.values())
            if self._shutdown:
                self._dropped += spans
                return CostExportResult.FAILURE
            self._spans += spans
            for (service, operation, currency), (nanos, count) in sums.costs.items():
                if currency != self._currency:
                    self._mismatch += count
                    self._add_unpriced(service, CURRENCY_MISMATCH, count)
                else:
                    folds = ((service, OTHER), (OTHER, OTHER))
                    self._cost.add((service, operation), nanos, count, folds)
                    self._priced.add((service, ""), count, count, ((OTHER, ""), (OTHER, "")))
            for (service, reason), count in sums.unpriced.items():
                self._add_unpriced(service, reason[:_MAX_REASON], count)
        return CostExportResult.SUCCESS

    def _add_unpriced(self, service: str, reason: str, count: int) -> None:
        self._unpriced.add((service, reason), count, count, ((service, OTHER), (OTHER, OTHER)))

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Stop accepting records; totals stay observable until the MeterProvider shuts down."""
        with self._lock:
            self._shutdown = True

    def stats(self) -> Mapping[str, int | float]:
        """spans (added, priced or not), folded (spans folded into OTHER series),
        currency_mismatch, dropped (spans exported after shutdown), series, budget_errors."""
        with self._lock:
            folded = self._cost.folded + self._priced.folded + self._unpriced.folded
            out: dict[str, int | float] = {
                "spans": self._spans,
                "folded": folded,
                "currency_mismatch": self._mismatch,
                "dropped": self._dropped,
                "series": len(self._cost.values) + len(self._unpriced.values),
            }
        out["budget_errors"] = self._budgets.errors if self._budgets is not None else 0
        return out

    # Callbacks run on the metric reader's thread: they only copy under the lock.

    def _observe_cost(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._cost.values.items())
        return [
            Observation(from_nanos(nanos), {"service": svc, "operation": op})
            for (svc, op), nanos in items
        ]

    def _observe_priced(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._priced.values.items())
        return [Observation(n, {"service": svc}) for (svc, _), n in items]

    def _observe_unpriced(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._unpriced.values.items())
        return [Observation(n, {"service": svc, "reason": why}) for (svc, why), n in items]


def _register_budget_gauges(meter: Meter, poller: BudgetPoller, currency: str) -> None:
    def per_budget(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(getattr(p, field), {"service": p.service, "period": p.period})
                for p in poller.points()
            ]

        return observe

    def throttled(options: CallbackOptions) -> Iterable[Observation]:
        seen: dict[str, bool] = {}
        for p in poller.points():
            seen[p.service] = seen.get(p.service, False) or p.throttled
        return [Observation(int(t), {"service": svc}) for svc, t in seen.items()]

    meter.create_observable_gauge(
        BUDGET_UTILIZATION,
        callbacks=[per_budget("utilization")],
        unit="1",
        description="Rolling spend / limit per budget (1.0 = limit reached).",
    )
    meter.create_observable_gauge(
        BUDGET_SPEND,
        callbacks=[per_budget("spend")],
        unit=currency,
        description="Rolling spend per budget period.",
    )
    meter.create_observable_gauge(
        BUDGET_LIMIT,
        callbacks=[per_budget("limit")],
        unit=currency,
        description="Budget limit per period.",
    )
    meter.create_observable_gauge(
        BUDGET_THROTTLED,
        callbacks=[throttled],
        unit="1",
        description="1 while the service's throttle flag is set, else 0.",
    )


def _reinit(exporter: MetricsCostExporter) -> None:
    exporter._lock = threading.Lock()
    exporter._reset()
