"""``otelcost.install()``: cost accounting for a service in one line."""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from otelcost import environment
from otelcost.costing.processor import REGION_ENV, CostSpanProcessor, PricingLike, prewarm
from otelcost.exporters.base import CostExporter
from otelcost.exporters.memory import InMemoryCostExporter
from otelcost.money import DEFAULT_CURRENCY
from otelcost.pricing import PricingCache

if TYPE_CHECKING:
    from otelcost.budget.model import BudgetsLike

__all__ = ["CURRENCY_ENV", "PRICING_ENV", "REGION_ENV", "default_exporters", "install"]

_logger = logging.getLogger(__name__)

PRICING_ENV: Final = environment.PRICING
CURRENCY_ENV: Final = environment.CURRENCY

_lock = threading.Lock()
# Set once the startup line went to stderr: at most once per process (see _announce).
_said_on_stderr = threading.Event()
# One CostSpanProcessor per provider: a second install() must not count spans twice.
_installed: weakref.WeakKeyDictionary[TracerProvider, CostSpanProcessor] = (
    weakref.WeakKeyDictionary()
)


def default_exporters(
    budgets: BudgetsLike = None, *, environ: environment.Environ | None = None
) -> list[CostExporter]:
    """The cost exporters ``install(exporters=None)`` uses, from its arguments and the env.

    - the budget exporter when there are budgets (``budgets``, else the file named by
      ``OTELCOST_BUDGETS``): Redis at ``OTELCOST_REDIS_URL``, else the embedded store;
    - a KafkaCostExporter when ``OTELCOST_KAFKA_BOOTSTRAP`` is set (topic, encoding and a
      client properties file from ``OTELCOST_KAFKA_TOPIC``, ``_ENCODING``, ``_CONFIG``);
    - when nothing else is configured, an ``InMemoryCostExporter`` (the embedded default:
      the latest records and exact running totals, bounded).

    ``environ``: where the variables are read (default ``os.environ``).
    """
    exporters: list[CostExporter] = []
    budget = _budget_exporter(budgets, environ)
    if budget is not None:
        exporters.append(budget)
    if environment.read(environment.KAFKA_BOOTSTRAP, environ) is not None:
        # Kafka's modules (and the client library) load only when Kafka is configured.
        from otelcost.exporters.kafka import kafka_exporter_from_env

        kafka = kafka_exporter_from_env(environ)
        if kafka is not None:
            exporters.append(kafka)
    if not exporters:
        exporters.append(InMemoryCostExporter())
    return exporters


def _budget_exporter(
    budgets: BudgetsLike, environ: environment.Environ | None
) -> CostExporter | None:
    """``budget_exporter(budgets)``, its modules imported only when there can be budgets
    (argument or ``OTELCOST_BUDGETS``): without, it returns None."""
    if budgets is None and environment.read(environment.BUDGETS, environ) is None:
        return None
    from otelcost.exporters.budget import budget_exporter

    return budget_exporter(budgets, environ=environ)


def install(
    pricing: PricingLike | None = None,
    *,
    exporters: Sequence[CostExporter] | None = None,
    budgets: BudgetsLike = None,
    span_exporter: SpanExporter | None = None,
    tracer_provider: TracerProvider | None = None,
    region: str | None = None,
    currency: str | None = None,
    span_processors: Sequence[SpanProcessor] = (),
    environ: environment.Environ | None = None,
) -> CostSpanProcessor:
    """Price every span of this process and return the CostSpanProcessor doing it.

    Args:
        pricing: a PricingCache, pricing document (dict), JSON path or http(s) URL;
            default ``OTELCOST_PRICING``. The table is loaded now (a failure is logged and
            spans get ``cost.error`` until a background refresh succeeds) and refreshed in
            the background.
        exporters: CostExporters for the records; default ``default_exporters(budgets)``.
            With explicit exporters, budgets (argument or ``OTELCOST_BUDGETS``) still add
            their budget exporter.
        budgets: budgets for the budget exporter (anything ``otelcost.budget.load_budgets``
            accepts); default the file in ``OTELCOST_BUDGETS``.
        span_exporter: optional: a SpanExporter (OTLP, console...) to receive every sampled
            span with the ``cost.*`` attributes, through a BatchSpanProcessor that the
            CostSpanProcessor feeds (do not also register it on the provider). Not needed
            to enrich: where the SDK has the ending hook (>= 1.40) spans are priced in place,
            so the exporters already registered on the provider receive ``cost.*`` too.
        tracer_provider: default: the global SDK TracerProvider if one is set, else a new
            one (resource from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``) that
            becomes the global provider.
        region: default ``OTELCOST_REGION``, else the pricing table's region.
        currency: the currency costs are accounted in; default ``OTELCOST_CURRENCY``, else
            USD. A table in another currency leaves spans unpriced (``currency_mismatch``).
        span_processors: more SDK span processors fed with the priced spans by the
            CostSpanProcessor (after the one built for ``span_exporter``); they must not be
            registered on the provider as well.
        environ: where the ``OTELCOST_*`` variables are read, once, now (default
            ``os.environ``; see ``otelcost.environment``).

    Calling install() again for the same provider returns the processor already installed
    and changes nothing (the new arguments are ignored, with a warning), so spans are never
    counted twice. After that processor was shut down, a new one is installed.

    Raises ValueError when no pricing is given and ``OTELCOST_PRICING`` is unset, and
    TypeError when the tracer provider is not the OpenTelemetry SDK's.
    """
    with _lock:
        provider = _provider(tracer_provider)
        existing = _installed.get(provider)
        if existing is not None and not existing.is_shutdown:
            given = {
                name
                for name, value in (
                    ("pricing", pricing),
                    ("exporters", exporters),
                    ("budgets", budgets),
                    ("span_exporter", span_exporter),
                    ("region", region),
                    ("currency", currency),
                    ("span_processors", span_processors or None),
                )
                if value is not None
            }
            if given:
                _logger.warning(
                    "otelcost.install() was already called for this TracerProvider; returning "
                    "the installed CostSpanProcessor and ignoring %s",
                    ", ".join(sorted(given)),
                )
            return existing
        processor = _build(
            pricing,
            exporters,
            budgets,
            span_exporter,
            span_processors,
            region=region,
            currency=currency,
            environ=environ,
        )
        provider.add_span_processor(processor)
        _installed[provider] = processor
        if tracer_provider is None and provider is not trace.get_tracer_provider():
            trace.set_tracer_provider(provider)
        _announce(processor, quiet=environment.flag(environment.QUIET, environ))
        return processor


