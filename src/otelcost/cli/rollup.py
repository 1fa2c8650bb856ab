"""``otelcost rollup``: the Kafka cost stream into per-minute rollups in PostgreSQL."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType
from typing import Any

from otelcost import _json
from otelcost.cli._consumer_args import (
    KAFKA_CONFIG_HELP,
    add_kafka_client_options,
    kafka_settings,
    positive_float,
    positive_int,
)
from otelcost.stream._kafka import DEFAULT_TOPIC

__all__ = ["register", "run"]

_DEFAULT_GROUP = "cost-rollup-v1"  # otelcost.rollup.DEFAULT_ROLLUP_GROUP (psycopg-free here)
_DEFAULT_RETENTION_DAYS = 90

_DESCRIPTION = (
    """\
Consume the cost stream in batches, validate every record (invalid ones go to TOPIC.dlq,
as with 'otelcost enforce'), sum cost, spans, duration and unpriced spans per UTC minute,
service, operation and currency, and upsert the sums together with the consumed offsets
in one PostgreSQL transaction. Partitions start at the offsets stored in PostgreSQL, so
restarts and replays never count a record twice. When PostgreSQL is down the partitions
are paused and nothing is committed or lost. SIGTERM/SIGINT finish the current batch,
commit and exit 0.

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
configuration, or a database without the rollup schema."""


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
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help="default: %(default)s")
    parser.add_argument("--group", default=_DEFAULT_GROUP, help="default: %(default)s")
    parser.add_argument("--dlq-topic", metavar="TOPIC", help="default: TOPIC.dlq")
    parser.add_argument(
        "--max-records", type=positive_int, metavar="N", help="stop after N messages"
    )
    parser.add_argument(
        "--idle-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="stop after SECONDS without a message (not counting group joins)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=5000, metavar="N", help="default: %(default)s"
    )
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
    add_kafka_client_options(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the final counters as one JSON object"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Apply the schema/retention steps asked for, then consume if a broker is given."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
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
        consumer = rollup.Rollup(
            args.bootstrap_servers,
            args.dsn,
            topic=args.topic,
            group=args.group,
            dlq_topic=args.dlq_topic,
            kafka_config=kafka_settings(args),
            batch_size=args.batch_size,
        )
    except (ValueError, OSError) as exc:
        print(f"otelcost rollup: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("otelcost.rollup").info(
            "%s: finishing the current batch", signal.Signals(signum).name
        )
        consumer.stop()
        # A second signal takes the default action (immediate exit).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        clean = consumer.run(max_records=args.max_records, idle_timeout=args.idle_timeout)
    except rollup.SchemaError as exc:
        print(f"otelcost rollup: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(_json.dumps(consumer.stats()).decode())
    return 0 if clean else 1
