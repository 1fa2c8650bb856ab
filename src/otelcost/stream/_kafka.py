"""confluent-kafka plumbing shared by the Kafka exporter and ``otelcost enforce``.

confluent-kafka is an optional dependency (the ``kafka`` extra), so it is imported only
when a Kafka client is actually built; ``import otelcost`` never needs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from otelcost.errors import MissingExtraError

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_OTLP_TOPIC",
    "DEFAULT_TOPIC",
    "SCHEMA_HEADER",
    "client_config",
    "import_confluent",
    "parse_properties",
    "read_properties",
]

#: The cost stream's topic (docs/kafka.md).
DEFAULT_TOPIC = "otel-cost-spans"
#: The topic of the OTLP/JSON output for a Collector (never mixed with the cost stream).
DEFAULT_OTLP_TOPIC = "otel-cost-spans-otlp"
#: The consumer group of ``otelcost enforce``.
DEFAULT_GROUP = "cost-attribution-v1"
#: Header on every message of the cost stream: its schema version (1 or 2).
SCHEMA_HEADER = "otelcost-schema"

# Names taken verbatim: confluent-kafka's Python callbacks and librdkafka's few
# underscore properties. Every other underscore in a user key stands for a dot.
_VERBATIM_KEYS = frozenset(
    {
        "error_cb",
        "throttle_cb",
        "stats_cb",
        "oauth_cb",
        "logger",
        "on_delivery",
        "on_commit",
        "log_level",
        "enable_sasl_queue",
    }
)


def import_confluent() -> ModuleType:
    """The ``confluent_kafka`` module, or an ImportError that says which extra to install."""
    try:
        return importlib.import_module("confluent_kafka")
    except ImportError as exc:
        raise MissingExtraError("Kafka support", "confluent-kafka", "kafka") from exc


def client_config(defaults: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` overridden by ``user`` settings.

    User keys may be written with underscores instead of dots (``sasl_username=...`` is
    ``sasl.username``) so they can be passed as keyword arguments; the Python callbacks
    (``error_cb``...) and librdkafka's own underscore names (``log_level``,
    ``enable_sasl_queue``) are kept as they are. Spelling one setting both ways is a
    ValueError.
    """
    config = dict(defaults)
    seen: dict[str, str] = {}
    for key, value in user.items():
        name = key if key in _VERBATIM_KEYS else key.replace("_", ".")
        if name in seen:
            raise ValueError(f"Kafka setting {name!r} given twice ({seen[name]!r} and {key!r})")
        seen[name] = key
        config[name] = value
    return config


def parse_properties(lines: Iterable[str], *, source: str) -> dict[str, str]:
    """Parse Java-style ``key=value`` lines (``#`` and ``!`` comments, blank lines skipped).

    This is the format of Kafka client ``.properties`` files, so an existing client
    configuration (SASL, SSL) can be reused as is. ``source`` names the input in errors;
    values are never echoed because they may be secrets.
    """
    config: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{source}:{number}: expected key=value")
        config[key.strip()] = value.strip()
    return config


def read_properties(path: str | Path) -> dict[str, str]:
    """``parse_properties`` of a file."""
    with open(path, encoding="utf-8") as fh:
        return parse_properties(fh, source=str(path))
