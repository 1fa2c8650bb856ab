"""otelcost._redis: clients from URLs (plain, cluster, sentinel) with explicit timeouts.

The cluster and sentinel cases run real servers: a one-node Redis Cluster (all 16384
slots on one node) and a Redis Sentinel watching the fixtures' redis-server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from _servers import RedisServer, find_redis_binary, free_port
from otelcost._redis import connect, redact
from otelcost.budget import Budget, Fence, RedisBudgetStore


def test_redact() -> None:
    assert redact("redis://user:pw@host:6379/0") == "redis://***@host:6379/0"
    assert redact("rediss://:pw@h/0") == "rediss://***@h/0"
    assert redact("redis://host:6379") == "redis://host:6379"
    assert redact("redis+sentinel://u:p@a:1,b:2/m") == "redis+sentinel://***@a:1,b:2/m"


def test_plain_url_gets_short_timeouts_retries_and_health_checks() -> None:
    client = connect("redis://127.0.0.1:1/3")
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (1.0, 1.0)
    assert kwargs["health_check_interval"] == 15
    assert kwargs["db"] == 3
    assert client.get_retry().get_retries() == 2
    tls = connect("rediss://127.0.0.1:1/0", socket_timeout=0.3)
    assert tls.connection_pool.connection_kwargs["socket_timeout"] == 0.3
    assert tls.connection_pool.connection_class.__name__ == "SSLConnection"


def test_clients_pass_through_and_junk_is_rejected(redis_client: redis.Redis) -> None:
    assert connect(redis_client) is redis_client
    with pytest.raises(TypeError, match="expected a Redis URL or a redis-py client"):
        connect(42)
    with pytest.raises(ValueError, match=r"unsupported Redis URL 'http://\*\*\*@h/'"):
        connect("http://u:secret@h/")
    with pytest.raises(ValueError, match="bad sentinel URL"):
        connect("redis+sentinel://h:26379")
    with pytest.raises(ValueError, match="bad sentinel address"):
        connect("redis+sentinel://h/master")


def test_unreachable_server_fails_fast() -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    assert time.monotonic() - started < 5  # refused at once; bounded retries with backoff


class _ClusterNode(RedisServer):
    kind = "redis-server (cluster mode)"

    def _argv(self) -> list[str]:
        return [*super()._argv(), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]


class _Sentinel(RedisServer):
    kind = "redis-sentinel"

    def __init__(self, binary: str, workdir: Path, master_port: int) -> None:
        super().__init__(binary, workdir)
        self.master_port = master_port

    def _argv(self) -> list[str]:
        conf = self.workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind {self.host}\ndir {self.workdir}\n"
            f"sentinel monitor budgets {self.host} {self.master_port} 1\n"
        )
        return [self.binary, str(conf), "--sentinel"]

    def _is_ready(self) -> bool:
        probe = self.client(socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return bool(probe.execute_command("SENTINEL", "MASTERS"))
        except redis.RedisError:
            return False
        finally:
            probe.close()


@pytest.fixture
def cluster_node(tmp_path: Path) -> Iterator[_ClusterNode]:
    node = _ClusterNode(find_redis_binary(), tmp_path / "cluster")
    node.start()
    try:
        admin = node.client()
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 20
        while b"cluster_state:ok" not in admin.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "one-node cluster did not become ok"
            time.sleep(0.05)
        admin.close()
        yield node
    finally:
        node.stop()


@pytest.mark.slow
def test_cluster_url_runs_the_budget_script(cluster_node: _ClusterNode) -> None:
    client = connect(f"redis+cluster://{cluster_node.host}:{cluster_node.port}")
    assert isinstance(client, RedisCluster)
    store = RedisBudgetStore(client, [Budget("*", 1, "1h"), Budget("*", 10, "24h")])
    for service in ("payment-svc", "search"):
        status = store.apply(service, 2 * 10**9, Fence("p", 1))
        assert status.throttled
        assert store.apply(service, 2 * 10**9, Fence("p", 1)).duplicate
    assert store.services() == ["payment-svc", "search"]
    assert store.status("search").budgets[1].spend_nanos == 2 * 10**9
    client.close()


@pytest.mark.slow
def test_sentinel_url_finds_the_master(
    redis_server: Any, redis_client: redis.Redis, tmp_path: Path
) -> None:
    sentinel = _Sentinel(find_redis_binary(), tmp_path / "sentinel", redis_server.port)
    sentinel.start()
    try:
        client = connect(f"redis+sentinel://{sentinel.host}:{sentinel.port}/budgets/0")
        store = RedisBudgetStore(client, [Budget("svc", 1)])
        assert store.apply("svc", 2 * 10**9).throttled
        assert redis_client.exists("enforce:throttle:{svc}") == 1  # written on the master
        client.close()
    finally:
        sentinel.stop()


@pytest.mark.parametrize(
    ("url", "number"),
    [
        ("redis://127.0.0.1:6379", 0),
        ("redis://127.0.0.1:6379/", 0),
        ("redis://127.0.0.1:6379/7", 7),
        ("rediss://:pw@h:1/?db=4", 4),
        ("unix:///tmp/r.sock?db=2", 2),
    ],
)
def test_the_database_number_is_read_from_path_or_query(url: str, number: int) -> None:
    from otelcost._redis import database

    assert database(url) == number
    assert connect(url).connection_pool.connection_kwargs.get("db", 0) == number


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/abc", "redis://h/-1", "redis://h/1.5", "redis://h/?db=x"]
)
def test_a_database_that_is_not_a_number_is_refused_not_read_as_0(url: str) -> None:
    with pytest.raises(ValueError, match="bad database number"):
        connect(url)
