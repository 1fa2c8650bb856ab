"""Long-term cost history: the Kafka cost stream rolled up per minute into PostgreSQL.

- ``Rollup``: the consumer (``otelcost rollup``), exactly-once into the rollup tables;
- ``init_db`` / ``apply_retention``: the schema (``--init-db``) and retention
  (``--apply-retention``);
- ``read_history``: cost by service, operation or day (``otelcost report --dsn``);
- ``reprice_history``: that cost re-priced under another table (``--reprice``);
- ``read_versions``: cost per request per deploy (``--by version``).

Needs the ``postgres`` extra (psycopg 3) and, for ``Rollup``, the ``kafka`` extra.
The tables are described in ``otelcost.rollup._schema`` and docs/history.md.
"""

from __future__ import annotations

from otelcost.rollup._schema import (
    DAILY_VIEW,
    DEFAULT_RETENTION_DAYS,
    MINUTE_TABLE,
    OFFSETS_TABLE,
    SCHEMA_VERSION,
    SchemaError,
    SchemaInfo,
    apply_retention,
    init_db,
)
from otelcost.rollup._store import StoreUnavailableError
from otelcost.rollup.consumer import DEFAULT_ROLLUP_GROUP, Rollup
from otelcost.rollup.history import CostRow, History, read_history
from otelcost.rollup.reprice import RepricedRow, Repricing, reprice_history
from otelcost.rollup.versions import VersionHistory, VersionRow, read_versions

__all__ = [
    "DAILY_VIEW",
    "DEFAULT_RETENTION_DAYS",
    "DEFAULT_ROLLUP_GROUP",
    "MINUTE_TABLE",
    "OFFSETS_TABLE",
    "SCHEMA_VERSION",
    "CostRow",
    "History",
    "RepricedRow",
    "Repricing",
    "Rollup",
    "SchemaError",
    "SchemaInfo",
    "StoreUnavailableError",
    "VersionHistory",
    "VersionRow",
    "apply_retention",
    "init_db",
    "read_history",
    "read_versions",
    "reprice_history",
]
