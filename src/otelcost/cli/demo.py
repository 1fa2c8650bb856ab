"""``otelcost demo``: price a live, instrumented workload with the bundled example table.

Runs three services on loopback (see ``_demo_app``) for ``--duration`` seconds (or until
``--spans`` spans ended), prices every span with a CostSpanProcessor into the embedded
InMemoryCostExporter, then prints cost per service, the top operations by cost and the
span counters.

Budgets run on the embedded InMemoryBudgetStore (see ``_demo_budgets``): every service has
a 24h budget, and the storefront a small rolling 1h budget (``--budget``) that its real
spend reaches during the run. The storefront is then throttled and its budget guard answers
429 to the clients; the demo says when, counts the 429s and shows the budget report
(the table of ``otelcost report``).

No servers or configuration needed; ``--json`` prints one JSON document, whose ``budgets``
member is the document ``otelcost report --json`` prints. Uses ``rich`` for the progress
bar and tables when installed (``otelcost[cli]``), plain text otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, NamedTuple

from otelcost import _json
from otelcost.budget import Budget, BudgetConfigError, BudgetStatus
from otelcost.cli._demo_budgets import (
    SMALL_BUDGET_SERVICE,
    DemoBudgets,
    definition,
    demo_budgets,
    describe,
)
from otelcost.cli.report import render_table, report_document
from otelcost.costing.processor import CostSpanProcessor
from otelcost.exporters.memory import InMemoryCostExporter
from otelcost.money import from_nanos

if TYPE_CHECKING:  # the demo's app (sqlite3, wsgiref, urllib) loads when it runs
    from otelcost.cli._demo_app import Workload

__all__ = ["DemoResult", "register", "run", "simulate"]

TOP_OPERATIONS = 15  # every operation of the demo, the free health checks included
_TICK = 0.1
# Records reach the exporters within 0.2 s (default 1 s): the small budget lasts seconds,
# so the throttle must follow the spend at that scale.
_SCHEDULE_DELAY_MILLIS = 200


_DESCRIPTION = """\
Price a live, instrumented workload with the bundled example pricing table.

Three services run on loopback (a storefront WSGI app, a payment service and an LLM-backed
recommender priced per token) for --duration seconds or until --spans spans ended; every
span is priced, then the cost per service, the top operations by cost and the span
counters are printed.

Every service has a 24h budget and the storefront a small rolling 1h budget (--budget)
that its spend reaches during the run: the storefront is throttled, its budget guard
answers 429, and the budget table of `otelcost report` is shown.

No servers or configuration needed. --json prints one JSON document (its "budgets" member
is what `otelcost report --json` prints).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="price a live demo workload (no servers needed)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    positive: tuple[tuple[str, Callable[[str], float], float | None, str, str], ...] = (
        ("--duration", float, 6.0, "S", "seconds of traffic (default 6)"),
        ("--spans", int, None, "N", "stop once N spans ended (at the latest at --duration)"),
        ("--clients", int, 4, "N", "concurrent HTTP clients (default 4)"),
    )
    for flag, kind, default, metavar, text in positive:
        parser.add_argument(flag, type=_positive(kind), default=default, metavar=metavar, help=text)
    parser.add_argument(
        "--budget",
        type=_limit,
        default=None,
        metavar="AMOUNT",
        help=f"the {SMALL_BUDGET_SERVICE}'s rolling 1h budget in the pricing currency "
        f"(default {demo_budgets().for_service(SMALL_BUDGET_SERVICE)[0].limit:g})",
    )
    parser.set_defaults(func=run)


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text}")
        return value

    return parse


def _limit(text: str) -> float:
    value: float = _positive(float)(text)
    try:
        Budget(SMALL_BUDGET_SERVICE, value, period="1h")
    except BudgetConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def run(args: argparse.Namespace) -> int:
    result = simulate(
        duration=args.duration,
        spans=args.spans,
        clients=args.clients,
        budget=args.budget,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(result.summary, indent=2))
    else:
        render(result)
    return 0


_LLM_KEY = "recommendations:chat *"


