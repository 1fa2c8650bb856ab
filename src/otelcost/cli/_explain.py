"""``otelcost pricing explain``: which key prices an operation, what it charges, and why
each other key of the table does not.

The operation is given (``--service``/``--operation``) or derived from a span (``--span``,
JSON: ``name``, ``kind``, ``attributes``, ``resource``) exactly as the span processor
derives it. Matching is the table's own (:meth:`PricingTable.match`); charging is
:meth:`PriceMatch.charge`, the one rule live pricing and re-pricing share (docs/pricing.md).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import SpanKind

from otelcost import _json
from otelcost.costing.operation import explain_operation, service_name
from otelcost.errors import PricingError
from otelcost.money import DEFAULT_CURRENCY, from_nanos
from otelcost.pricing import Price, PricingTable
from otelcost.pricing.table import PriceMatch

__all__ = ["explain", "register"]

_STDIN = "-"
_KINDS = {kind.name.lower(): kind for kind in SpanKind}
_ENTRY_KINDS = (SpanKind.SERVER, SpanKind.CONSUMER)
_MAX_SPAN_BYTES = 1 << 20
_STARS = re.compile(r"\*+")

# Match order (PricingTable's docstring): the tier of a key for (service, operation).
_TIERS = (
    "exact key",
    "glob for the service",
    "the service's '*'",
    "exact key for any service",
    "glob for any service",
    "the catch-all '*:*'",
)


class SpanInputError(ValueError):
    """The --span document is not a span this command can read."""


@dataclass(frozen=True)
class _Candidate:
    key: str
    tier: int  # index into _TIERS
    matches: bool
    position: int  # document order


def register(actions: argparse._SubParsersAction[Any], load: Callable[[str], PricingTable]) -> None:
    """Add ``explain`` to the ``pricing`` subcommands; ``load(source)`` reads a table the way
    ``pricing check`` does."""
    parser = actions.add_parser(
        "explain",
        help="show which key prices an operation, what it charges, and why the others do not",
        description=(
            "Show which key of the pricing table prices SERVICE:OPERATION (or the operation "
            "a span is named by: --span FILE or '-' for a JSON object with name, kind, "
            "attributes and resource), what it charges an entry span and a nested span, "
            "and why each other key for the service or for '*' does not apply, in match "
            "order. Exits 0 when a key matches, 1 when none does, 2 on unreadable input."
        ),
    )
    parser.add_argument("table", metavar="TABLE", help="a JSON file, '-' or an http(s) URL")
    parser.add_argument("--service", help="the service (default: the span's service.name)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--operation", help="the operation, as the span processor names it")
    source.add_argument(
        "--span",
        metavar="FILE",
        help="derive service and operation from a span as JSON ('-' for standard input)",
    )
    parser.add_argument(
        "--kind",
        choices=sorted(_KINDS),
        help="the span's kind: server and consumer spans are entry spans (default: the "
        "span's kind, else both cases are shown)",
    )
    parser.add_argument(
        "--duration-ms",
        type=float,
        metavar="MS",
        help="also compute the amounts for a span of this duration",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=lambda args: _run(args, load))


def _run(args: argparse.Namespace, load: Callable[[str], PricingTable]) -> int:
    try:
        if args.span == _STDIN and args.table == _STDIN:
            raise SpanInputError("--span - and TABLE - cannot both read standard input")
        if args.duration_ms is not None and not (
            math.isfinite(args.duration_ms) and args.duration_ms >= 0
        ):
            raise SpanInputError(f"--duration-ms must be >= 0, got {args.duration_ms}")
        span = _read_span(args.span) if args.span is not None else None
        table = load(args.table)
    except (PricingError, SpanInputError, ValueError, OSError) as exc:
        if args.json:
            print(_json.dumps({"error": str(exc)}).decode())
        else:
            print(f"otelcost pricing explain: {exc}", file=sys.stderr)
        return 2
    kind = _KINDS[args.kind] if args.kind else None
    name, rule, attributes = None, None, {}
    if span is not None:
        name, attributes = span["name"], span["attributes"]
        kind = kind if kind is not None else span["kind"]
        operation, rule = explain_operation(name, attributes, kind=kind)
        service = args.service or service_name(span["resource"], attributes)
    else:
        operation = args.operation
        service = args.service or "unknown_service"
    result = explain(
        table,
        service,
        operation,
        kind=kind,
        duration_ms=args.duration_ms,
        attributes=attributes,
    )
    if span is not None:
        result["span_name"], result["rule"] = name, rule
    if args.json:
        print(_json.dumps(result).decode())
    else:
        _print(result)
    return 0 if result["match"] is not None else 1


def _read_span(source: str) -> dict[str, Any]:
    """``name``, ``kind`` (SpanKind or None), ``attributes`` and ``resource`` of a span."""
    if source == _STDIN:
        text = sys.stdin.read(_MAX_SPAN_BYTES + 1)
    else:
        with open(source, encoding="utf-8") as file:
            text = file.read(_MAX_SPAN_BYTES + 1)
    if len(text) > _MAX_SPAN_BYTES:
        raise SpanInputError(f"--span: larger than {_MAX_SPAN_BYTES} bytes")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpanInputError(f"--span: not JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise SpanInputError("--span: expected a JSON object with name, kind, attributes")
    attributes = _mapping(doc.get("attributes"), "attributes")
    resource = _mapping(doc.get("resource"), "resource")
    nested = resource.get("attributes")
    if isinstance(nested, Mapping):  # {"resource": {"attributes": {...}}}
        resource = nested
    name = doc.get("name", "")
    if not isinstance(name, str):
        raise SpanInputError("--span: name must be a string")
    kind_text = doc.get("kind")
    kind = None
    if kind_text is not None:
        if not isinstance(kind_text, str):
            raise SpanInputError("--span: kind must be a string such as 'SERVER'")
        # "SERVER", "server", "SpanKind.SERVER" and OTLP's "SPAN_KIND_SERVER" all name it.
        short = kind_text.rsplit(".", 1)[-1].lower().removeprefix("span_kind_")
        if short not in _KINDS:
            raise SpanInputError(f"--span: unknown kind {kind_text!r}")
        kind = _KINDS[short]
    return {"name": name, "kind": kind, "attributes": attributes, "resource": resource}


def _mapping(value: object, field: str) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpanInputError(f"--span: {field} must be a JSON object")
    return value


def _tier(key: str, service: str, operation: str) -> tuple[int, bool] | None:
    """(tier, whether the key's operation could match) or None for another service's key."""
    key_service, _, key_operation = key.partition(":")
    if key_service == service:
        base = 0
    elif key_service == "*":
        base = 3
    else:
        return None
    key_operation = _STARS.sub("*", key_operation)
    if key_operation == operation:
        return base, True
    if key_operation == "*":
        return base + 2, True
    return (base + 1, True) if "*" in key_operation else (base, False)


def _candidates(table: PricingTable, service: str, operation: str) -> tuple[list[_Candidate], int]:
    """The keys for ``service`` and for ``*`` in match order, and how many keys are left."""
    found: list[_Candidate] = []
    others = 0
    entries = list(table)
    for position, entry in enumerate(entries):
        tier = _tier(entry.key, service, operation)
        if tier is None:
            others += 1
            continue
        level, possible = tier
        # Whether the key matches, by the table's own matching on a one-key table.
        matches = possible and (
            PricingTable({entry.key: entry.schedule or entry.price}).match(service, operation)
            is not None
        )
        found.append(_Candidate(entry.key, level, matches, position))
    matching = [c for c in found if c.matches]
    # The order among matching keys is the table's: repeatedly ask it which comes first.
    ranked: dict[str, int] = {}
    remaining = {c.key: c for c in matching}
    by_key = {entry.key: entry for entry in entries}
    while remaining:
        sub = PricingTable({k: by_key[k].schedule or by_key[k].price for k in remaining})
        first = sub.match(service, operation)
        if first is None:  # cannot happen: every remaining key matches on its own
            break
        ranked[first.key] = len(ranked)
        del remaining[first.key]
    found.sort(
        key=lambda c: (
            (c.tier, ranked.get(c.key, len(ranked)), c.position)
            if c.matches
            else (c.tier, len(ranked) + 1, c.position)
        )
    )
    return found, others


def explain(
    table: PricingTable,
    service: str,
    operation: str,
    *,
    kind: SpanKind | None = None,
    duration_ms: float | None = None,
    attributes: Mapping[str, object] | None = None,
    end_ms: int | None = None,
) -> dict[str, Any]:
    """The explanation as a JSON-ready dict (what ``--json`` prints).

    ``match``: the key that prices (service, operation), its price and what it charges an
    entry span and a nested span (amounts too when ``duration_ms`` is given), or None;
    ``candidates``: every key for the service or for ``*`` in match order with a reason;
    ``other_keys``: how many keys name other services.
    """
    attributes = attributes or {}
    end_ms = end_ms if end_ms is not None else time.time_ns() // 1_000_000
    match = table.match(service, operation)
    candidates, others = _candidates(table, service, operation)
    winner = match.key if match is not None else None
    listed = []
    for candidate in candidates:
        tier = _TIERS[candidate.tier]
        if candidate.key == winner:
            reason = f"matches: {tier}"
        elif candidate.matches:
            reason = f"matches too ({tier}), but {winner} comes first in the match order"
        elif "*" in candidate.key.partition(":")[2]:
            reason = f"pattern does not match {operation!r}"
        else:
            reason = f"names another operation, not {operation!r}"
        listed.append({"key": candidate.key, "matches": candidate.matches, "reason": reason})
    entry = None if kind is None else kind in _ENTRY_KINDS
    return {
        "service": service,
        "operation": operation,
        "kind": None if kind is None else kind.name.lower(),
        "entry": entry,
        "version": table.version,
        "currency": table.currency or DEFAULT_CURRENCY,
        "match": None
        if match is None
        else _charges(
            match,
            table.match(service, operation, nested=True) or match,
            duration_ms=duration_ms,
            attributes=attributes,
            end_ms=end_ms,
        ),
        "candidates": listed,
        "other_keys": others,
    }


def _price_text(match: PriceMatch, end_ms: int) -> tuple[Price | None, str]:
    try:
        price: Price | None = match.price_at(end_ms)
    except PricingError:
        price = None  # a dated entry with no price in force yet
    return price, "no price in force now" if price is None else price.describe()


def _charges(
    match: PriceMatch,
    nested_match: PriceMatch,
    *,
    duration_ms: float | None,
    attributes: Mapping[str, object],
    end_ms: int,
) -> dict[str, Any]:
    price, described = _price_text(match, end_ms)
    nested_price, nested_described = _price_text(nested_match, end_ms)
    if nested_match is not match:
        nested = (
            f"priced by {nested_match.key}, which names the operation (a nested span pays "
            f"only a key that names it): {nested_described}"
        )
    elif match.targeted:
        nested = f"the whole price (the key names the operation): {described}"
    elif price is not None and (price.per_unit or price.catalog is not None):
        nested = f"only the usage it carries: {described} (a bare '*' key)"
    else:
        nested = "not billable (a bare '*' key prices only entry spans and usage)"
    result: dict[str, Any] = {
        "key": match.key,
        "targeted": match.targeted,
        "price": described,
        "entry_span": f"the whole price: {described}",
        "nested_span": nested,
        "nested_key": nested_match.key,
    }
    if duration_ms is not None and price is not None and nested_price is not None:
        for field, is_entry, charged in (
            ("entry_amount", True, match),
            ("nested_amount", False, nested_match),
        ):
            try:
                charge = charged.charge(
                    entry=is_entry, duration_ms=duration_ms, attributes=attributes, end_ms=end_ms
                )
            except PricingError as exc:  # e.g. a GenAI call without usage: not $0
                result["amount_error"] = str(exc)
                break
            result[field] = None if charge is None else from_nanos(charge.nanos)
    return result


def _print(result: Mapping[str, Any]) -> None:
    out = sys.stdout.write
    out(f"service:    {result['service']}\n")
    derived = ""
    if result.get("span_name") is not None:
        derived = f"   (rule {result['rule']}, span {result['span_name']!r})"
    out(f"operation:  {result['operation']}{derived}\n")
    if result["kind"] is not None:
        role = "an entry span" if result["entry"] else "a nested span (unless a trace's root)"
        out(f"kind:       {result['kind']}: {role}\n")
    match = result["match"]
    if match is None:
        out("match:      none: an entry span gets cost.error pricing_not_found; a nested span\n")
        out("            is not billable\n")
    else:
        targeted = "names the operation" if match["targeted"] else "bare '*': untargeted"
        out(f"match:      {match['key']}   ({targeted})\n")
        currency = result["currency"]
        for label, field in (("entry span", "entry"), ("nested span", "nested")):
            amount = ""
            if f"{field}_amount" in match:
                value = match[f"{field}_amount"]
                amount = "   = not billable" if value is None else f"   = {value!r} {currency}"
            out(f"{label + ':':<13}{match[f'{field}_span']}{amount}\n")
        if "amount_error" in match:
            out(f"amount:      cannot be computed: {match['amount_error']}\n")
    if result["candidates"]:
        out("keys, in match order:\n")
        width = max(len(c["key"]) for c in result["candidates"])
        for candidate in result["candidates"]:
            mark = "*" if match is not None and candidate["key"] == match["key"] else " "
            out(f" {mark} {candidate['key']:<{width}}  {candidate['reason']}\n")
    if result["other_keys"]:
        out(f"({result['other_keys']} more keys name other services)\n")
