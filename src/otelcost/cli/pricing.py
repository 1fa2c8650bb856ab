"""``otelcost pricing check SOURCE``: validate a pricing table and summarise it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from otelcost import _json
from otelcost.errors import PricingError
from otelcost.pricing import PricingTable
from otelcost.pricing.sources import DEFAULT_MAX_BYTES, as_source, parse_bytes

__all__ = ["register", "run"]

_STDIN = "-"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``pricing`` and its ``check`` subcommand."""
    pricing = subparsers.add_parser(
        "pricing",
        help="inspect pricing tables",
        description=(
            "Inspect pricing tables: the document form {version, currency, region, prices} "
            'or the flat form {"service:operation": {"per_ms": ...}}.'
        ),
    )
    actions = pricing.add_subparsers(dest="pricing_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate a pricing table and print its entry count and metadata",
        description=(
            "Validate a pricing table exactly as PricingCache would load it and print the "
            "number of entries, currency, region and version. Exits 1 with the offending key "
            "when the table is invalid."
        ),
    )
    check.add_argument(
        "source",
        metavar="FILE",
        help="a JSON file, '-' for standard input, or an http(s) URL",
    )
    check.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check ``args.source``; 0 when valid, 1 (one line on stderr) when not."""
    try:
        table = _load(args.source)
    except (PricingError, ValueError) as exc:
        print(f"otelcost pricing check: {exc}", file=sys.stderr)
        return 1
    summary = {
        "entries": len(table),
        "currency": table.currency,
        "region": table.region,
        "version": table.version,
    }
    if args.json:
        print(_json.dumps(summary).decode())
    else:
        for name, value in summary.items():
            print(f"{name + ':':<9} {'-' if value is None else value}")
    return 0


def _load(source: str) -> PricingTable:
    if source == _STDIN:
        data = sys.stdin.buffer.read(DEFAULT_MAX_BYTES + 1)
        if len(data) > DEFAULT_MAX_BYTES:
            raise PricingError(f"<stdin>: larger than the {DEFAULT_MAX_BYTES}-byte limit")
        return parse_bytes(data, "<stdin>")
    return as_source(source).fetch()
