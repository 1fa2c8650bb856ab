"""``otelcost enforce``: consume the Kafka cost stream into Redis budgets."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from otelcost.cli._consumer_args import (
    EXIT_STATUS,
    KAFKA_CONFIG_HELP,
    add_consumer_options,
    configure_logging,
    consumer_options,
    run_consumer,
)
from otelcost.stream._kafka import DEFAULT_GROUP

__all__ = ["register", "run"]

_DESCRIPTION = (
    """\
Consume the cost stream (schema 1 and 2) in batches, validate every record, dead-letter
invalid ones to TOPIC.dlq (original bytes, 'otelcost-error' header), apply the spend per
service to the Redis budgets with a (partition, offset) fence so replays never double
count, and commit offsets only after that. When Redis is down the partitions are paused
and nothing is committed or lost. SIGTERM/SIGINT finish the current batch, commit and
exit 0.

"""
    + KAFKA_CONFIG_HELP
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``enforce`` subcommand."""
    parser = subparsers.add_parser(
        "enforce",
        help="consume the Kafka cost stream into Redis budgets",
        description=_DESCRIPTION,
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--redis-url", required=True, metavar="URL", help="redis:// or rediss://")
    parser.add_argument(
        "--budgets", metavar="FILE", help="budgets file (default: $OTELCOST_BUDGETS, if set)"
    )
    add_consumer_options(parser, group=DEFAULT_GROUP, required=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the enforcer until a signal, ``--max-records`` or ``--idle-timeout``."""
    configure_logging()
    try:
        enforcer = _build(args)
    except (ValueError, OSError) as exc:  # BudgetConfigError is a ValueError
        print(f"otelcost enforce: {exc}", file=sys.stderr)
        return 2
    return run_consumer("enforce", enforcer, args)


def _build(args: argparse.Namespace) -> Any:
    # Imported here so that `otelcost --help` works without the redis and kafka extras.
    from otelcost._redis import connect
    from otelcost.budget import RedisBudgetStore, load_budgets
    from otelcost.stream.enforce import Enforcer

    options = consumer_options(args)
    budgets = load_budgets(args.budgets)
    if not budgets:
        logging.getLogger("otelcost.enforce").warning(
            "no budgets (--budgets FILE or OTELCOST_BUDGETS): spend is consumed and committed "
            "but not recorded anywhere"
        )
    store = RedisBudgetStore(connect(args.redis_url), budgets)
    return Enforcer(args.bootstrap_servers, store, **options)
