"""Options shared by the commands that consume the cost stream (``enforce``, ``rollup``)."""

from __future__ import annotations

import argparse

from otelcost.stream._kafka import read_properties

__all__ = ["add_kafka_client_options", "kafka_settings", "positive_float", "positive_int"]

KAFKA_CONFIG_HELP = """\
Kafka client settings (SASL, SSL, group timing...) come from --kafka-config FILE
(key=value lines, like a Kafka client .properties file) and -X KEY=VALUE (later wins);
prefer the file for secrets, since arguments are visible in the process list."""


def add_kafka_client_options(parser: argparse.ArgumentParser) -> None:
    """``--kafka-config FILE`` and repeatable ``-X KEY=VALUE``."""
    parser.add_argument("--kafka-config", metavar="FILE", help="Kafka client .properties file")
    parser.add_argument(
        "-X",
        dest="kafka_settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka setting (repeatable)",
    )


def kafka_settings(args: argparse.Namespace) -> dict[str, str]:
    """The settings of ``--kafka-config`` then ``-X``; ValueError/OSError when invalid."""
    settings: dict[str, str] = {}
    if args.kafka_config:
        settings.update(read_properties(args.kafka_config))
    for item in args.kafka_settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"-X expects KEY=VALUE, got {key or item!r}")
        settings[key] = value
    return settings


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
