"""What the costing tests share: the pricing paths the installed OpenTelemetry SDK offers."""

from __future__ import annotations

from otelcost import CostSpanProcessor, PricingTable


def _sdk_has_ending_hook() -> bool:
    """Whether this SDK prices in the span-ending hook: the path ``auto`` picks."""
    table = PricingTable.parse({"version": "v", "prices": {"*:*": {"per_request": 0.0}}})
    processor = CostSpanProcessor(table)
    try:
        return processor.pricing_path == "ending_hook"
    finally:
        processor.shutdown()


HAS_ENDING_HOOK = _sdk_has_ending_hook()
# Both pricing paths where this SDK has the ending hook; the copy path alone on older SDKs
# (.ci/run runs the costing tests against the oldest supported SDK too).
PATHS = ["ending_hook", "copy"] if HAS_ENDING_HOOK else ["copy"]
