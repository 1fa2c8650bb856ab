"""``otelcost bill``: a FOCUS export of the cloud bill next to otelcost's attribution.

- ``bill check FOCUS``: validate the export, print what it bills per service;
- ``bill compare FOCUS --dsn DSN``: billed vs attributed per service (and ``--daily`` per
  UTC day), coverage, spend with no service tag, services priced but never billed;
- ``bill calibrate FOCUS --dsn DSN --table TABLE [--write-table OUT]``: per-service
  factors billed ÷ attributed, and a pricing table with those services' prices scaled,
  dated from the next period.

Exit codes: 0; 1 when PostgreSQL cannot be read; 2 for an unusable export, table or option.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otelcost import _json
from otelcost.cli._history import _print, _signed
from otelcost.cli.report import _money
from otelcost.errors import OtelCostError
from otelcost.money import from_nanos

if TYPE_CHECKING:  # imported when a subcommand runs
    from otelcost.bill import Bill, Comparison

__all__ = ["register"]

_NUMERIC = frozenset({"billed", "attributed", "difference", "factor", "credits", "share"})


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``bill`` and its ``check``, ``compare`` and ``calibrate`` subcommands."""
    bill = subparsers.add_parser(
        "bill",
        help="compare a FOCUS export of the cloud bill with the attributed cost",
        description=(
            "Read a FOCUS cost export (CSV, or Parquet with the parquet extra) as AWS, Azure, "
            "GCP and OCI write it, and set it next to the cost otelcost attributed (the "
            "PostgreSQL rollups of 'otelcost rollup'). See docs/bill.md."
        ),
    )
    actions = bill.add_subparsers(dest="bill_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate a FOCUS export and print what it bills per service",
        description="Validate a FOCUS export and print its billed cost per service.",
    )
    _focus_arguments(check)
    check.set_defaults(func=_run_check)
    compare = actions.add_parser(
        "compare",
        help="billed vs attributed cost per service and UTC day, coverage",
        description=(
            "Compare a FOCUS export with the rollups over the bill's UTC days: per service "
            "the billed and the attributed cost, the difference and the factor billed ÷ "
            "attributed; coverage (the share of the bill whose service otelcost attributes "
            "cost to); spend with no service tag; services priced but never billed."
        ),
    )
    _focus_arguments(compare)
    _dsn_argument(compare)
    compare.add_argument("--daily", action="store_true", help="also a table per service and day")
    compare.set_defaults(func=_run_compare)
    calibrate = actions.add_parser(
        "calibrate",
        help="per-service factors billed ÷ attributed; write a calibrated pricing table",
        description=(
            "Propose per-service factors billed ÷ attributed over the bill's period. With "
            "--write-table, write TABLE with those services' prices scaled, as dated prices "
            "in force from the end of the bill (the next period) or --from."
        ),
    )
    _focus_arguments(calibrate)
    _dsn_argument(calibrate)
    calibrate.add_argument(
        "--table", required=True, metavar="TABLE", help="the pricing table (JSON file) to scale"
    )
    calibrate.add_argument(
        "--write-table", metavar="OUT", help="write the calibrated pricing table to OUT"
    )
    calibrate.add_argument(
        "--from",
        dest="effective_from",
        metavar="INSTANT",
        help="scaled prices in force from this UTC day or instant (default: end of the bill)",
    )
    calibrate.set_defaults(func=_run_calibrate)


def _focus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("focus", metavar="FOCUS", help="the FOCUS export (.csv, .csv.gz, .parquet)")
    parser.add_argument(
        "--tag",
        default="service",
        metavar="KEY",
        help="the key of the Tags column naming the service (default: service)",
    )
    parser.add_argument(
        "--map",
        metavar="FILE",
        help='JSON {"tag value or ResourceId": "service"}: services of tag values or resources',
    )
    parser.add_argument(
        "--cost",
        choices=("BilledCost", "EffectiveCost"),
        default="BilledCost",
        help="the cost column (default: BilledCost; EffectiveCost amortizes commitments)",
    )
    parser.add_argument("--since", metavar="YYYY-MM-DD", help="only charges from this UTC day")
    parser.add_argument("--until", metavar="YYYY-MM-DD", help="only charges before this UTC day")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _dsn_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn", required=True, help="PostgreSQL URL or conninfo of the rollups (otelcost rollup)"
    )


class _Usage(Exception):
    """Bad input: exit code 2."""