def demo_pricing() -> dict[str, Any]:
    """The bundled example pricing document (``otelcost/data/demo_pricing.json``), whose LLM
    entry is the genai-prices catalog when that library is installed."""
    from importlib import resources

    text = resources.files("otelcost").joinpath("data/demo_pricing.json").read_bytes()
    doc: dict[str, Any] = _json.loads(text)
    if find_spec("genai_prices") is not None:  # the llm extra: the LLM priced from the catalog
        doc["prices"][_LLM_KEY] = {"catalog": "genai-prices"}
    return doc


class DemoResult(NamedTuple):
    """A demo run: the ``--json`` document and the final budget statuses it was built from."""

    summary: dict[str, Any]
    statuses: list[BudgetStatus]


def simulate(
    *,
    duration: float,
    spans: int | None = None,
    clients: int = 4,
    budget: float | None = None,
    progress: bool = False,
) -> DemoResult:
    """Run the workload; ``budget`` replaces the small budget's limit (currency units)."""
    from otelcost.cli._demo_app import SERVICES, Workload

    pricing = demo_pricing()
    budgets = DemoBudgets(demo_budgets(budget), SERVICES)
    costs = InMemoryCostExporter(max_records=0)  # the totals are all the demo needs
    processor = CostSpanProcessor(
        pricing, [costs, budgets.exporter], schedule_delay_millis=_SCHEDULE_DELAY_MILLIS
    )
    workload = Workload(processor, guard=budgets.guard)
    started = time.monotonic()
    deadline = started + duration

    def done() -> bool:
        if time.monotonic() >= deadline:
            return True
        return spans is not None and processor.stats()["spans_seen"] >= spans

    try:
        with _Progress(progress, duration, spans) as update:

            def tick() -> None:
                elapsed = time.monotonic() - started
                throttled = budgets.watch(elapsed)
                total = sum(t.nanos for t in costs.totals().values())
                update(
                    elapsed=elapsed,
                    seen=processor.stats()["spans_seen"],
                    requests=workload.requests,
                    cost=from_nanos(total),
                    note=_throttle_note(throttled, workload.rejected),
                )

            workload.run(clients, done, tick, _TICK)
    finally:
        workload.close()  # returns once every request (and its span) has ended
        processor.force_flush(10_000)  # flushes the budget exporter into the store too
        elapsed = time.monotonic() - started
        budgets.watch(elapsed)
        stats = processor.stats()
        totals = costs.totals()
        statuses = budgets.statuses()
        processor.shutdown()
    summary = _summary(pricing, workload, stats, totals, elapsed)
    summary["budget_definitions"] = [definition(b) for b in budgets.budgets.budgets]
    summary["budgets"] = report_document(statuses)
    summary["throttling"] = budgets.throttling(workload.rejected)
    exporter = budgets.exporter.stats()
    summary["budget_exporter"] = {
        name: exporter[name]
        for name in ("records", "records_delivered", "records_dropped", "flushes", "flush_errors")
    }
    return DemoResult(summary, statuses)


def _throttle_note(throttled: list[str], rejected: dict[str, int]) -> str:
    return "".join(
        f" · {service} THROTTLED (429 to {rejected.get(service, 0)} requests)"
        for service in throttled
    )


