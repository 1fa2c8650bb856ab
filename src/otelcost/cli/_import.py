"""``otelcost pricing import --from genai-prices|litellm [FILE]``: a static pricing table from
an LLM model-price catalog, written for code review (sorted, indented, versioned)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from otelcost.errors import PricingError
from otelcost.pricing import PricingTable
from otelcost.pricing.imports import Imported, from_genai_prices, from_litellm, from_openlit

__all__ = ["register", "run"]


def register(actions: argparse._SubParsersAction[Any]) -> None:
    """Add ``import`` to the ``pricing`` actions."""
    command = actions.add_parser(
        "import",
        help="write a pricing table from an LLM model-price catalog (genai-prices, LiteLLM, "
        "OpenLIT)",
        description=(
            "Write a static pricing table, keyed by GenAI operation ('*:chat gpt-4o'), from "
            "the installed genai-prices data, a LiteLLM model_prices_and_context_window.json "
            "file or an OpenLIT pricing.json file, with usage tiers and dated prices where the "
            "catalog has them. What a table cannot express is left out and counted on stderr "
            "(--show-skipped lists it)."
        ),
    )
    command.add_argument(
        "--from", dest="catalog", required=True, choices=("genai-prices", "litellm", "openlit")
    )
    command.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="the LiteLLM or OpenLIT JSON file ('-' for standard input); not with genai-prices",
    )
    command.add_argument(
        "--provider",
        action="append",
        default=[],
        help="only this provider's models (repeatable): a genai-prices provider id, or "
        "LiteLLM's litellm_provider",
    )
    command.add_argument(
        "--operation",
        default="chat",
        help="gen_ai.operation.name in the keys of genai-prices models (default: chat)",
    )
    command.add_argument("--version", dest="table_version", help="the table's version")
    command.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    command.add_argument(
        "--show-skipped", action="store_true", help="list what the table leaves out on stderr"
    )
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build, validate and write the table; 0 on success, 1 (one line on stderr) on failure."""
    try:
        imported = _build(args)
        table = PricingTable.parse(imported.document)  # what we write must load
    except (PricingError, OSError, ValueError) as exc:
        print(f"otelcost pricing import: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(imported.document, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    print(
        f"otelcost pricing import: {len(table)} entries, version {table.version}; "
        f"{len(imported.skipped)} catalog items left out"
        + ("" if args.show_skipped or not imported.skipped else " (--show-skipped lists them)"),
        file=sys.stderr,
    )
    if args.show_skipped:
        for item in imported.skipped:
            print(f"  skipped {item}", file=sys.stderr)
    return 0


def _build(args: argparse.Namespace) -> Imported:
    if args.catalog == "genai-prices":
        if args.file:
            raise PricingError("--from genai-prices reads the installed catalog, not a FILE")
        return from_genai_prices(
            providers=args.provider, operation=args.operation, version=args.table_version
        )
    if not args.file:
        raise PricingError(f"--from {args.catalog} needs its JSON FILE ('-' for stdin)")
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    if args.catalog == "openlit":
        if args.provider:
            raise PricingError("--from openlit: the file has no providers (--provider)")
        return from_openlit(json.loads(text), version=args.table_version)
    return from_litellm(json.loads(text), providers=args.provider, version=args.table_version)
