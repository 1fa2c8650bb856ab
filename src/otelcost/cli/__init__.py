"""The ``otelcost`` command line. Each subcommand lives in its own module with a ``register``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from otelcost._version import __version__
from otelcost.errors import MissingExtraError

__all__ = ["main"]

# Subcommand modules, each exposing register(subparsers) -> None.
_COMMANDS = ("demo", "pricing", "normalize", "report", "enforce", "reconcile", "rollup", "bill")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otelcost",
        description="Price OpenTelemetry spans, stream the costs and enforce budgets.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        importlib.import_module(f"otelcost.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except MissingExtraError as exc:  # one line that says what to install, not a traceback
        print(f"otelcost {args.command}: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