def _summary(
    pricing: dict[str, Any],
    workload: Workload,
    stats: dict[str, Any],
    totals: dict[tuple[str, str], Any],
    elapsed: float,
) -> dict[str, Any]:
    services: dict[str, list[int]] = {}
    for (service, _), total in totals.items():
        counts = services.setdefault(service, [0, 0, 0])
        counts[0] += total.spans
        counts[1] += total.unpriced
        counts[2] += total.nanos
    operations = sorted(totals.items(), key=lambda item: (-item[1].nanos, item[0]))
    return {
        "duration_s": round(elapsed, 2),
        "requests": workload.requests,
        "failed_requests": workload.failures,
        "rejected_requests": sum(workload.rejected.values()),
        "instrumentation": (
            "opentelemetry-instrumentation-wsgi"
            if workload.instrumented
            else "built-in minimal WSGI tracing (pip install 'otelcost[cli]' for the real one)"
        ),
        "pricing": {
            "version": pricing.get("version"),
            "currency": pricing.get("currency"),
            "region": pricing.get("region"),
        },
        "total_cost": from_nanos(sum(counts[2] for counts in services.values())),
        "spans": {
            "seen": stats["spans_seen"],
            "priced": stats["spans_priced"],
            "unpriced": stats["spans_unpriced"],
            "unpriced_by_reason": stats["unpriced"],
            "dropped": stats["spans_dropped"],
            "operations_folded": stats["operations_folded"],
            "records_exported": stats["records_exported"],
        },
        "services": [
            {"service": name, "spans": n, "unpriced": unpriced, "cost": from_nanos(nanos)}
            for name, (n, unpriced, nanos) in sorted(services.items(), key=lambda i: -i[1][2])
        ],
        "top_operations": [
            {
                "service": service,
                "operation": operation,
                "spans": total.spans,
                "unpriced": total.unpriced,
                "cost": total.amount,
                "cost_per_span": from_nanos(total.nanos // max(total.spans, 1)),
            }
            for (service, operation), total in operations[:TOP_OPERATIONS]
        ],
    }


class _Progress:
    """Progress on stderr while the demo runs: a rich bar on a terminal (a plain line when
    rich is missing); elsewhere (a log file, CI) one whole line at the end instead, since a
    live bar rendered into a file ends up cut at an assumed width. Nothing when disabled."""

    def __init__(self, enabled: bool, duration: float, spans: int | None) -> None:
        self._enabled = enabled
        self._duration = duration
        self._spans = spans
        self._bar: Any = None
        self._task: Any = None
        self._last = ""

    def __enter__(self) -> Callable[..., None]:  # update(elapsed=, seen=, requests=, cost=, note=)
        if not self._enabled:
            return lambda **_: None
        if not sys.stderr.isatty():
            return self._remember
        try:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:
            return self._plain
        self._bar = Progress(
            TextColumn("[bold]pricing live traffic"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(stderr=True),
        )
        self._bar.start()
        self._task = self._bar.add_task("demo", total=1.0, info="starting")
        return self._rich

    def _fraction(self, elapsed: float, seen: int) -> float:
        fraction = elapsed / self._duration
        if self._spans is not None:
            fraction = max(fraction, seen / self._spans)
        return min(fraction, 1.0)

    def _info(self, seen: int, requests: int, cost: float) -> str:
        return f"{requests} requests · {seen} spans · ${cost:.4f}"

    def _rich(self, *, elapsed: float, seen: int, requests: int, cost: float, note: str) -> None:
        from rich.markup import escape

        self._bar.update(
            self._task,
            completed=self._fraction(elapsed, seen),
            info=self._info(seen, requests, cost) + (f"[bold red]{escape(note)}" if note else ""),
        )

    def _plain(self, *, elapsed: float, seen: int, requests: int, cost: float, note: str) -> None:
        percent = int(self._fraction(elapsed, seen) * 100)
        sys.stderr.write(
            f"\rpricing live traffic {percent:3d}%  {self._info(seen, requests, cost)}{note}"
        )
        sys.stderr.flush()

    def _remember(
        self, *, elapsed: float, seen: int, requests: int, cost: float, note: str
    ) -> None:
        self._last = f"priced live traffic for {elapsed:.1f} s: {self._info(seen, requests, cost)}"
        self._last += note

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._last:
            print(self._last, file=sys.stderr)
        elif self._enabled and sys.stderr.isatty():
            sys.stderr.write("\n")


def _money(amount: float, currency: str) -> str:
    return f"{amount:.6f} {currency}"


def _sections(
    summary: dict[str, Any],
) -> list[tuple[str, Sequence[str], int, list[list[str]]]]:
    """(title, header, number of left-aligned text columns, rows) of every table printed."""
    currency = summary["pricing"]["currency"] or ""
    total = summary["total_cost"] or 1.0
    services = [
        [
            s["service"],
            str(s["spans"]),
            str(s["unpriced"]),
            _money(s["cost"], currency),
            f"{s['cost'] / total:.1%}",
        ]
        for s in summary["services"]
    ]
    operations = [
        [
            o["service"],
            o["operation"],
            str(o["spans"]),
            _money(o["cost"], currency) if not o["unpriced"] else f"{o['unpriced']} unpriced",
            _money(o["cost_per_span"], currency) if not o["unpriced"] else "",
        ]
        for o in summary["top_operations"]
    ]
    spans = summary["spans"]
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(spans["unpriced_by_reason"].items()))
    counters = [
        ["seen", str(spans["seen"])],
        ["priced", str(spans["priced"])],
        ["unpriced", f"{spans['unpriced']}" + (f" ({reasons})" if reasons else "")],
        ["dropped", str(spans["dropped"])],
        ["operations folded into OTHER", str(spans["operations_folded"])],
    ]
    return [
        ("Cost per service", ("service", "spans", "unpriced", "cost", "share"), 1, services),
        (
            f"Top {TOP_OPERATIONS} operations by cost",
            ("service", "operation", "spans", "cost", "per span"),
            2,
            operations,
        ),
        ("Spans", ("", "count"), 1, counters),
    ]


def render(result: DemoResult) -> None:
    """Print the cost tables, then the budgets, the budget report table and what was
    throttled (rich when installed, plain text otherwise)."""
    summary = result.summary
    _render_costs(summary)
    currency = summary["pricing"]["currency"] or ""
    print(f"\nBudgets on the in-memory store ({_BUDGETS_SOURCE}):")
    for budget in summary["budget_definitions"]:
        print(f"  {describe(budget, currency)}")
    render_table(result.statuses)
    for line in _throttle_lines(summary):
        print(line)


_BUDGETS_SOURCE = f"demo_budgets.json; --budget sets the {SMALL_BUDGET_SERVICE}'s limit"
_REASONS = {
    "hard_cap": "rolling spend reached the limit",
    "ema": "EMA burn rate over the limit",
    "hard_cap+ema": "rolling spend reached the limit, EMA burn rate over it",
}


def _reason(text: str) -> str:
    period, _, reason = text.partition(" ")
    return f"{period} budget: {_REASONS[reason]}" if reason in _REASONS else text


def _throttle_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for entry in summary["throttling"]:
        service, rejected = entry["service"], entry["rejected_requests"]
        episodes = [
            f"at {e['throttled_at_s']:.1f} s ({'; '.join(_reason(r) for r in e['reasons'])})"
            + (
                f", released at {e['released_at_s']:.1f} s"
                if e["released_at_s"] is not None
                else ", still throttled at the end"
            )
            for e in entry["episodes"]
        ]
        if not episodes and not rejected:
            continue
        if not entry["guarded"]:
            guard = "No guard in front of it in the demo, so nothing was refused."
        elif rejected:
            guard = f"Its budget guard answered 429 to {rejected} requests (health checks pass)."
        else:
            guard = "The run ended before its budget guard refused a request."
        lines.append(f"{service} throttled {', then '.join(episodes)}." if episodes else service)
        lines.append(f"  {guard}")
    if not lines:
        lines.append(
            f"No service was throttled: the {SMALL_BUDGET_SERVICE}'s spend stayed under its "
            "budget (a longer --duration or a smaller --budget crosses it)."
        )
    return lines


def _render_costs(summary: dict[str, Any]) -> None:
    rejected = summary["rejected_requests"]
    headline = (
        f"{summary['requests']} requests"
        + (f" ({rejected} refused with 429)" if rejected else "")
        + f" in {summary['duration_s']} s, "
        f"{summary['spans']['seen']} spans, total "
        f"{_money(summary['total_cost'], summary['pricing']['currency'] or '')} "
        f"(pricing {summary['pricing']['version']}; {summary['instrumentation']})"
    )
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(headline)
        for title, header, _, rows in _sections(summary):
            print(f"\n{title}")
            widths = [max(len(r[i]) for r in [list(header), *rows]) for i in range(len(header))]
            for row in [list(header), *rows]:
                print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return
    console = Console()
    if not console.is_terminal:  # piped: do not wrap at an assumed 80 columns
        console = Console(width=160)
    console.print(headline)
    for title, header, text_columns, rows in _sections(summary):
        table = Table(title=title, title_justify="left")
        for index, name in enumerate(header):
            table.add_column(name, justify="left" if index < text_columns else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