def _summary(processor: CostSpanProcessor) -> str:
    """One line: the table in use, where spans are priced, and where the costs go."""
    cache = processor.pricing
    stats = cache.stats()
    if stats["last_sync"] is None:
        table = (
            f"no pricing table loaded yet from {cache.source!r} (spans get cost.error "
            "until a refresh succeeds)"
        )
    else:
        version = "without a version" if stats["version"] is None else repr(stats["version"])
        table = (
            f"pricing table {version} from {cache.source!r} "
            f"({stats['entries']} prices, {cache.currency or DEFAULT_CURRENCY})"
        )
    where = (
        "in the SDK's ending hook"
        if processor.pricing_path == "ending_hook"
        else "on a worker, enriched copies to the span processors"
    )
    names = ", ".join(type(e).__name__ for e in processor.exporters) or "none"
    return f"otelcost: {table}; pricing spans {where}; cost exporters: {names}"


def _announce(processor: CostSpanProcessor, *, quiet: bool) -> None:
    """Say once that otelcost is working, where the user will see it.

    The line is an INFO record of this module's logger. An application that configured
    logging gets it there, filtered by its own levels, and nothing else. One that configured
    nothing would never see it (Python's last-resort handler shows WARNING and above only),
    so then the line also goes to stderr, once per process, unless ``OTELCOST_QUIET`` is set.
    """
    line = _summary(processor)
    _logger.info("%s", line)
    if quiet or _said_on_stderr.is_set() or _logger.hasHandlers() or sys.stderr is None:
        return
    _said_on_stderr.set()
    print(line, file=sys.stderr, flush=True)


def _provider(tracer_provider: TracerProvider | None) -> TracerProvider:
    if tracer_provider is not None:
        if not isinstance(tracer_provider, TracerProvider):
            raise TypeError(
                "otelcost needs the OpenTelemetry SDK's TracerProvider, got "
                f"{type(tracer_provider).__name__}"
            )
        return tracer_provider
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    if isinstance(current, trace.ProxyTracerProvider):  # nothing registered yet
        return TracerProvider()
    raise TypeError(
        f"the global tracer provider is a {type(current).__name__}, not the OpenTelemetry "
        "SDK's TracerProvider; pass tracer_provider= or let otelcost create one"
    )


def _build(
    pricing: PricingLike | None,
    exporters: Sequence[CostExporter] | None,
    budgets: BudgetsLike,
    span_exporter: SpanExporter | None,
    span_processors: Sequence[SpanProcessor],
    *,
    region: str | None,
    currency: str | None,
    environ: environment.Environ | None,
) -> CostSpanProcessor:
    if pricing is None:
        pricing = environment.read(PRICING_ENV, environ)
        if pricing is None:
            raise ValueError(f"no pricing: pass pricing= or set {PRICING_ENV} (a path or URL)")
    if isinstance(pricing, PricingCache):
        prewarm(pricing)
    if exporters is None:
        chosen = default_exporters(budgets, environ=environ)
    else:
        chosen = list(exporters)
        budget = _budget_exporter(budgets, environ)
        if budget is not None:
            chosen.append(budget)
    downstream: list[SpanProcessor] = []
    if span_exporter is not None:
        downstream.append(BatchSpanProcessor(span_exporter))
    downstream.extend(span_processors)
    return CostSpanProcessor(
        pricing,
        chosen,
        region=region,
        currency=currency,
        span_processors=downstream,
        environ=environ,
    )
