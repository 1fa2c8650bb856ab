"""``otelcost pricing check SOURCE``: validate a pricing table and summarise it
(``otelcost pricing explain``: :mod:`otelcost.cli._explain`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from otelcost import _json
from otelcost.cli import _explain, _import
from otelcost.errors import PricingError
from otelcost.money import DEFAULT_CURRENCY
from otelcost.pricing import Price, PricingTable
from otelcost.pricing.sources import DEFAULT_MAX_BYTES, as_source, parse_bytes
from otelcost.pricing.table import ALWAYS, format_instant

__all__ = ["register", "run"]

_STDIN = "-"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``pricing`` and its ``check``, ``import`` and ``explain`` subcommands."""
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
        help="validate a pricing table and print its entry count, metadata and schedules",
        description=(
            "Validate a pricing table exactly as PricingCache would load it and print the "
            "number of entries, currency, region, version and the schedule of every dated "
            "entry. Exits 1 with the offending key when the table is invalid (with --json, "
            'as {"valid": false, "error": ...}).'
        ),
    )
    check.add_argument(
        "source",
        metavar="FILE",
        help="a JSON file, '-' for standard input, or an http(s) URL",
    )
    check.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    check.set_defaults(func=run)
    _import.register(actions)
    _explain.register(actions, _load)


def run(args: argparse.Namespace) -> int:
    """Check ``args.source``; 0 when valid, 1 (one line on stderr, or JSON) when not."""
    try:
        table = _load(args.source)
    except (PricingError, ValueError) as exc:
        if args.json:
            print(_json.dumps({"valid": False, "error": str(exc)}).decode())
        else:
            print(f"otelcost pricing check: {exc}", file=sys.stderr)
        return 1
    dated = [(match.key, match.schedule) for match in table if match.schedule is not None]
    if args.json:
        summary = {
            "valid": True,
            "entries": len(table),
            "currency": table.currency or DEFAULT_CURRENCY,
            "currency_declared": table.currency is not None,
            "region": table.region,
            "version": table.version,
            "schedules": {
                key: [
                    {"from": None if start == ALWAYS else format_instant(start), **_rates(price)}
                    for start, price in zip(schedule.starts, schedule.prices, strict=True)
                ]
                for key, schedule in dated
            },
        }
        print(_json.dumps(summary).decode())
        return 0
    currency = table.currency or f"{DEFAULT_CURRENCY} (not declared: taken as {DEFAULT_CURRENCY})"
    lines = {
        "entries": len(table),
        "currency": currency,
        "region": table.region,
        "version": table.version,
    }
    for name, value in lines.items():
        print(f"{name + ':':<9} {'-' if value is None else value}")
    for key, schedule in dated:
        print(f"dated:    {key}")
        for start, price in zip(schedule.starts, schedule.prices, strict=True):
            shown = "the start" if start == ALWAYS else format_instant(start)
            print(f"  from {shown:<24} {_describe(price)}")
    return 0


def _describe(price: Price) -> str:
    """``price`` on one line (catalog, tiers included), or ``free``."""
    return price.describe()


def _rates(price: Price) -> dict[str, object]:
    """The non-zero components of ``price``, as the table writes them."""
    return price.document()


def _load(source: str) -> PricingTable:
    if source == _STDIN:
        data = sys.stdin.buffer.read(DEFAULT_MAX_BYTES + 1)
        if len(data) > DEFAULT_MAX_BYTES:
            raise PricingError(f"<stdin>: larger than the {DEFAULT_MAX_BYTES}-byte limit")
        return parse_bytes(data, "<stdin>")
    return as_source(source).fetch()
