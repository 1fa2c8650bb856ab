"""enriched_copy: cost.* added, everything else (dropped counts included) exactly as before."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, TraceFlags

from otelcost import CostSpanProcessor
from otelcost.costing.enrich import enriched_copy

COST = {"cost.amount": 1.5e-6, "cost.currency": "USD", "cost.source": "otelcost"}


def limited_span() -> ReadableSpan:
    """An ended span over its attribute (2), event (1) and link (1) limits."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "shop"}),
        span_limits=SpanLimits(max_span_attributes=2, max_events=1, max_links=1),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    links = [
        Link(SpanContext(1, n, is_remote=True, trace_flags=TraceFlags(1)), {"n": n}) for n in (1, 2)
    ]
    span = provider.get_tracer("t").start_span("job", links=links)
    for n in range(4):
        span.set_attribute(f"a{n}", n)
    for n in range(3):
        span.add_event(f"e{n}")
    span.end()
    (ended,) = exporter.get_finished_spans()
    return ended


class Subclass(ReadableSpan):
    """A ReadableSpan that is not exactly the SDK's class: enrichment uses the public API."""


def as_subclass(span: ReadableSpan) -> ReadableSpan:
    return Subclass(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span._attributes,  # the BoundedAttributes with its dropped count
        events=span._events,
        links=span._links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


@pytest.mark.parametrize("variant", [lambda s: s, as_subclass], ids=["sdk", "subclass"])
def test_dropped_counts_survive_and_cost_attributes_never_evict(variant: Any) -> None:
    original = variant(limited_span())
    assert (original.dropped_attributes, original.dropped_events, original.dropped_links) == (
        2,
        2,
        1,
    )
    copy = enriched_copy(original, COST)
    assert (copy.dropped_attributes, copy.dropped_events, copy.dropped_links) == (2, 2, 1)
    assert dict(copy.attributes or {}) == {"a2": 2, "a3": 3, **COST}
    assert dict(original.attributes or {}) == {"a2": 2, "a3": 3}  # the original is untouched
    for name in ("name", "context", "parent", "resource", "kind", "status", "start_time"):
        assert getattr(copy, name) == getattr(original, name)
    assert [e.name for e in copy.events] == ["e2"]
    assert [link.context.span_id for link in copy.links] == [2]
    assert copy.end_time == original.end_time
    assert copy.instrumentation_scope == original.instrumentation_scope


def test_the_otlp_encoding_reports_the_originals_dropped_counts() -> None:
    original = limited_span()
    (resource_spans,) = encode_spans([enriched_copy(original, COST)]).resource_spans
    (proto,) = resource_spans.scope_spans[0].spans
    assert proto.dropped_attributes_count == 2
    assert proto.dropped_events_count == 2
    assert proto.dropped_links_count == 1
    encoded = {a.key for a in proto.attributes}
    assert encoded == {"a2", "a3", *COST}


def test_a_span_without_drops_gets_a_plain_copy() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("job", attributes={"k": "v"}):
        pass
    (span,) = exporter.get_finished_spans()
    copy = enriched_copy(span, COST)
    assert (copy.dropped_attributes, copy.dropped_events, copy.dropped_links) == (0, 0, 0)
    assert dict(copy.attributes or {}) == {"k": "v", **COST}
    assert '"cost.amount": 1.5e-06' in copy.to_json()


def test_the_processor_hands_limited_spans_on_with_their_counts() -> None:
    spans = InMemorySpanExporter()
    processor = CostSpanProcessor(
        {"prices": {"*:*": {"per_request": 1e-6}}},
        span_processors=[SimpleSpanProcessor(spans)],
    )
    provider = TracerProvider(
        span_limits=SpanLimits(max_span_attributes=2, max_events=1), shutdown_on_exit=False
    )
    provider.add_span_processor(processor)
    try:
        span = provider.get_tracer("t").start_span("job")
        for n in range(5):
            span.set_attribute(f"a{n}", n)
        span.add_event("e0")
        span.add_event("e1")
        span.end()
        assert processor.force_flush(10_000)
        (exported,) = spans.get_finished_spans()
        assert exported.dropped_attributes == 3
        assert exported.dropped_events == 1
        assert exported.attributes is not None
        assert exported.attributes["cost.amount"] == 1e-6
        assert {"a3", "a4"} <= set(exported.attributes)
    finally:
        processor.shutdown()
