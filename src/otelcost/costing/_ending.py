"""Whether this OpenTelemetry SDK lets a processor price spans in place as they end.

SDK 1.40 added ``SpanProcessor._on_ending``: ``Span.end`` sets the end time, then calls
every processor's ``_on_ending(span)`` on the ending thread, then every ``on_end``. The
span's attributes are already closed to ``set_attribute`` at that point, so otelcost
writes into the dict inside the span's BoundedAttributes. Both are private SDK details,
so instead of trusting a version number this module ends one probe span on a private
provider, once per process, and checks the whole mechanism: the hook is called, and what
it writes is in the attributes ``on_end`` receives.
"""

from __future__ import annotations

import functools
import logging

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

__all__ = ["ending_hook_supported"]

_logger = logging.getLogger(__name__)
_PROBE_KEY = "otelcost.probe"


class _Probe(SpanProcessor):
    def __init__(self) -> None:
        self.seen: object = None

    def _on_ending(self, span: Span) -> None:
        inner = getattr(getattr(span, "_attributes", None), "_dict", None)
        if type(inner) is dict:
            inner[_PROBE_KEY] = True

    def on_end(self, span: ReadableSpan) -> None:
        self.seen = (span.attributes or {}).get(_PROBE_KEY)


@functools.cache
def ending_hook_supported() -> bool:
    """True when ``_on_ending`` is called and can write attributes that ``on_end`` sees."""
    probe = _Probe()
    try:
        provider = TracerProvider(
            sampler=ALWAYS_ON, resource=Resource.get_empty(), shutdown_on_exit=False
        )
        provider.add_span_processor(probe)
        provider.get_tracer("otelcost.probe").start_span("probe").end()
    except Exception:  # an SDK we do not understand: the copy path works everywhere
        _logger.debug("otelcost: ending-hook probe failed", exc_info=True)
        return False
    return probe.seen is True
