"""otelcost._resp: the budget store's own Redis client, against real redis-servers.

The shared session server for what only reads and writes keys; a private one (TCP and a
unix socket) for what stops, pauses or kills connections.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import trustme
from redis.cluster import RedisCluster

from _servers import RedisServer, find_redis_binary, free_port
from otelcost import _redis
from otelcost._resp import RespClient
from otelcost.budget import Budget, RedisBudgetStore
from otelcost.budget.redis_store import read_flag
from otelcost.errors import RedisReplyError


class _SocketServer(RedisServer):
    """A private redis-server that also listens on a unix socket."""

    @property
    def socket_path(self) -> Path:
        return self.workdir / "redis.sock"

    def _argv(self) -> list[str]:
        return [*super()._argv(), "--unixsocket", str(self.socket_path)]


class _TlsServer(RedisServer):
    """A private redis-server answering only in TLS, with a certificate for "localhost"
    from a certificate authority of the test's own (its PEM file: ``ca_file``)."""

    def __init__(self, binary: str, workdir: Path) -> None:
        super().__init__(binary, workdir)
        authority = trustme.CA()
        self.ca_file = workdir / "ca.pem"
        authority.cert_pem.write_to_path(str(self.ca_file))
        issued = authority.issue_cert("localhost")
        issued.private_key_pem.write_to_path(str(workdir / "key.pem"))
        issued.cert_chain_pems[0].write_to_path(str(workdir / "cert.pem"))

    @property
    def url(self) -> str:
        return f"rediss://localhost:{self.port}/0"

    def _argv(self) -> list[str]:
        argv = super()._argv()
        argv[argv.index("--port") + 1] = "0"  # no plain port
        return [
            *argv,
            *("--tls-port", str(self.port), "--tls-auth-clients", "no"),
            *("--tls-cert-file", str(self.workdir / "cert.pem")),
            *("--tls-key-file", str(self.workdir / "key.pem")),
            *("--tls-ca-cert-file", str(self.ca_file)),
        ]

    def client(self, **kwargs: Any) -> redis.Redis:
        options = {"host": "localhost", "ssl": True, "ssl_ca_certs": str(self.ca_file)}
        return super().client(**{**options, **kwargs})


S = TypeVar("S", bound=RedisServer)


