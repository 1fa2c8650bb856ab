"""``otelcost report``: budgets, rolling spend, burn rate and throttles as stored in Redis,
or (``--dsn``) the cost history rolled up in PostgreSQL by ``otelcost rollup``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from otelcost import _json, environment
from otelcost.budget.status import BudgetStatus, BudgetUsage
from otelcost.exporters.budget import REDIS_URL_ENV

__all__ = ["register", "render_table", "report_document", "run"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``report`` subcommand."""
    parser = subparsers.add_parser(
        "report",
        help="show budgets, rolling spend, burn rate and throttled services",
        description=(
            "Read the budget state kept in Redis (by RedisBudgetExporter or otelcost enforce) "
            "and show, per service and budget period: rolling spend, limit, utilization, the "
            "EMA burn rate (spend projected over the period), consecutive windows over the "
            "limit, and whether the service is throttled with the flag's remaining TTL. "
            "With --dsn instead: the cost history kept in PostgreSQL by 'otelcost rollup', "
            "by service (with a chart of daily spend), operation, day or version (cost per "
            "request per deploy, flagging a version that moved past --threshold); with --reprice "
            "TABLE, the recorded cost next to what the same spans cost under TABLE. "
            "Exits 1 with a one-line error when Redis or PostgreSQL cannot be read."
        ),
    )
    parser.add_argument(
        "--redis-url",
        help=f"budgets: redis://, rediss://, redis+cluster:// or redis+sentinel:// URL "
        f"(default: ${REDIS_URL_ENV})",
    )
    parser.add_argument(
        "--dsn", help="cost history: PostgreSQL URL or key=value conninfo (otelcost rollup)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--service", metavar="NAME", help="only this service")
    history = parser.add_argument_group("cost history (--dsn)")
    history.add_argument(
        "--since", metavar="DURATION", help="window up to now: 30m, 12h, 7d, 2w (default: 7d)"
    )
    history.add_argument(
        "--by",
        choices=("service", "operation", "day", "version"),
        help="rows (default: service); version: cost per request per deploy of each service",
    )
    history.add_argument(
        "--threshold",
        type=float,
        metavar="FRACTION",
        help="--by version: flag a version whose cost per request moved more than this "
        "against the previous version (default: 0.1, i.e. 10%%)",
    )
    history.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="most expensive N rows (default: 20 by operation, all otherwise)",
    )
    history.add_argument(
        "--reprice",
        metavar="TABLE",
        help="re-price the history under this pricing table (JSON file or URL): recorded "
        "cost, re-priced cost and the difference, by service or --by operation",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the report; 0 on success, 1 (one line on stderr) when Redis or PostgreSQL
    cannot be read, 2 on contradictory options."""
    if args.dsn is not None:
        if args.redis_url is not None:
            print("otelcost report: give --redis-url or --dsn, not both", file=sys.stderr)
            return 2
        from otelcost.cli._history import run_history

        return run_history(args)
    if any(x is not None for x in (args.since, args.by, args.limit, args.reprice, args.threshold)):
        print(
            "otelcost report: --since, --by, --limit, --threshold and --reprice need --dsn",
            file=sys.stderr,
        )
        return 2
    args.redis_url = environment.choose(args.redis_url, REDIS_URL_ENV)
    if not args.redis_url:
        print(
            f"otelcost report: give --redis-url (or set {REDIS_URL_ENV}) for budgets, "
            "or --dsn for the cost history",
            file=sys.stderr,
        )
        return 1
    try:
        statuses = _read(args.redis_url, args.service)
    except Exception as exc:  # any failure to reach or read Redis: one line, no traceback
        from otelcost._redis import redact

        message = " ".join(str(exc).split()) or type(exc).__name__
        print(
            f"otelcost report: cannot read budgets from {redact(args.redis_url)}: {message}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        sys.stdout.write(_json.dumps(report_document(statuses)).decode() + "\n")
    else:
        render_table(statuses)
    return 0


def _read(url: str, service: str | None) -> list[BudgetStatus]:
    from otelcost.budget.redis_store import RedisBudgetStore

    store = RedisBudgetStore(url)
    try:
        services = [service] if service else store.services()
        return [store.status(name) for name in services]
    finally:
        store.client.close()


def report_document(statuses: Sequence[BudgetStatus]) -> dict[str, Any]:
    """The ``--json`` document: ``{"services": [BudgetStatus.to_dict(), ...]}``."""
    return {"services": [status.to_dict() for status in statuses]}


def _money(amount: float) -> str:
    # cents from 1 up; 3 significant digits below, so 0.015 is not shown as 0.01
    return f"{amount:,.2f}" if amount >= 1 or amount == 0 else f"{amount:.3g}"


def _rows(statuses: Sequence[BudgetStatus]) -> list[list[str]]:
    rows = []
    for status in statuses:
        throttled = "no"
        if status.throttled:
            ttl = status.throttle_ttl
            throttled = "YES" + (f" ({ttl:,.0f} s left)" if ttl is not None else " (no TTL)")
        if not status.budgets:
            rows.append([status.service, "-", "-", "-", "-", "-", "-", throttled])
        # The flag is the service's: a budget that does not throttle says which one does.
        by = [usage.period for usage in status.budgets if usage.reason]
        for usage in status.budgets:
            if usage.reason:
                verdict = f"{throttled} [{usage.reason}]"
            elif status.throttled and by:
                verdict = f"{throttled} by the {' and '.join(by)} budget"
            else:
                verdict = throttled
            rows.append(
                [
                    status.service,
                    usage.period,
                    _money(usage.spend),
                    _money(usage.limit),
                    f"{usage.utilization:.1%}",
                    _ema(usage),
                    str(usage.consecutive_over),
                    verdict,
                ]
            )
    return rows


def _ema(usage: BudgetUsage) -> str:
    # The EMA moves when an evaluation window closes: spend with an EMA of exactly 0 means
    # the first window is still open, and "0.00" would read as "not spending".
    if usage.ema_nanos == 0 and usage.spend_nanos > 0:
        return "pending (first window)"
    return f"{_money(usage.ema_rate)}/{usage.period}"


_HEADER = ["service", "period", "spend", "limit", "used", "EMA burn rate", "over", "throttled"]


def render_table(statuses: Sequence[BudgetStatus]) -> None:
    """Print the report as a table (rich when installed, plain text otherwise)."""
    rows = _rows(statuses)
    if not rows:
        print("no budget state in Redis")
        return
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        widths = [max(len(r[i]) for r in [_HEADER, *rows]) for i in range(len(_HEADER))]
        for row in [_HEADER, *rows]:
            print(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )
        return
    table = Table(title="otelcost budgets")
    for name in _HEADER:
        table.add_column(name, justify="right" if name in ("spend", "limit", "used") else "left")
    for row in rows:
        style = "bold red" if row[-1].startswith("YES") else None
        table.add_row(*(Text(cell) for cell in row), style=style)  # cells are not markup
    console = Console()
    if not console.is_terminal:  # piped: never wrap cells at an assumed 80 columns
        console = Console(width=200)
    console.print(table)
