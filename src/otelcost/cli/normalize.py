"""``otelcost normalize PATH...``: print the normalized form of URL paths, one per line."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from otelcost.costing.normalize import PathNormalizer

__all__ = ["register", "run"]

_STDIN = "-"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``normalize`` subcommand."""
    parser = subparsers.add_parser(
        "normalize",
        help="print URL paths with their volatile segments replaced by *",
        description=(
            "Print each PATH as otelcost prices it: IDs, numbers, UUIDs, dates, e-mails and "
            "opaque tokens become *, the query string is dropped "
            "(/api/v2/users/123/orders/456?x=1 -> /api/v2/users/*/orders/*). "
            "Try it on access logs: ... | otelcost normalize - | sort | uniq -c"
        ),
    )
    parser.add_argument(
        "paths",
        metavar="PATH",
        nargs="+",
        help="a URL path or URL; '-' reads paths from standard input, one per line",
    )
    parser.add_argument(
        "--rule",
        nargs=2,
        action="append",
        default=[],
        metavar=("REGEX", "REPLACEMENT"),
        help="a user rule applied before the built-in ones (repeatable, in order)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object per path: {"path": ..., "normalized": ...}',
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Normalize every path; 0 on success, 2 when a rule does not compile."""
    try:
        normalizer = PathNormalizer([(regex, repl) for regex, repl in args.rule])
    except re.error as exc:
        print(f"otelcost normalize: invalid --rule: {exc}", file=sys.stderr)
        return 2
    try:
        for path in _inputs(args.paths):
            normalized = normalizer(path)
            if args.json:
                _write(json.dumps({"path": path, "normalized": normalized}))
            else:
                _write(normalized)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (e.g. "| head"): stop quietly, and keep the interpreter's
        # final flush from failing on the closed pipe.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    return 0


def _inputs(paths: Iterable[str]) -> Iterator[str]:
    for path in paths:
        if path == _STDIN:
            yield from _stdin_lines()
        else:
            yield path


def _stdin_lines() -> Iterator[str]:
    binary = getattr(sys.stdin, "buffer", None)
    lines: Iterable[str] = (
        (raw.decode("utf-8", "replace") for raw in binary) if binary is not None else sys.stdin
    )
    for line in lines:
        yield line.rstrip("\r\n")


def _write(line: str) -> None:
    # Never fail on a terminal that cannot show a character: escape it instead.
    encoding = sys.stdout.encoding or "utf-8"
    sys.stdout.write(line.encode(encoding, "backslashreplace").decode(encoding) + "\n")