@contextlib.contextmanager
def _running(make: Callable[[str], S]) -> Iterator[S]:
    """The server ``make(binary)`` builds, started, and stopped on exit."""
    try:
        binary = find_redis_binary()
    except Exception as exc:
        pytest.skip(f"no redis-server: {exc}")
    server = make(binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[_SocketServer]:
    with _running(lambda binary: _SocketServer(binary, tmp_path)) as server:
        yield server


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[_TlsServer]:
    with _running(lambda binary: _TlsServer(binary, tmp_path)) as server:
        yield server


def _own(url: str, **options: _redis.RedisOption) -> RespClient:
    client = _redis.budget_client(url, **options)
    assert isinstance(client, RespClient)
    return client


def _client_id(client: RespClient) -> int:
    number = client.execute_command("CLIENT", "ID")
    assert isinstance(number, int)
    return number


def test_replies_read_as_redis_py_reads_them(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    redis_client.hset("h", mapping={"a": "1", "b": "ü"})
    redis_client.set("s", "v", px=60_000)
    client = _own(redis_server.url)
    mine = client.pipeline().hgetall("h").get("s").get("none").pttl("s").execute()
    theirs = redis_client.pipeline(transaction=False).hgetall("h").get("s").get("none").execute()
    assert mine[:3] == theirs == [{b"a": b"1", b"b": "ü".encode()}, b"v", None]
    assert 0 < mine[3] <= 60_000
    assert client.pipeline().execute() == []
    assert client.ping() is True
    seconds, micros = client.time()
    assert abs(seconds - redis_client.time()[0]) <= 1 and 0 <= micros < 1_000_000
    redis_client.mset({f"scan:{i}": i for i in range(2_500)})
    assert set(client.scan_iter(match="scan:*", count=100)) == {
        f"scan:{i}".encode() for i in range(2_500)
    }
    with pytest.raises(ValueError, match="not transactions"):
        client.pipeline(transaction=True)


def test_an_error_reply_raises_the_servers_message_and_the_stream_stays_in_step(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    redis_client.set("text", "abc")
    client = _own(redis_server.url)
    with pytest.raises(RedisReplyError, match=r"^ERR value is not an integer"):
        client.execute_command("INCR", "text")
    # An error in the middle of a pipeline: raised, and every reply of the round trip read.
    with pytest.raises(RedisReplyError, match="WRONGTYPE"):
        client.pipeline().get("text").hgetall("text").get("text").execute()
    assert client.pipeline().get("text").execute() == [b"abc"]
    with pytest.raises(TypeError, match="bytes, str or int"):
        client.execute_command("SET", "k", 1.5)


def test_the_script_runs_by_sha_and_is_loaded_again_after_a_flush(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    client = _own(redis_server.url)
    script = client.register_script("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}")
    assert script.sha == redis_client.script_load(
        "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}"
    )
    redis_client.script_flush()
    assert script(keys=["k"], args=["a", 41]) == [b"k", b"a", 42]  # NOSCRIPT: loaded again
    assert redis_client.script_exists(script.sha) == [True]
    assert script(keys=["k"], args=["b", 1]) == [b"k", b"b", 2]
    with pytest.raises(RedisReplyError, match="attempt to compare"):
        client.register_script("return 1 < {}")()


def test_acl_user_password_and_database_on_every_connection(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    redis_client.acl_setuser(
        "cost-writer", enabled=True, passwords=["+s3cr/et"], commands=["+@all"], keys=["*"]
    )
    try:
        url = redis_server.url.replace("redis://", "redis://cost-writer:s3cr%2Fet@", 1)
        client = _own(url[: -len("/0")] + "/3")
        client.pipeline().get("x").execute()
        client.execute_command("SET", "x", "in 3")
        assert redis_server.client(db=3).get("x") == b"in 3"
        assert redis_client.get("x") is None
        assert client.execute_command("ACL", "WHOAMI") == b"cost-writer"
        wrong = _own(url.replace("s3cr%2Fet", "wrong"))
        with pytest.raises(RedisReplyError, match="WRONGPASS") as raised:
            wrong.ping()
        assert "s3cr" not in repr(client) + repr(wrong) + str(raised.value)
        assert repr(client) == f"RespClient('{_redis.redact(url)[: -len('/0')]}/3')"
    finally:
        redis_client.acl_deluser("cost-writer")
        redis_server.client(db=3).flushdb()


def test_a_killed_connection_is_replaced_and_a_stopped_server_found_again(
    own_server: _SocketServer,
) -> None:
    client = _own(own_server.url)
    first = _client_id(client)
    killer = own_server.client()
    killer.client_kill_filter(_id=first)
    # The next call finds the connection closed (its health check or the command itself)
    # and retries on a new one.
    assert client.ping() and _client_id(client) != first
    own_server.restart()
    assert client.pipeline().get("k").execute() == [None]
    killer.close()


def test_an_unanswering_server_times_out_and_a_refusing_one_fails_fast(
    own_server: _SocketServer,
) -> None:
    client = _own(own_server.url, socket_timeout=0.2, retries=0)
    assert client.ping()
    own_server.pause()
    try:
        with pytest.raises(TimeoutError):
            client.ping()
    finally:
        own_server.resume()
    assert client.ping()  # a new connection: the timed-out one was dropped
    refused = _own(f"redis://127.0.0.1:{free_port()}/0", retries=1)
    with pytest.raises(ConnectionError):
        refused.ping()


def test_an_idle_connection_is_checked_with_a_ping_first(own_server: _SocketServer) -> None:
    client = _own(own_server.url, health_check_interval=0.05)
    stats = own_server.client()

    def pings() -> int:
        return int(stats.info("commandstats").get("cmdstat_ping", {}).get("calls", 0))

    client.execute_command("GET", "k")
    client.execute_command("GET", "k")
    assert pings() == 0  # in use: no check
    time.sleep(0.1)
    client.execute_command("GET", "k")
    assert pings() == 1
    stats.close()


def test_rediss_urls_verify_the_certificate_and_the_host_name(
    tls_server: _TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not yet trusted: the system's certificate authorities do not know the test's.
    untrusted = _own(tls_server.url, retries=0)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        untrusted.ping()
    # Trusted as redis-py's defaults would trust it: through OpenSSL's SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.ca_file))
    client = _own(tls_server.url)
    client.execute_command("SET", "over", "tls")
    assert tls_server.client().get("over") == b"tls"
    store = RedisBudgetStore(tls_server.url, [Budget("svc", 1.0, "1h")])
    assert store.apply("svc", 5).budgets[0].spend_nanos == 5
    # The certificate names "localhost", not the address.
    by_address = _own(tls_server.url.replace("localhost", "127.0.0.1"), retries=0)
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        by_address.ping()


def test_unix_socket_urls(own_server: _SocketServer) -> None:
    client = _own(f"unix://{own_server.socket_path}?db=2")
    client.execute_command("SET", "where", "unix")
    assert own_server.client(db=2).get("where") == b"unix"


def test_a_forked_child_opens_its_own_connection(redis_server: RedisServer) -> None:
    client = _own(redis_server.url)
    parent = _client_id(client)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(write, str(_client_id(client)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = int(pipe.read())
    os.waitpid(pid, 0)
    assert child != parent
    assert _client_id(client) == parent  # the parent's connection was left alone


def test_a_child_forked_while_the_lock_is_held_does_not_wait_for_it(
    redis_server: RedisServer,
) -> None:
    client = _own(redis_server.url)
    assert client.ping()
    with client._lock:  # as a parent's thread is, mid round trip, when another forks
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            signal.alarm(10)  # a child stuck on the parent's lock dies of SIGALRM
            os._exit(0 if client.ping() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_threads_share_one_client(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    client = _own(redis_server.url)
    redis_client.mset({f"t:{i}": i for i in range(8)})
    wrong: list[object] = []

    def work(i: int) -> None:
        for _ in range(300):
            value, ttl = client.pipeline().get(f"t:{i}").pttl(f"t:{i}").execute()
            if (value, ttl) != (str(i).encode(), -1):
                wrong.append((i, value, ttl))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


@pytest.mark.parametrize(
    "url",
    [
        "rediss://127.0.0.1:1/0?ssl_ca_certs=/ca.pem",
        "redis://127.0.0.1:1/0?ssl_cert_reqs=none",
        "redis://127.0.0.1:1/0?socket_timeout=3",
        "redis+sentinel://127.0.0.1:1/primary",
    ],
)
def test_anything_but_a_plain_url_keeps_redis_py(url: str) -> None:
    client = _redis.budget_client(url)
    assert isinstance(client, redis.Redis | RedisCluster)


def test_budget_client_routes_plain_urls_and_checks_them(redis_client: redis.Redis) -> None:
    assert isinstance(_redis.budget_client("redis://h:1/2?db=2"), RespClient)
    assert isinstance(_redis.budget_client("unix:///run/redis.sock"), RespClient)
    assert isinstance(_redis.budget_client("rediss://:pw@h:1/0"), RespClient)
    assert _redis.budget_client(redis_client) is redis_client
    # An option redis-py has and this client has not: redis-py.
    assert isinstance(_redis.budget_client("redis://h:1/0", client_name="x"), redis.Redis)
    with pytest.raises(ValueError, match="bad database number"):
        _redis.budget_client("redis://h:1/abc")
    with pytest.raises(TypeError, match="socket_timeout must be a positive number"):
        _redis.budget_client("redis://h:1/0", socket_timeout=0)
    with pytest.raises(TypeError, match="retries must be an int"):
        _redis.budget_client("redis://h:1/0", retries=-1)


def test_the_store_on_a_plain_url_runs_its_own_client_and_lends_a_redis_py_one(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    store = RedisBudgetStore(redis_server.url, [Budget("svc", 1.0, "1h")])
    assert store.apply("svc", 2_000_000_000).throttled
    assert read_flag(store._redis, "svc")[0] is not None
    borrowed = store.client
    assert isinstance(borrowed, redis.Redis) and store.client is borrowed
    assert borrowed.get("enforce:throttle:{svc}") == redis_client.get("enforce:throttle:{svc}")
    assert store.services() == ["svc"]


def test_an_application_with_redis_budgets_never_imports_redis_py(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """The point of the client: redis-py's objects stay out of the application."""
    program = f"""
import sys
from otelcost.budget import Budget, BudgetGuard
from otelcost.exporters import RedisBudgetExporter
from otelcost.record import CostRecord
exporter = RedisBudgetExporter({redis_server.url!r}, [Budget("svc", 1e-9, "1h")])
exporter.export([CostRecord(trace_id="0" * 31 + "1", span_id="0" * 15 + "1", service="svc",
    operation="GET /", cost_amount=1.0, currency="USD", duration_ms=1.0,
    timestamp=1_764_236_400_000)])
assert exporter.force_flush(5_000)
assert BudgetGuard({redis_server.url!r}).is_throttled("svc")
exporter.shutdown()
print("redis" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