def _instant(text: str, option: str) -> int:
    """A UTC day (YYYY-MM-DD) or ISO 8601 instant as epoch ms."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _Usage(
            f"{option}: expects a UTC day or instant such as 2026-06-01, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _read(args: argparse.Namespace) -> Bill:
    from otelcost.bill import read_focus, read_mapping

    mapping = read_mapping(args.map) if args.map else None
    return read_focus(
        args.focus,
        tag=args.tag,
        mapping=mapping,
        cost_column=args.cost,
        since_ms=None if args.since is None else _instant(args.since, "--since"),
        until_ms=None if args.until is None else _instant(args.until, "--until"),
    )


def _guarded(args: argparse.Namespace, body: Callable[[argparse.Namespace], int]) -> int:
    """Run ``body(args)``, turning expected failures into one line and an exit code."""
    try:
        code = body(args)
    except (_Usage, OtelCostError) as exc:
        print(f"otelcost bill: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from otelcost.rollup import SchemaError
        from otelcost.rollup._db import DatabaseError, redact_dsn

        if not isinstance(exc, SchemaError | DatabaseError):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(
            f"otelcost bill: cannot read the rollups from {redact_dsn(args.dsn)}: {message}",
            file=sys.stderr,
        )
        return 1
    return code


def _run_check(args: argparse.Namespace) -> int:
    return _guarded(args, _check)


def _run_compare(args: argparse.Namespace) -> int:
    return _guarded(args, _compare)


def _run_calibrate(args: argparse.Namespace) -> int:
    return _guarded(args, _calibrate)


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(_json.dumps(doc).decode() + "\n")


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def _period(bill: Bill) -> str:
    return f"{_day(bill.since)} to {_day(bill.until - 1)} UTC"


def _check(args: argparse.Namespace) -> int:
    bill = _read(args)
    totals = sorted(
        ((sum(days.values()), name) for name, days in bill.billed.items()), reverse=True
    )
    untagged = sorted(
        ((sum(days.values()), name) for name, days in bill.untagged.items()), reverse=True
    )
    rows = [[name, _amount(nanos)] for nanos, name in totals]
    rows += [[f"(no service tag: {name})", _amount(nanos)] for nanos, name in untagged]
    if args.json:
        _emit(
            {
                "source": bill.source,
                "currency": bill.currency,
                "cost_column": bill.cost_column,
                "since": bill.since,
                "until": bill.until,
                "charges": bill.rows,
                "billed_nanos": {name: sum(d.values()) for name, d in bill.billed.items()},
                "untagged_nanos": {name: sum(d.values()) for name, d in bill.untagged.items()},
                "credits_nanos": dict(bill.credits),
            }
        )
        return 0
    title = f"{bill.cost_column} in {bill.currency}, {bill.rows:,} charges, {_period(bill)}"
    _print(title, ["service", "billed"], rows, _NUMERIC)
    if bill.credits:
        print(f"credits (left out of billed): {_amount(sum(bill.credits.values()))}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from otelcost.bill import compare

    comparison = compare(_read(args), args.dsn)
    if args.json:
        _emit(comparison.to_dict())
        return 0
    _print_comparison(comparison, daily=args.daily)
    return 0


def _print_comparison(comparison: Comparison, *, daily: bool) -> None:
    bill = comparison.bill
    header = ["service", "billed", "attributed", "difference", "factor", "status"]
    rows = [
        [
            row.service,
            _amount(row.billed_nanos),
            _amount(row.attributed_nanos),
            _signed(row.difference_nanos),
            "-" if row.factor is None else f"{float(row.factor):.4f}",
            row.status,
        ]
        for row in comparison.services
    ]
    rows += [
        [f"(no service tag: {name})", _amount(sum(days)), "", "", "", "not attributable"]
        for name, days in comparison.untagged.items()
    ]
    title = f"bill vs attributed cost in {comparison.currency}, {_period(bill)}"
    _print(title, header, rows, _NUMERIC)
    if daily:
        day_rows = [
            [
                row.service,
                _day(day),
                _amount(billed),
                _amount(attributed),
                _signed(billed - attributed),
            ]
            for row in comparison.services
            for day, billed, attributed in zip(
                comparison.days, row.daily_billed, row.daily_attributed, strict=True
            )
            if billed or attributed
        ]
        _print(
            "per UTC day",
            ["service", "day", "billed", "attributed", "difference"],
            day_rows,
            _NUMERIC,
        )
    print(
        f"coverage: {float(comparison.coverage):.1%} of {_amount(comparison.billed_nanos)} "
        f"{comparison.currency} billed ({bill.cost_column}) is spend of services otelcost "
        f"attributes; {_amount(comparison.untagged_nanos)} has no service tag "
        f"(tag {bill.tag!r})"
    )
    credits = sum(bill.credits.values())
    if credits:
        print(f"credits (left out of billed): {_amount(credits)}")
    for currency, nanos in comparison.other_currencies.items():
        print(f"attributed in {currency} (not compared: another currency): {_amount(nanos)}")


def _calibrate(args: argparse.Namespace) -> int:
    from otelcost.bill import calibrate, compare

    try:
        document = json.loads(Path(args.table).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _Usage(f"--table: cannot read {args.table}: {exc}") from None
    start = None if args.effective_from is None else _instant(args.effective_from, "--from")
    comparison = compare(_read(args), args.dsn)
    calibration = calibrate(comparison, document, effective_from=start)
    if args.write_table:
        text = json.dumps(calibration.table(), indent=2, ensure_ascii=False) + "\n"
        Path(args.write_table).write_text(text, encoding="utf-8")
    if args.json:
        doc = calibration.to_dict()
        doc["written"] = args.write_table
        _emit(doc)
        return 0
    rows = [
        [
            factor.service,
            _amount(factor.billed_nanos),
            _amount(factor.attributed_nanos),
            str(factor.rounded(4)),
            ", ".join(factor.keys),
        ]
        for factor in calibration.factors
    ]
    title = f"calibration from {_period(comparison.bill)} ({comparison.currency})"
    _print(title, ["service", "billed", "attributed", "factor", "keys scaled"], rows, _NUMERIC)
    for service, reason in calibration.skipped.items():
        print(f"not calibrated: {service}: {reason}")
    if args.write_table:
        since = datetime.fromtimestamp(calibration.effective_from / 1000, tz=timezone.utc)
        print(f"wrote {args.write_table}: scaled prices in force from {since:%Y-%m-%dT%H:%M:%SZ}")
    return 0


def _amount(nanos: int) -> str:
    return _money(from_nanos(nanos))
