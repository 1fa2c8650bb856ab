"""``otelcost demo``: price a live, instrumented workload with the bundled example table.

Runs three services on loopback (see ``_demo_app``) for ``--duration`` seconds (or until
``--spans`` spans ended), prices every span with a CostSpanProcessor into the embedded
InMemoryCostExporter, then prints cost per service, the top operations by cost and the
span counters. No servers or configuration needed; ``--json`` prints one JSON document.
Uses ``rich`` for the progress bar and tables when installed (``otelcost[cli]``), plain
text otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from otelcost import _json
from otelcost.cli._demo_app import Workload
from otelcost.exporters.memory import InMemoryCostExporter
from otelcost.money import from_nanos
from otelcost.processor import CostSpanProcessor

__all__ = ["register", "run", "simulate"]

TOP_OPERATIONS = 10
_TICK = 0.1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="price a live demo workload (no servers needed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--duration",
        type=_positive(float),
        default=6.0,
        metavar="S",
        help="seconds of traffic (default 6)",
    )
    parser.add_argument(
        "--spans",
        type=_positive(int),
        default=None,
        metavar="N",
        help="stop once N spans have ended (at the latest after --duration)",
    )
    parser.add_argument(
        "--clients",
        type=_positive(int),
        default=4,
        metavar="N",
        help="concurrent HTTP clients (default 4)",
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
        return value

    return parse


def run(args: argparse.Namespace) -> int:
    summary = simulate(
        duration=args.duration, spans=args.spans, clients=args.clients, progress=not args.json
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        render(summary)
    return 0


def demo_pricing() -> dict[str, Any]:
    """The bundled example pricing document (``otelcost/data/demo_pricing.json``)."""
    text = resources.files("otelcost").joinpath("data/demo_pricing.json").read_bytes()
    doc: dict[str, Any] = _json.loads(text)
    return doc


def simulate(
    *, duration: float, spans: int | None = None, clients: int = 4, progress: bool = False
) -> dict[str, Any]:
    """Run the workload and return the summary that ``--json`` prints."""
    pricing = demo_pricing()
    costs = InMemoryCostExporter(max_records=0)  # the totals are all the demo needs
    processor = CostSpanProcessor(pricing, [costs])
    workload = Workload(processor)
    started = time.monotonic()
    deadline = started + duration

    def done() -> bool:
        if time.monotonic() >= deadline:
            return True
        return spans is not None and processor.stats()["spans_seen"] >= spans

    try:
        with _Progress(progress, duration, spans) as update:

            def tick() -> None:
                total = sum(t.nanos for t in costs.totals().values())
                update(
                    elapsed=time.monotonic() - started,
                    seen=processor.stats()["spans_seen"],
                    requests=workload.requests,
                    cost=from_nanos(total),
                )

            workload.run(clients, done, tick, _TICK)
    finally:
        workload.close()
        processor.force_flush(10_000)
        elapsed = time.monotonic() - started
        stats = processor.stats()
        totals = costs.totals()
        processor.shutdown()
    return _summary(pricing, workload, stats, totals, elapsed)


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
    """A progress bar on stderr (rich when installed, a plain line on a terminal otherwise);
    does nothing when ``enabled`` is False."""

    def __init__(self, enabled: bool, duration: float, spans: int | None) -> None:
        self._enabled = enabled
        self._duration = duration
        self._spans = spans
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Callable[..., None]:
        if not self._enabled:
            return lambda **_: None
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

    def _rich(self, *, elapsed: float, seen: int, requests: int, cost: float) -> None:
        self._bar.update(
            self._task,
            completed=self._fraction(elapsed, seen),
            info=self._info(seen, requests, cost),
        )

    def _plain(self, *, elapsed: float, seen: int, requests: int, cost: float) -> None:
        if sys.stderr.isatty():
            percent = int(self._fraction(elapsed, seen) * 100)
            sys.stderr.write(
                f"\rpricing live traffic {percent:3d}%  {self._info(seen, requests, cost)}"
            )
            sys.stderr.flush()

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
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


def render(summary: dict[str, Any]) -> None:
    """Print the summary as tables (rich when installed, plain text otherwise)."""
    headline = (
        f"{summary['requests']} requests in {summary['duration_s']} s, "
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
