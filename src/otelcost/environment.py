"""Every ``OTELCOST_*`` environment variable: what it means, its default, who reads it.

| Variable | Meaning | Default | Read by |
|---|---|---|---|
| `OTELCOST_PRICING` | Pricing table: JSON path or URL | none: `install()` raises | \
`install()`; the zero-code hook runs only when it is set |
| `OTELCOST_REGION` | `cost.pricing_region`, records' region | the table's `region` | \
`CostSpanProcessor`, `install()` |
| `OTELCOST_CURRENCY` | Currency costs are accounted in | `USD` | \
`CostSpanProcessor`, `install()` |
| `OTELCOST_BUDGETS` | Path of a budgets file | no budgets | `load_budgets()`, \
`budget_exporter()`, `install()`, `otelcost enforce` |
| `OTELCOST_REDIS_URL` | Keep budgets in this Redis | the embedded store | \
`budget_exporter()`, `install()`, `otelcost report` |
| `OTELCOST_KAFKA_BOOTSTRAP` | Brokers `host:port[,...]`: adds a KafkaCostExporter | none | \
`kafka_exporter_from_env()`, `install()` |
| `OTELCOST_KAFKA_TOPIC` | Topic of the cost records | `otel-cost-spans` \
(`otel-cost-spans-otlp` for `otlp_json`) | `kafka_exporter_from_env()` |
| `OTELCOST_KAFKA_ENCODING` | `json` or `otlp_json` | `json` | `kafka_exporter_from_env()` |
| `OTELCOST_KAFKA_SCHEMA` | Record schema of `json`: `1` or `2` | `2` | \
`kafka_exporter_from_env()` |
| `OTELCOST_KAFKA_CONFIG` | Kafka client `.properties` file (SASL, SSL, any librdkafka \
setting), so secrets need not be in the environment | none | `kafka_exporter_from_env()` |
| `OTELCOST_QUIET` | Any value but `0`/`false`/`no`/`off`: no startup line on stderr \
(the `install()` summary still goes to the `otelcost.costing.install` logger at INFO) | \
the line is printed once when logging is not configured | `install()` |
| `OTELCOST_PURE_PYTHON` | Any value but `0`/`false`/`no`/`off`: price spans (and make \
`InMemoryCostExporter`'s rows) with the pure-Python code even where the compiled \
accelerator is built (same results) | the accelerator when it is built | \
`CostSpanProcessor`, `install()`, `InMemoryCostExporter` |

One rule, everywhere: **an explicit argument wins, then the environment, then the default**.
A variable that is unset or blank (only whitespace) counts as unset; values are stripped.
The environment is read when an object is constructed (or ``install()`` runs), never while
spans are priced, so changing ``os.environ`` later does not change a running processor.
Every reader takes ``environ: Mapping[str, str] | None`` (None: ``os.environ``), so tests and
embedding applications can pass their own mapping instead of patching the process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final, overload

__all__ = [
    "BUDGETS",
    "CURRENCY",
    "KAFKA_BOOTSTRAP",
    "KAFKA_CONFIG",
    "KAFKA_ENCODING",
    "KAFKA_SCHEMA",
    "KAFKA_TOPIC",
    "PRICING",
    "PURE_PYTHON",
    "QUIET",
    "REDIS_URL",
    "REGION",
    "VARIABLES",
    "Environ",
    "choose",
    "flag",
    "read",
]

Environ = Mapping[str, str]
"""What ``environ=`` parameters accept: ``os.environ`` or any mapping of names to values."""

PRICING: Final = "OTELCOST_PRICING"
REGION: Final = "OTELCOST_REGION"
CURRENCY: Final = "OTELCOST_CURRENCY"
BUDGETS: Final = "OTELCOST_BUDGETS"
REDIS_URL: Final = "OTELCOST_REDIS_URL"
KAFKA_BOOTSTRAP: Final = "OTELCOST_KAFKA_BOOTSTRAP"
KAFKA_TOPIC: Final = "OTELCOST_KAFKA_TOPIC"
KAFKA_ENCODING: Final = "OTELCOST_KAFKA_ENCODING"
KAFKA_SCHEMA: Final = "OTELCOST_KAFKA_SCHEMA"
KAFKA_CONFIG: Final = "OTELCOST_KAFKA_CONFIG"
QUIET: Final = "OTELCOST_QUIET"
PURE_PYTHON: Final = "OTELCOST_PURE_PYTHON"

VARIABLES: Final = (
    PRICING,
    REGION,
    CURRENCY,
    BUDGETS,
    REDIS_URL,
    KAFKA_BOOTSTRAP,
    KAFKA_TOPIC,
    KAFKA_ENCODING,
    KAFKA_SCHEMA,
    KAFKA_CONFIG,
    QUIET,
    PURE_PYTHON,
)
"""Every variable otelcost reads, in the order of the table above."""


def read(name: str, environ: Environ | None = None) -> str | None:
    """The stripped value of ``name``; None when it is unset or blank."""
    if name not in VARIABLES:
        raise KeyError(f"{name!r} is not an otelcost variable (see otelcost.environment)")
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or None


_OFF: Final = frozenset({"0", "false", "no", "off"})


def flag(name: str, environ: Environ | None = None) -> bool:
    """Whether the switch ``name`` is on: set to anything but ``0``, ``false``, ``no``, ``off``."""
    value = read(name, environ)
    return value is not None and value.lower() not in _OFF


@overload
def choose(
    explicit: str | None, name: str, default: str, environ: Environ | None = None
) -> str: ...
@overload
def choose(
    explicit: str | None, name: str, default: None = None, environ: Environ | None = None
) -> str | None: ...
def choose(
    explicit: str | None, name: str, default: str | None = None, environ: Environ | None = None
) -> str | None:
    """The one rule: ``explicit`` when not None, else the variable when set, else ``default``."""
    if explicit is not None:
        return explicit
    value = read(name, environ)
    return default if value is None else value
