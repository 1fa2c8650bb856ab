"""``otelcost report --dsn ... --by version``: cost per request per deploy, as a table
(rich when installed) or ``--json`` (``VersionHistory.to_dict()``). A version whose cost
per request moved more than ``--threshold`` against the previous one is marked."""

from __future__ import annotations

import argparse
import sys
import time

from otelcost.cli._history import _date, _print, print_json, read_rollups
from otelcost.cli.report import _money
from otelcost.money import from_nanos

__all__ = ["run_versions"]

_NUMERIC = frozenset({"requests", "cost", "per request", "change"})


def run_versions(args: argparse.Namespace, window: int) -> int:
    """Print cost per request per version; 0, 1 when the database cannot be read, 2 on
    bad input."""
    from otelcost.rollup.versions import DEFAULT_THRESHOLD, read_versions

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    try:
        history = read_rollups(
            args.dsn,
            lambda: read_versions(
                args.dsn,
                since_ms=int(time.time() * 1000) - window,
                service=args.service,
                threshold=threshold,
            ),
        )
    except ValueError as exc:
        print(f"otelcost report: {exc}", file=sys.stderr)
        return 2
    if history is None:
        return 1
    if args.json:
        return print_json(history)
    rows = history.rows[: args.limit] if args.limit is not None else history.rows
    if not rows:
        print(f"no cost history in the last {args.since or '7d'}")
        return 0
    header = ["service", "environment", "version", "first seen (UTC)", "currency", "requests"]
    header += ["cost", "per request", "change", ""]
    cells = [
        [
            row.service,
            row.environment or "-",
            row.version or "(not set)",
            _date(row.first_seen, minutes=True),
            row.currency,
            f"{row.requests:,}",
            _money(from_nanos(row.cost_nanos)),
            "-" if row.cost_per_request is None else _money(float(row.cost_per_request) / 1e9),
            "" if row.change is None else f"{row.change:+.1%} vs {row.previous or '(not set)'}",
            "MOVED" if row.flagged else "",
        ]
        for row in rows
    ]
    title = f"cost per request by version since {_date(history.since, minutes=True)} UTC"
    _print(title, header, cells, _NUMERIC)
    if history.flagged:
        print(
            f"{len(history.flagged)} version(s) moved more than {threshold:.0%} in cost per "
            "request against the version before"
        )
    return 0
