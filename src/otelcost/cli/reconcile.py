"""``otelcost reconcile``: prove that every sink holds the same money (otelcost.reconcile)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from otelcost import _json
from otelcost.cli._consumer_args import add_kafka_client_options, kafka_settings, positive_int
from otelcost.errors import MissingExtraError

__all__ = ["register", "run"]

_DESCRIPTION = """\
Send N synthetic spans through a CostSpanProcessor with every exporter at once (in-memory,
Kafka to a fresh topic, Redis budgets), run the enforcer over that topic into a second
Redis database, and compare the totals: the spans' cost.amount, the in-memory exporter,
the records on the topic, the Redis rolling spend of the exporter path and of the enforce
path, to the nano-unit. Prints a table of the totals and their differences.

The synthetic services are named reconcile-<run id>-<i>; their Redis keys and the topic
are deleted afterwards unless --keep. The enforce path uses the database after the one in
--redis-url (redis://host:6379/0 -> /1) unless --enforcer-redis-url is given."""

_EPILOG = """\
exit status: 0 when every sink agrees; 1 when they differ (or a counter shows a drop);
2 on invalid arguments, or when Redis or Kafka cannot be reached."""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``reconcile`` subcommand."""
    parser = subparsers.add_parser(
        "reconcile",
        help="check that every sink holds the same total, to the nano-unit",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bootstrap-servers", required=True, metavar="HOST:PORT[,...]")
    parser.add_argument(
        "--redis-url", required=True, metavar="URL", help="the exporter path's Redis"
    )
    parser.add_argument(
        "--enforcer-redis-url",
        metavar="URL",
        help="the enforce path's Redis (default: the next database of --redis-url)",
    )
    parser.add_argument(
        "--spans", type=positive_int, default=10_000, metavar="N", help="default: %(default)s"
    )
    parser.add_argument(
        "--services", type=positive_int, default=5, metavar="K", help="default: %(default)s"
    )
    parser.add_argument(
        "--topic", metavar="TOPIC", help="an existing topic to use (default: a new one)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="bound of each step (default: %(default)s)",
    )
    add_kafka_client_options(parser)
    parser.add_argument("--seed", type=int, help="seed of the synthetic spans")
    parser.add_argument("--keep", action="store_true", help="keep the Redis keys and the topic")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run one reconciliation; see the module and ``--help``."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if not args.timeout > 0:
            raise ValueError(f"--timeout must be > 0, got {args.timeout}")
        settings = kafka_settings(args)
    except (ValueError, OSError) as exc:
        print(f"otelcost reconcile: {exc}", file=sys.stderr)
        return 2
    from otelcost.reconcile import reconcile

    try:
        result = reconcile(
            args.bootstrap_servers,
            args.redis_url,
            spans=args.spans,
            services=args.services,
            enforcer_redis_url=args.enforcer_redis_url,
            topic=args.topic,
            kafka_config=settings,
            timeout=args.timeout,
            keep=args.keep,
            seed=args.seed,
        )
    except MissingExtraError:
        raise  # the command line says which extra to install
    except Exception as exc:  # unreachable servers, bad URLs: a message, never a traceback
        print(f"otelcost reconcile: {type(exc).__name__}: {_redacted(exc)}", file=sys.stderr)
        return 2
    if args.json:
        print(_json.dumps(result.to_dict()).decode())
    else:
        print(
            f"otelcost reconcile: {result.spans} spans of {len(result.services)} services "
            f"(run {result.run_id})\n"
        )
        print(result.table())
    return 0 if result.ok else 1


def _redacted(exc: Exception) -> str:
    from otelcost._redis import redact

    return redact(str(exc))
