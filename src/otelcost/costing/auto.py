"""Zero-code setup: ``OTELCOST_PRICING=prices.json opentelemetry-instrument python app.py``.

``opentelemetry-instrument`` runs, at interpreter start: the distro (``opentelemetry-distro``
sets the default exporters), then one configurator (which builds the SDK TracerProvider
with a BatchSpanProcessor per ``OTEL_TRACES_EXPORTER`` entry and makes it global), then the
instrumentors, then every ``opentelemetry_post_instrument`` entry point. otelcost registers
:func:`post_instrument` there, so it runs once the provider exists and changes none of the
choices made before it:

1. Without ``OTELCOST_PRICING`` it does nothing: installing the package changes nothing.
2. It calls :func:`otelcost.install`, which reads ``OTELCOST_*`` from the environment and
   adds a CostSpanProcessor to the provider. Where the SDK has the ending hook (>= 1.40)
   that is all: spans are priced in place before any processor's ``on_end``, so the
   processors the configurator registered export them with ``cost.*`` as they are.
3. Only on older SDKs (the copy path) it first takes the configurator's span processors
   off the provider (private SDK fields; nothing else touches them) and hands them to the
   CostSpanProcessor, which feeds them every sampled span as an enriched copy.

It never stops the application from starting: any failure is logged and the processors it
took are put back, so traces flow exactly as they would without otelcost.
"""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from otelcost import environment
from otelcost.costing._ending import ending_hook_supported
from otelcost.costing.install import PRICING_ENV, install

__all__ = ["post_instrument"]

_logger = logging.getLogger(__name__)


def post_instrument() -> None:
    """The ``opentelemetry_post_instrument`` entry point: install otelcost from the env."""
    if environment.read(PRICING_ENV) is None:
        _logger.debug("otelcost: %s is not set; zero-code setup skipped", PRICING_ENV)
        return
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        # No SDK configurator ran (or another SDK is in use): install() creates a provider.
        _install_or_log(None, ())
        return
    if ending_hook_supported():
        _install_or_log(provider, ())
        return
    adopted = _take_span_processors(provider)
    if not _install_or_log(provider, adopted):
        _give_back(provider, adopted)


def _install_or_log(provider: TracerProvider | None, adopted: tuple[SpanProcessor, ...]) -> bool:
    try:
        processor = install(tracer_provider=provider, span_processors=adopted)
    except Exception:
        _logger.exception(
            "otelcost: zero-code setup failed; the application runs without cost accounting"
        )
        return False
    # install() itself says which table, pricing path and exporters are in use.
    _logger.debug("otelcost: zero-code setup installed %r", processor)
    return True


def _take_span_processors(provider: TracerProvider) -> tuple[SpanProcessor, ...]:
    """Copy path: detach the provider's span processors so they only see enriched spans.

    The SDK has no public way to remove a span processor, so this uses the layout of
    ``TracerProvider`` (``_active_span_processor._span_processors``, stable since SDK 1.0)
    and does nothing if that layout is not found: spans are then still priced, but the
    user's exporters receive them without ``cost.*`` attributes, which is logged.
    """
    multi = getattr(provider, "_active_span_processor", None)
    current = getattr(multi, "_span_processors", None)
    lock = getattr(multi, "_lock", None)
    if not isinstance(current, tuple) or lock is None:
        _logger.warning(
            "otelcost: cannot re-route this SDK's span processors; exported spans will lack "
            "cost.* attributes (costs are still recorded)"
        )
        return ()
    with lock:
        taken: tuple[SpanProcessor, ...] = multi._span_processors  # type: ignore[union-attr]
        multi._span_processors = ()  # type: ignore[union-attr]
    return taken


def _give_back(provider: TracerProvider, processors: tuple[SpanProcessor, ...]) -> None:
    for processor in processors:
        provider.add_span_processor(processor)
