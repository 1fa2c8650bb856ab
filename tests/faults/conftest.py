"""Fixtures of the fault tests: ``stack_args``, the servers a ``_stack.Stack`` runs against,
and what each test measured (``_stack.FIGURES``), collected into the JSON-lines file named by
``OTELCOST_FAULTS_REPORT``, the source of the figures in docs/reliability.md."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import _stack
import pytest
import redis

from _servers import KafkaBroker, RedisServer

REPORT_ENV = "OTELCOST_FAULTS_REPORT"


@pytest.fixture
def stack_args(
    redis_server: RedisServer,
    redis_client: redis.Redis,  # empties the server first
    kafka_broker: KafkaBroker,
    kafka_topic: str,
) -> dict[str, str]:
    """``Stack(**stack_args)``: the session's Redis (emptied) and broker, a fresh topic."""
    return {
        "redis_url": redis_server.url,
        "bootstrap": kafka_broker.bootstrap,
        "topic": kafka_topic,
    }


@pytest.fixture(autouse=True)
def _figures(request: pytest.FixtureRequest) -> Iterator[None]:
    _stack.FIGURES.clear()
    yield
    path = os.environ.get(REPORT_ENV)
    if path and _stack.FIGURES:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": request.node.name, **_stack.FIGURES}) + "\n")
