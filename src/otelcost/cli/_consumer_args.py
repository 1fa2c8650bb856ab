"""What the commands that consume the cost stream share (``enforce``, ``rollup``): their
options, and running a StreamConsumer until a signal, ``--max-records`` or
``--idle-timeout``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType
from typing import Any

from otelcost import _json
from otelcost.stream._kafka import DEFAULT_TOPIC, read_properties

__all__ = [
    "EXIT_STATUS",
    "KAFKA_CONFIG_HELP",
    "add_consumer_options",
    "add_kafka_client_options",
    "consumer_options",
    "kafka_settings",
    "positive_float",
    "positive_int",
    "run_consumer",
]

KAFKA_CONFIG_HELP = """\
Kafka client settings (SASL, SSL, group timing...) come from --kafka-config FILE
(key=value lines, like a Kafka client .properties file) and -X KEY=VALUE (later wins);
prefer the file for secrets, since arguments are visible in the process list."""

#: Exit status when no broker answered within --connect-timeout.
EXIT_UNREACHABLE = 3

EXIT_STATUS = """\
exit status: 0 when everything consumed was committed; 1 when a batch could not be
committed before the shutdown grace ran out (the next run reads it again); 2 on invalid
arguments or configuration; 3 when no Kafka broker answered within --connect-timeout."""


def add_consumer_options(parser: argparse.ArgumentParser, *, group: str, required: bool) -> None:
    """The stream options: brokers, topic, group, DLQ, stop conditions, batch, Kafka client
    settings and ``--json``; ``group`` is the default consumer group."""
    parser.add_argument("--bootstrap-servers", required=required, metavar="HOST:PORT[,...]")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help="default: %(default)s")
    parser.add_argument("--group", default=group, help="default: %(default)s")
    parser.add_argument("--dlq-topic", metavar="TOPIC", help="default: TOPIC.dlq")
    parser.add_argument(
        "--max-records", type=positive_int, metavar="N", help="stop after N messages"
    )
    parser.add_argument(
        "--idle-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="stop after SECONDS without a message, whatever the cause (no data, joining "
        "the group, no broker)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="exit with status 3 when no broker answers within SECONDS at start, or within "
        "--idle-timeout when shorter (default: %(default)g)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=5000, metavar="N", help="default: %(default)s"
    )
    add_kafka_client_options(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the final counters as one JSON object"
    )


def add_kafka_client_options(parser: argparse.ArgumentParser) -> None:
    """``--kafka-config FILE`` and ``-X KEY=VALUE``, read by :func:`kafka_settings`."""
    parser.add_argument("--kafka-config", metavar="FILE", help="Kafka client .properties file")
    parser.add_argument(
        "-X",
        dest="kafka_settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka setting (repeatable)",
    )


def consumer_options(args: argparse.Namespace) -> dict[str, Any]:
    """The StreamConsumer keyword arguments of the options; ValueError/OSError when the
    Kafka settings are invalid."""
    return {
        "topic": args.topic,
        "group": args.group,
        "dlq_topic": args.dlq_topic,
        "kafka_config": kafka_settings(args),
        "batch_size": args.batch_size,
        "connect_timeout": args.connect_timeout,
    }


def kafka_settings(args: argparse.Namespace) -> dict[str, str]:
    """The settings of ``--kafka-config`` then ``-X`` (ValueError/OSError when invalid)."""
    settings: dict[str, str] = {}
    if args.kafka_config:
        settings.update(read_properties(args.kafka_config))
    for item in args.kafka_settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"-X expects KEY=VALUE, got {key or item!r}")
        settings[key] = value
    return settings


def configure_logging() -> None:
    """Log lines with time and level to stderr, unless the application configured logging."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


def run_consumer(command: str, consumer: Any, args: argparse.Namespace) -> int:
    """Run ``consumer`` (a StreamConsumer) until a signal, ``--max-records`` or
    ``--idle-timeout``; SIGTERM/SIGINT finish the current batch, a second one exits at
    once. Prints the counters with ``--json``; returns the exit status."""
    from otelcost.stream.consumer import BrokerUnreachableError

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(f"otelcost.{command}").info(
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
    except BrokerUnreachableError as exc:
        print(f"otelcost {command}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.json:
        print(_json.dumps(consumer.stats()).decode())
    return 0 if clean else 1


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value
