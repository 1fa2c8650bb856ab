"""PostgreSQL for integration tests: a throwaway database on the machine's server, and a
TCP proxy to it that a test can cut and restore (an outage without touching the server).

The server is the machine's PostgreSQL (``OTELCOST_TEST_POSTGRES``, default
``postgresql://postgres@127.0.0.1:5432/postgres``, trust auth). ``TestDatabase`` creates
one database named ``otelcost_test_<pid>_<random>`` and drops only that database, by
the name it created; nothing else on the server is touched.

This module knows nothing about pytest; ``conftest.py`` turns it into fixtures.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import uuid
from collections.abc import Sequence

import psycopg
from psycopg import conninfo, sql

from otelcost.record import CostRecord
from otelcost.rollup import init_db

# The one place the tests write rollup rows without a broker: through the private store.
from otelcost.rollup._batch import RollupBatch
from otelcost.rollup._store import RollupStore

__all__ = [
    "DEFAULT_ADMIN_DSN",
    "PostgresUnavailableError",
    "TcpProxy",
    "TestDatabase",
    "drop_rollup_schema",
    "reset_rollup_schema",
    "roll_up",
]

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
_HOST = "127.0.0.1"


class PostgresUnavailableError(RuntimeError):
    """The machine's PostgreSQL cannot be reached or refuses to create a database."""


class TestDatabase:
    """A database of its own on the server behind ``admin_dsn``; ``dsn`` connects to it."""

    __test__ = False  # not a pytest test class

    def __init__(self, admin_dsn: str | None = None) -> None:
        self.admin_dsn = admin_dsn or os.environ.get("OTELCOST_TEST_POSTGRES", DEFAULT_ADMIN_DSN)
        self.name = f"otelcost_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.dsn = conninfo.make_conninfo(self.admin_dsn, dbname=self.name)
        params = conninfo.conninfo_to_dict(self.dsn)
        self.host = str(params.get("host", _HOST))
        self.port = int(str(params.get("port") or 5432))
        self._created = False

    def create(self) -> None:
        try:
            with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        except psycopg.Error as exc:
            raise PostgresUnavailableError(
                f"cannot create a test database through {self.admin_dsn}: {exc}"
            ) from exc
        self._created = True

    def drop(self) -> None:
        """Drop the database this instance created (closing its other sessions first)."""
        if not self._created:
            return
        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )
        self._created = False

    def dsn_via(self, host: str, port: int) -> str:
        """This database's DSN through another address (e.g. a ``TcpProxy``)."""
        return conninfo.make_conninfo(self.dsn, host=host, port=str(port))


def drop_rollup_schema(dsn: str) -> None:
    """Remove the rollup schema ``otelcost`` from the test database ``dsn`` (a clean slate)."""
    assert "otelcost_test_" in dsn, f"refusing to drop a schema outside a test database: {dsn}"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute("DROP SCHEMA IF EXISTS otelcost CASCADE")


def reset_rollup_schema(dsn: str) -> None:
    """A fresh, empty rollup schema in the test database ``dsn`` (dropped, then created)."""
    drop_rollup_schema(dsn)
    init_db(dsn)


def roll_up(dsn: str, records: Sequence[CostRecord], first_offset: int = 0) -> None:
    """Write ``records`` into the rollup tables as one consumed batch (offsets from
    ``first_offset``), through the store ``otelcost rollup`` writes with, without Kafka."""
    batch = RollupBatch("otel-cost-spans")
    for offset, record in enumerate(records, start=first_offset):
        batch.add(0, offset, None, record.to_json(), None)
    store = RollupStore(dsn, "otelcost-tests", "otel-cost-spans")
    try:
        assert store.write(batch, lambda letters: None).records == len(records)
    finally:
        store.close()


class TcpProxy:
    """Forwards a free loopback port to ``target``; ``stop()`` closes the port and cuts
    every open connection (clients see the server vanish), ``start()`` reopens it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        probe = socket.socket()
        probe.bind((_HOST, 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((_HOST, self.port))
        listener.listen(64)
        self._listener = listener
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="pg-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._listener is None:
            return
        self._stopping.set()
        assert self._thread is not None
        self._thread.join(10)
        self._listener.close()
        self._listener = None

    def _serve(self) -> None:
        assert self._listener is not None
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, None)
        peers: dict[socket.socket, socket.socket] = {}
        try:
            while not self._stopping.is_set():
                for key, _ in selector.select(timeout=0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept(selector, peers)
                        continue
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if data:
                        with contextlib.suppress(OSError):
                            peers[sock].sendall(data)
                            continue
                    self._close_pair(selector, peers, sock)
        finally:
            for sock in list(peers):
                self._close_pair(selector, peers, sock)
            selector.close()

    def _accept(
        self, selector: selectors.BaseSelector, peers: dict[socket.socket, socket.socket]
    ) -> None:
        assert self._listener is not None
        client, _ = self._listener.accept()
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        peers[client], peers[upstream] = upstream, client
        selector.register(client, selectors.EVENT_READ, None)
        selector.register(upstream, selectors.EVENT_READ, None)

    @staticmethod
    def _close_pair(
        selector: selectors.BaseSelector,
        peers: dict[socket.socket, socket.socket],
        sock: socket.socket,
    ) -> None:
        other = peers.pop(sock, None)
        for end in (sock, other):
            if end is None:
                continue
            peers.pop(end, None)
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(end)
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
