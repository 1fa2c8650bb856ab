"""``otelcost report --dsn``: cost history from the PostgreSQL rollups, as tables and charts.

By service, each row ends with a sparkline of the spend per UTC day over the window
(oldest left, today right; ``·`` is a day without spend; beyond 30 days each character
is several days). By day, each row has a bar scaled to the most expensive day of its
currency. Tables use
rich when installed, plain aligned text otherwise; ``--json`` prints ``History.to_dict()``.
With ``--reprice TABLE``: recorded cost, re-priced cost and the difference by service or
operation (``otelcost.rollup.reprice``); ``--json`` prints ``Repricing.to_dict()``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from otelcost import _json
from otelcost.cli.report import _money
from otelcost.errors import PricingError
from otelcost.money import from_nanos
from otelcost.pricing.sources import as_source

if TYPE_CHECKING:  # imported when a command runs: they need psycopg (the postgres extra)
    from otelcost.rollup import History, RepricedRow, Repricing

__all__ = ["parse_since", "print_json", "read_rollups", "run_history", "sparkline"]


class _Documented(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


_Result = TypeVar("_Result")

_UNITS_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_BLOCKS = "▁▂▃▄▅▆▇█"
_MAX_CHART = 30
_BAR_WIDTH = 24


def parse_since(text: str) -> int:
    """``30m``, ``12h``, ``7d`` or ``2w`` as milliseconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"--since expects a duration like 30m, 12h, 7d or 2w, got {text!r}")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def sparkline(values: Sequence[int], width: int = _MAX_CHART) -> str:
    """One character per value (values summed into at most ``width`` characters)."""
    if len(values) > width:
        step = -(-len(values) // width)
        values = [sum(values[i : i + step]) for i in range(0, len(values), step)]
    top = max(values, default=0)
    if top <= 0:
        return "·" * len(values)
    return "".join(
        "·" if value <= 0 else _BLOCKS[(value * len(_BLOCKS) + top - 1) // top - 1]
        for value in values
    )


def run_history(args: argparse.Namespace) -> int:
    """Read and print the history; 0, 1 when the database cannot be read, 2 on bad input."""
    try:
        window = parse_since(args.since or "7d")
        from otelcost.rollup import read_history
        from otelcost.rollup.history import By
    except (ValueError, ImportError) as exc:
        print(f"otelcost report: {exc}", file=sys.stderr)
        return 2
    if args.reprice is not None:
        return _run_reprice(args, window)
    if args.by == "version":
        from otelcost.cli._versions import run_versions

        return run_versions(args, window)
    if getattr(args, "threshold", None) is not None:
        print("otelcost report: --threshold works with --by version", file=sys.stderr)
        return 2
    by: By = "service" if args.by is None else args.by
    limit = args.limit if args.limit is not None else (20 if by == "operation" else None)
    history = read_rollups(
        args.dsn,
        lambda: read_history(
            args.dsn,
            since_ms=int(time.time() * 1000) - window,
            by=by,
            service=args.service,
            limit=limit,
        ),
    )
    if history is None:
        return 1
    if args.json:
        return print_json(history)
    header, rows, title = _table(history)
    if not rows:
        print(f"no cost history in the last {args.since or '7d'}")
        return 0
    _print(title, header, rows)
    return 0


def read_rollups(dsn: str, read: Callable[[], _Result]) -> _Result | None:
    """``read()``; None after one line on stderr when the rollup database cannot be read."""
    from otelcost.rollup import SchemaError
    from otelcost.rollup._db import DatabaseError, redact_dsn

    try:
        return read()
    except (SchemaError, DatabaseError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(
            f"otelcost report: cannot read cost history from {redact_dsn(dsn)}: {message}",
            file=sys.stderr,
        )
        return None


def print_json(result: _Documented) -> int:
    """Print ``result.to_dict()`` as one line of JSON; the exit status 0."""
    sys.stdout.write(_json.dumps(result.to_dict()).decode() + "\n")
    return 0


def _run_reprice(args: argparse.Namespace, window: int) -> int:
    from otelcost.rollup.reprice import reprice_history

    if args.by not in (None, "service", "operation"):
        print("otelcost report: --reprice works --by service or operation", file=sys.stderr)
        return 2
    try:
        table = as_source(args.reprice).fetch()
    except (PricingError, ValueError) as exc:
        print(f"otelcost report: --reprice: {exc}", file=sys.stderr)
        return 2
    repricing = read_rollups(
        args.dsn,
        lambda: reprice_history(
            args.dsn,
            table,
            since_ms=int(time.time() * 1000) - window,
            by=args.by or "service",
            service=args.service,
            limit=args.limit,
        ),
    )
    if repricing is None:
        return 1
    if args.json:
        return print_json(repricing)
    since = args.since or "7d"
    if not repricing.rows:
        print(f"no cost history in {repricing.currency} in the last {since}")
        return 0
    header = ["service", "operation"] if repricing.by == "operation" else ["service"]
    header += ["currency", "spans", "recorded", "re-priced", "difference"]
    rows = [_repriced_cells(row, repricing.by) for row in repricing.rows]
    if len(rows) > 1 or args.limit is not None:
        rows.append(_repriced_cells(repricing.total, repricing.by))
        rows[-1][0] = "total"
    table_name = repricing.version or Path(args.reprice).name
    title = f"cost re-priced under {table_name} since {_date(repricing.since, minutes=True)} UTC"
    _print(title, header, rows)
    for note in _reprice_notes(repricing):
        print(note)
    return 0


def _repriced_cells(row: RepricedRow, by: str) -> list[str]:
    cells = [row.service, row.operation or ""] if by == "operation" else [row.service]
    return [
        *cells,
        row.currency,
        f"{row.spans:,}",
        _money(from_nanos(row.recorded_nanos)),
        _money(from_nanos(row.repriced_nanos)),
        _signed(row.difference_nanos),
    ]


def _signed(nanos: int) -> str:
    if nanos == 0:
        return "0"
    return ("+" if nanos > 0 else "-") + _money(from_nanos(abs(nanos)))


def _reprice_notes(repricing: Repricing) -> list[str]:
    total = repricing.total
    notes = []
    if total.unpriced_spans:
        notes.append(
            f"{total.unpriced_spans:,} entry spans have no price in the table: re-priced "
            "at 0 (live, they would be unpriced: pricing_not_found)"
        )
    if total.skipped_spans:
        why = "rolled up before their inputs of cost were kept"
        if repricing.per_call_keys:
            keys = ", ".join(repr(key) for key in repricing.per_call_keys)
            why += f", or priced per call by {keys} (a catalog or usage tiers)"
        notes.append(
            f"{total.skipped_spans:,} spans (recorded {_money(from_nanos(total.skipped_nanos))} "
            f"{total.currency}) left out: {why}"
        )
    if repricing.dated:
        notes.append("dated prices apply per minute, at the start of the minute")
    return notes


def _table(history: History) -> tuple[list[str], list[list[str]], str]:
    since = _date(history.since, minutes=True)
    if history.by == "service":
        chart = "daily spend" if len(history.days) <= _MAX_CHART else "spend over time"
        header = ["service", "currency", "cost", "spans", "unpriced", f"{chart} (oldest → today)"]
        rows = [
            [
                row.service or "",
                row.currency,
                _money(from_nanos(row.cost_nanos)),
                f"{row.spans:,}",
                f"{row.unpriced_share:.1%}",
                sparkline(row.daily),
            ]
            for row in history.rows
        ]
        return header, rows, f"cost by service since {since} UTC"
    if history.by == "operation":
        header = ["service", "operation", "currency", "cost", "spans", "per span", "avg ms"]
        header.append("unpriced")
        rows = [
            [
                row.service or "",
                row.operation or "",
                row.currency,
                _money(from_nanos(row.cost_nanos)),
                f"{row.spans:,}",
                _money(from_nanos(row.cost_nanos) / row.spans) if row.spans else "-",
                f"{row.duration_ms / row.spans:,.1f}" if row.spans else "-",
                f"{row.unpriced_share:.1%}",
            ]
            for row in history.rows
        ]
        return header, rows, f"top operations by cost since {since} UTC"
    top: dict[str, int] = {}  # bars compare days of one currency only
    for row in history.rows:
        top[row.currency] = max(top.get(row.currency, 0), row.cost_nanos)
    header = ["day (UTC)", "currency", "cost", "spans", "unpriced", ""]
    rows = [
        [
            "" if row.day is None else _date(row.day),
            row.currency,
            _money(from_nanos(row.cost_nanos)),
            f"{row.spans:,}",
            f"{row.unpriced_share:.1%}",
            "█" * round(_BAR_WIDTH * row.cost_nanos / top[row.currency])
            if top[row.currency]
            else "",
        ]
        for row in history.rows
    ]
    return header, rows, f"cost per day since {since} UTC"


_NUMERIC = frozenset(
    {"cost", "spans", "unpriced", "per span", "avg ms", "recorded", "re-priced", "difference"}
)


def _print(
    title: str, header: list[str], rows: list[list[str]], numeric: frozenset[str] = _NUMERIC
) -> None:
    """A titled table (rich when installed, aligned text otherwise); ``numeric`` columns
    are right-aligned."""
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        print(title)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            cells = [
                cell.rjust(width) if name in numeric else cell.ljust(width)
                for cell, width, name in zip(row, widths, header, strict=True)
            ]
            print("  ".join(cells).rstrip())
        return
    table = Table()
    for name in header:
        table.add_column(name, justify="right" if name in numeric else "left")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # names are data, not markup
    console = Console()
    if not console.is_terminal:  # piped: never wrap cells at an assumed 80 columns
        console = Console(width=200)
    # A line of its own: as a table title it would wrap to the width of a narrow table.
    console.print(Text(f"otelcost {title}", style="italic"))
    console.print(table)


def _date(epoch_ms: int, *, minutes: bool = False) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M" if minutes else "%Y-%m-%d")
