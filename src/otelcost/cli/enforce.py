"""``otelcost enforce``: consume the Kafka cost stream into Redis budgets."""

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
from otelcost.stream._kafka import DEFAULT_GROUP, DEFAULT_TOPIC

__all__ = ["register", "run"]

_DESCRIPTION = (
    """\
Consume the cost stream in batches, validate every record, dead-letter invalid ones to
TOPIC.dlq (original bytes, 'otelcost-error' header), apply the spend per service to the
Redis budgets with a (partition, offset) fence so replays never double count, and commit
offsets only after that. When Redis is down the partitions are paused and nothing is
committed or lost. SIGTERM/SIGINT finish the current batch, commit and exit 0.

"""
    + KAFKA_CONFIG_HELP
)

_EPILOG = """\
exit status: 0 when everything consumed was committed; 1 when a batch could not be
applied before the shutdown grace ran out (it is replayed by the next run); 2 on
invalid arguments or configuration."""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``enforce`` subcommand."""
    parser = subparsers.add_parser(
        "enforce",
        help="consume the Kafka cost stream into Redis budgets",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bootstrap-servers", required=True, metavar="HOST:PORT[,...]")
    parser.add_argument("--redis-url", required=True, metavar="URL", help="redis:// or rediss://")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help="default: %(default)s")
    parser.add_argument("--group", default=DEFAULT_GROUP, help="default: %(default)s")
    parser.add_argument("--dlq-topic", metavar="TOPIC", help="default: TOPIC.dlq")
    parser.add_argument(
        "--budgets", metavar="FILE", help="budgets file (default: $OTELCOST_BUDGETS, if set)"
    )
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
    add_kafka_client_options(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the final counters as one JSON object"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the enforcer until a signal, ``--max-records`` or ``--idle-timeout``."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    try:
        enforcer = _build(args)
    except (ValueError, OSError) as exc:  # BudgetConfigError is a ValueError
        print(f"otelcost enforce: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("otelcost.enforce").info(
            "%s: finishing the current batch", signal.Signals(signum).name
        )
        enforcer.stop()
        # A second signal takes the default action (immediate exit).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    clean = enforcer.run(max_records=args.max_records, idle_timeout=args.idle_timeout)
    if args.json:
        print(_json.dumps(enforcer.stats()).decode())
    return 0 if clean else 1


def _build(args: argparse.Namespace) -> Any:
    # Imported here so that `otelcost --help` works without the redis and kafka extras.
    from otelcost._redis import connect
    from otelcost.budget import RedisBudgetStore, load_budgets
    from otelcost.stream.enforce import Enforcer

    settings = kafka_settings(args)
    budgets = load_budgets(args.budgets)
    if not budgets:
        logging.getLogger("otelcost.enforce").warning(
            "no budgets (--budgets FILE or OTELCOST_BUDGETS): spend is consumed and committed "
            "but not recorded anywhere"
        )
    store = RedisBudgetStore(connect(args.redis_url), budgets)
    return Enforcer(
        args.bootstrap_servers,
        store,
        topic=args.topic,
        group=args.group,
        dlq_topic=args.dlq_topic,
        kafka_config=settings,
        batch_size=args.batch_size,
    )
