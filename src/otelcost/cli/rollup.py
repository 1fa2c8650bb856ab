"""``otelcost rollup``: the Kafka cost stream into per-minute rollups in PostgreSQL."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from otelcost.cli._consumer_args import (
    KAFKA_CONFIG_HELP,
    add_consumer_options,
    configure_logging,
    consumer_options,
    positive_int,
    run_consumer,
)

__all__ = ["register", "run"]

_DEFAULT_GROUP = "cost-rollup-v1"  # otelcost.rollup.DEFAULT_ROLLUP_GROUP (psycopg-free here)
_DEFAULT_RETENTION_DAYS = 90

_DESCRIPTION = (
    """\
Consume the cost stream (schema 1 and 2) in batches, validate every record (invalid ones
go to TOPIC.dlq, as with 'otelcost enforce'), sum cost, spans, duration and unpriced
spans per UTC minute, service, operation and currency, and upsert the sums together with
the consumed offsets in one PostgreSQL transaction. Partitions start at the offsets stored
in PostgreSQL, so restarts and replays never count a record twice. When PostgreSQL is down
the partitions are paused and nothing is committed or lost. SIGTERM/SIGINT finish the
current batch, commit and exit 0.

--init-db creates or upgrades the schema 'otelcost' (idempotent; TimescaleDB when the
server has it). --apply-retention deletes minute rows of days older than
--retention-days. Either alone does only that; with --bootstrap-servers the consumer
runs afterwards.

--dsn takes a libpq URL or key=value string; keep the password out of it (and out of
the process list) with PGPASSWORD, PGPASSFILE or PGSERVICE.

"""
    + KAFKA_CONFIG_HELP
)

_EPILOG = """\
exit status: 0 when everything consumed was committed (or the schema/retention step
succeeded); 1 when a batch could not be committed before the shutdown grace ran out (the
next run reads it again) or the database step failed; 2 on invalid arguments or
configuration, or a database without the rollup schema; 3 when no Kafka broker answered
within --connect-timeout."""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``rollup`` subcommand."""
    parser = subparsers.add_parser(
        "rollup",
        help="consume the Kafka cost stream into per-minute cost history in PostgreSQL",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dsn", required=True, help="PostgreSQL URL or key=value conninfo")
    parser.add_argument("--init-db", action="store_true", help="create or upgrade the schema first")
    parser.add_argument(
        "--apply-retention",
        action="store_true",
        help="delete minute rows older than --retention-days first",
    )
    parser.add_argument(
        "--retention-days",
        type=positive_int,
        default=_DEFAULT_RETENTION_DAYS,
        metavar="DAYS",
        help="default: %(default)s (whole UTC days kept before today)",
    )
    add_consumer_options(parser, group=_DEFAULT_GROUP, required=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Apply the schema/retention steps asked for, then consume if a broker is given."""
    configure_logging()
    if not (args.bootstrap_servers or args.init_db or args.apply_retention):
        print(
            "otelcost rollup: give --bootstrap-servers (consume), --init-db or --apply-retention",
            file=sys.stderr,
        )
        return 2
    try:
        from otelcost import rollup
    except ImportError as exc:
        print(f"otelcost rollup: {exc}", file=sys.stderr)
        return 2
    code = _database_steps(args, rollup)
    if code or not args.bootstrap_servers:
        return code
    return _consume(args, rollup)


def _database_steps(args: argparse.Namespace, rollup: Any) -> int:
    from otelcost.rollup._db import DatabaseError, redact_dsn

    try:
        if args.init_db:
            info = rollup.init_db(args.dsn)
            done = "; ".join(info.applied) or "already up to date"
            flavour = "TimescaleDB" if info.timescale else "plain PostgreSQL"
            print(f"otelcost rollup: schema version {info.version} ({flavour}): {done}")
        if args.apply_retention:
            deleted = rollup.apply_retention(args.dsn, days=args.retention_days)
            what = "old chunks dropped" if deleted < 0 else f"{deleted} minute rows deleted"
            print(f"otelcost rollup: retention {args.retention_days} days: {what}")
    except rollup.SchemaError as exc:
        print(f"otelcost rollup: {exc}", file=sys.stderr)
        return 2
    except DatabaseError as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"otelcost rollup: {redact_dsn(args.dsn)}: {message}", file=sys.stderr)
        return 1
    return 0


def _consume(args: argparse.Namespace, rollup: Any) -> int:
    try:
        consumer = rollup.Rollup(args.bootstrap_servers, args.dsn, **consumer_options(args))
    except (ValueError, OSError) as exc:
        print(f"otelcost rollup: {exc}", file=sys.stderr)
        return 2
    try:
        return run_consumer("rollup", consumer, args)
    except rollup.SchemaError as exc:
        print(f"otelcost rollup: {exc}", file=sys.stderr)
        return 2
